"""The workflow end to end: the smoke DAG runs from nothing, a second run does nothing, a job of
every rule redone elsewhere reproduces its numbers while another seed changes them, and bad
configuration fails before any rule runs, naming the key."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from helpers import (
    PAPER_FIGURES,
    PAPER_TABLES,
    REPO,
    compare_outputs,
    copy_run,
    jobs_in_start_order,
    jobs_of_run,
    one_job_per_rule,
    redo_jobs,
    result_files,
    snakemake,
    steps_done,
)

pytestmark = pytest.mark.slow


def test_smoke_run_makes_every_figure_and_table(smoke_run: Path) -> None:
    missing = [p for p in PAPER_FIGURES + PAPER_TABLES if not (smoke_run / p).is_file()]
    assert not missing, f"not produced: {missing}"
    for figure in PAPER_FIGURES:
        assert (smoke_run / figure).with_suffix(".pdf").is_file()
        assert (smoke_run / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for table in PAPER_TABLES:
        assert len(pd.read_csv(smoke_run / table)) > 0
        assert (smoke_run / table).with_suffix(".md").is_file()


def test_every_rule_writes_its_log(smoke_run: Path) -> None:
    logs = list((smoke_run / "results" / "logs").rglob("*.log"))
    assert logs, "no rule logs under results/logs"
    assert all(log.stat().st_size > 0 for log in logs), "empty rule logs"


def test_the_longest_chains_start_first(smoke_run: Path) -> None:
    """Rule priorities (workflow/rules/common.smk): the data first, then the auto-encoders and
    sbi's NPE trainings before any Gaussian-mixture training, whatever order the DAG lists them."""
    started = jobs_in_start_order(smoke_run)
    assert [rule for rule, _ in started[:2]] == ["prepare_data", "prepare_data"], started[:4]
    first_gmm = next(i for i, (rule, _) in enumerate(started) if rule == "train_gmm")
    long_jobs = [
        i
        for i, (rule, wildcards) in enumerate(started)
        if rule == "train_autoencoder" or (rule == "train_kinematics" and "model=npe," in wildcards)
    ]
    assert len(long_jobs) == 4, started  # two datasets, NPE on the smoke config's two seeds
    assert max(long_jobs) < first_gmm, started[: first_gmm + 1]


def test_second_run_has_nothing_to_do(smoke_run: Path) -> None:
    proc = snakemake(smoke_run, "--dry-run")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_determinism_redoing_a_job_of_each_rule_gives_identical_files(
    smoke_run: Path, tmp_path: Path
) -> None:
    """Same inputs, same seed, same threads: a job of every rule, redone in a copy of the run,
    writes exactly the numbers it wrote the first time (timings aside). Every job reads outputs of
    the run, so this holds the whole DAG to its numbers one rule at a time."""
    copy_run(smoke_run, tmp_path)
    jobs = jobs_of_run(tmp_path)
    layers = one_job_per_rule(jobs)
    assert sorted(j.rule for layer in layers for j in layer) == sorted({j.rule for j in jobs})

    def run(targets: list[str]) -> None:
        out = snakemake(tmp_path, "--", *targets)  # "--": the targets, not more --configfile
        assert steps_done(out.stderr) == len(targets), f"not only {targets} ran"

    redone = redo_jobs(tmp_path, layers, run)
    assert {Path(j.outputs[0]) for layer in layers for j in layer} <= set(redone)
    assert compare_outputs(tmp_path, smoke_run, redone) > 0
    assert result_files(tmp_path) == result_files(smoke_run)


def test_determinism_another_seed_gives_other_numbers(smoke_run: Path) -> None:
    """Seeds 0 and 1 of one run differ: the seed reaches training and sampling."""
    samples = "results/gmm/samples/ours_reference_all_seed{}.csv"
    gmm = [pd.read_csv(smoke_run / samples.format(seed)) for seed in (0, 1)]
    assert gmm[0].shape == gmm[1].shape
    assert not gmm[0].equals(gmm[1]), "GMM samples of seeds 0 and 1 are identical"
    # The per-seed latent metrics: the Frechet distance of the samples is continuous, so two
    # seeds cannot share it by chance (the accuracies of a 1-epoch smoke model could).
    for dataset in ("mnist", "fashion_mnist"):
        for model in ("ours", "cinn"):
            path = f"results/latent/{dataset}/metrics_{model}_seed{{}}.json"
            metrics = [json.loads((smoke_run / path.format(s)).read_text()) for s in (0, 1)]
            assert metrics[0]["seed"] == 0 and metrics[1]["seed"] == 1
            assert metrics[0]["frechet_distance"] != metrics[1]["frechet_distance"], metrics


def _config_error(tmp_path: Path, text: str) -> str:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    proc = snakemake(tmp_path, "--dry-run", "--configfile", str(bad), check=False)
    assert proc.returncode != 0
    return proc.stdout + proc.stderr


def test_wrong_type_fails_at_start_naming_the_key(tmp_path: Path) -> None:
    out = _config_error(tmp_path, 'gmm: {batch_size: "big"}\n')
    assert 'gmm.batch_size = "big": must be of type integer' in out


def test_unknown_key_fails_at_start_naming_the_key(tmp_path: Path) -> None:
    out = _config_error(tmp_path, "gmm: {batch_sise: 100}\n")
    assert 'gmm.batch_sise: unknown key; allowed: ["batch_size", ' in out


def test_default_configuration_builds_its_dag(tmp_path: Path) -> None:
    """The paper-size DAG (no --configfile) resolves: every stage has its jobs."""
    proc = snakemake(tmp_path, "--dry-run", "--quiet", "rules", configfile=None)
    for rule in ("prepare_data", "train_gmm", "train_autoencoder", "all"):
        assert rule in proc.stdout, f"rule {rule} missing from the default DAG:\n{proc.stdout}"


# -- results know their code ------------------------------------------------------------------
def _jobs_after_editing(smoke_run: Path, tmp_path: Path, module: str, edit) -> dict[str, int]:
    """The jobs `snakemake --dry-run` lists for the finished smoke run once ``module`` (a file
    under src/replicate/) of a copy of the library is edited by ``edit(text) -> text``: rule
    name -> job count, from Snakemake's job-stats table."""
    copy_run(smoke_run, tmp_path / "run")
    library = tmp_path / "lib" / "replicate"
    shutil.copytree(REPO / "src" / "replicate", library)
    path = library / module
    path.write_text(edit(path.read_text()))
    out = snakemake(tmp_path / "run", "--dry-run", env={"PYTHONPATH": str(library.parent)})
    text = out.stdout + out.stderr
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    rows = [line.split() for line in table.splitlines()[3:]]
    return {row[0]: int(row[1]) for row in rows if len(row) == 2 and row[0] != "total"}


GMM_RULES = {
    "train_gmm",
    "evaluate_gmm",
    "evaluate_gmm_exact",
    "gmm_metrics",
    "benchmark_gmm_speed",
    "plot_fig5_1",
    "plot_fig5_2",
    "plot_training_gmm",
}
TRAINING_RULES = {
    "train_gmm",
    "train_autoencoder",
    "train_latent_flow",
    "train_latent_cinn",
    "train_latent_classifier",
    "train_joint_latent",
    "train_kinematics",
    "run_linear_gaussian",
}


def test_a_code_change_reruns_the_jobs_whose_stage_imports_it_and_no_other(
    smoke_run: Path, tmp_path: Path
) -> None:
    """One line of the mixture's training code changed: the mixture's jobs are stale (its
    stage module imports every mixture module) and nothing of E3, E4 or the linear-Gaussian
    check; every model's training once the invertible network changes; a docstring, nothing."""
    jobs = _jobs_after_editing(
        smoke_run, tmp_path / "gmm", "experiments/gmm/training.py", lambda t: t + "\nSTEP = 1\n"
    )
    assert "train_gmm" in jobs and set(jobs) <= GMM_RULES | {"all"}, jobs
    jobs = _jobs_after_editing(
        smoke_run, tmp_path / "flows", "models/flows.py", lambda t: t + "\nSTEP = 1\n"
    )
    assert TRAINING_RULES <= set(jobs) and "prepare_data" not in jobs, jobs
    jobs = _jobs_after_editing(
        smoke_run,
        tmp_path / "docstring",
        "models/flows.py",
        lambda t: t.replace('"""', '"""Reworded. ', 1) + "\n# a comment\n",
    )
    assert jobs == {}, jobs
