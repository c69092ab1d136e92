"""The SLURM profile on a real SLURM: a single-node cluster on localhost (.ci/slurm/cluster.sh)
redoes one job of every rule of the local smoke run (tests/helpers.py), in a copy of it, through
`--workflow-profile profiles/slurm`, each as a SLURM job of its own (about 4 minutes on this
2-core machine with the cluster's start, a third of the smoke DAG's jobs). Every rule that is not
declared local must have run as a SLURM job, none outside it, and every file they wrote must equal
the local run's. One training job is then rerun with the profile's GPU switch on: SLURM must
schedule it on the (fake) GPU and the job must see it.

Skipped only where SLURM is neither installed nor installable (not root). Where it can be, a
cluster that does not start is a failure, never a skip.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yte
from helpers import (
    ONE_THREAD_PER_JOB,
    REPO,
    SMOKE_CONFIG,
    compare_outputs,
    copy_run,
    jobs_of_run,
    one_job_per_rule,
    redo_jobs,
    result_files,
    steps_done,
)

PROFILE = REPO / "profiles" / "slurm"
CLUSTER = REPO / ".ci" / "slurm" / "cluster.sh"
STATE = Path(os.environ.get("REPLICATE_SLURM_STATE", "/tmp/replicate-slurm"))
# A job of every rule not declared local: a few minutes on this (shared) 2-core machine.
RUN_TIMEOUT_S = int(os.environ.get("REPLICATE_SLURM_TEST_TIMEOUT", "2400"))


def _rules_with(directive: str | None = None) -> set[str]:
    """Names of the rules in workflow/rules/*.smk (and the Snakefile) that use ``directive``
    (every rule when it is None)."""
    names: set[str] = set()
    sources = [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
    for text in (p.read_text() for p in sources):
        for block in re.split(r"^(?=rule |checkpoint )", text, flags=re.MULTILINE)[1:]:
            name = re.match(r"(?:rule|checkpoint) (\w+):", block)
            if name and (
                directive is None or re.search(rf"^\s+{directive}:", block, flags=re.MULTILINE)
            ):
                names.add(name.group(1))
    return names


def _declared_local_rules() -> set[str]:
    """Rules the workflow runs on the submit host on purpose (`localrule: True`, `localrules:`)."""
    local = {"all"}  # collects inputs, runs nothing
    local |= _rules_with("localrule")
    for p in [REPO / "Snakefile", *(REPO / "workflow" / "rules").glob("*.smk")]:
        # `localrules: a, b` on one line, or snakefmt's one name per indented line.
        for m in re.finditer(
            r"^localrules:((?:[ \t]*\w+,?[ \t]*)+$|(?:\n[ \t]+\w+,?)+)", p.read_text(), re.MULTILINE
        ):
            local |= {n.strip() for n in m.group(1).replace("\n", ",").split(",") if n.strip()}
    return local


def test_profile_resources_cover_exactly_the_training_rules() -> None:
    """The profile's per-rule resources (and GPU switch) name every rule with a benchmark, and no
    rule that does not exist: a renamed training rule would otherwise silently lose its GPU."""
    env = dict(os.environ, REPLICATE_SLURM_GPUS="1", REPLICATE_SLURM_GPU_PARTITION="gpu")
    old = dict(os.environ)
    os.environ.update(env)
    try:
        profile = yte.process_yaml((PROFILE / "config.yaml").read_text(), require_use_yte=True)
    finally:
        os.environ.clear()
        os.environ.update(old)
    training = _rules_with("benchmark")
    assert set(profile["set-resources"]) == training
    assert set(profile["set-threads"]) == training
    for name, res in profile["set-resources"].items():
        assert res["gpu"] == 1 and res["slurm_partition"] == "gpu", name
        assert "attempt" in str(res["mem_mb"]) and "attempt" in str(res["runtime"]), name
    off = yte.process_yaml((PROFILE / "config.yaml").read_text(), require_use_yte=True)
    assert all("gpu" not in res for res in off["set-resources"].values())
    assert off["slurm-status-command"] == "squeue"
    assert "slurm_account" not in off["default-resources"]


def test_every_rule_declares_its_log_threads_and_resources() -> None:
    """A rule without them would inherit the cluster's defaults and log nowhere; `all` runs
    nothing."""
    for directive in ("log", "threads", "resources"):
        missing = _rules_with() - _rules_with(directive) - {"all"}
        assert not missing, f"rules without {directive}: {sorted(missing)}"


def test_figures_and_tables_run_on_the_submit_host() -> None:
    """Every figure (`plot_*`) and table rule takes seconds: declared local, so a SLURM run does
    not queue it as a job of its own; and no rule that trains (has a benchmark) is local."""
    local = _declared_local_rules()
    quick = {r for r in _rules_with() if r.startswith("plot_")}
    quick |= {"table1", "gmm_metrics", "latent_metrics"}
    assert quick <= _rules_with(), sorted(quick - _rules_with())
    assert not quick - local, f"figure/table rules queued on SLURM: {sorted(quick - local)}"
    assert not local & _rules_with("benchmark"), sorted(local & _rules_with("benchmark"))


# ---------------------------------------------------------------------------------------------
# The real cluster


def _sh(*cmd: str, timeout: float = 30, **kw) -> subprocess.CompletedProcess[str]:
    """Every SLURM client call is bounded (`timeout -k`): a stuck call must fail, not hang CI."""
    return subprocess.run(
        ["timeout", "-k", "5", str(int(timeout)), *cmd], capture_output=True, text=True, **kw
    )


@pytest.fixture(scope="module")
def slurm_cluster(request: pytest.FixtureRequest) -> Path:
    installed = all(shutil.which(b) for b in ("slurmctld", "slurmd", "sbatch", "munged"))
    if not installed and os.geteuid() != 0:
        pytest.skip("SLURM is not installed and installing it (apt-get) needs root")
    if os.geteuid() != 0:
        pytest.skip("the test cluster writes /etc/slurm and starts daemons: needs root")
    proc = _sh("bash", str(CLUSTER), "start", timeout=900)
    # Stop whatever part of it came up, whatever happens next.
    request.addfinalizer(lambda: _sh("bash", str(CLUSTER), "stop", timeout=120))
    if proc.returncode != 0:
        pytest.fail(f"the SLURM test cluster did not start:\n{proc.stdout}\n{proc.stderr}")
    return STATE


def _slurm_snakemake(workdir: Path, *args: str, gpus: int = 0) -> tuple[str, str]:
    """Run the smoke workflow through the SLURM profile; return (log, SLURM run id)."""
    cmd = [
        "timeout",
        "-k",
        "30",
        str(RUN_TIMEOUT_S),
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--workflow-profile",
        str(PROFILE),
        "--directory",
        str(workdir),
        "--configfile",
        str(SMOKE_CONFIG),
        # The profile's first status check waits 10 s (sensible on a shared cluster); a private
        # test cluster can be asked every 2 s (its MinJobAge, 65533 s, stays >= 3x that).
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--seconds-between-status-checks",
        "2",
        # One thread per job, as the local run it is compared with (tests/helpers.py).
        *ONE_THREAD_PER_JOB,
        *args,
    ]
    env = dict(os.environ, REPLICATE_SLURM_GPUS=str(gpus))
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-15000:]}"
    run_id = re.search(r"SLURM run ID: (\S+)", out)
    assert run_id, f"no SLURM run ID in the log: did it run through the slurm executor?\n{out}"
    return out, run_id.group(1)


def _slurm_jobs(run_id: str) -> list[dict[str, str]]:
    """Every job of one Snakemake run, as slurmctld remembers them (MinJobAge=65533 s)."""
    proc = _sh("squeue", "-h", "-t", "all", "--name", run_id, "-o", "%i|%T|%k")
    assert proc.returncode == 0, proc.stderr
    jobs = []
    for line in proc.stdout.split():
        job_id, state, comment = line.split("|", 2)
        jobs.append({"id": job_id, "state": state, "comment": comment})
    return jobs


def _rule_of(comment: str, rules: set[str]) -> str:
    """The plugin names each job `rule_<rule>` or `rule_<rule>_wildcards_<values>`."""
    matches = [r for r in rules if comment in (f"rule_{r}",) or comment.startswith(f"rule_{r}_wi")]
    assert matches, f"SLURM job comment {comment!r} names no rule of {sorted(rules)}"
    return max(matches, key=len)


def _jobs_in_log(log: str) -> tuple[list[str], list[str]]:
    """(rules of the jobs submitted remotely, rules of the jobs run locally), one entry per job."""
    remote = re.findall(r"^rule (\w+):$", log, flags=re.MULTILINE)
    local = re.findall(r"^localrule (\w+):$", log, flags=re.MULTILINE)
    return remote, local


@pytest.fixture(scope="module")
def slurm_run(
    slurm_cluster: Path, smoke_run: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict:
    """A job of every rule that SLURM runs (the rules not declared local), redone through the
    profile in a copy of the local smoke run. One Snakemake run for all: among these jobs, every
    job between two of them is one of them (tests/test_workflow.py redoes the local rules too,
    where that does not hold)."""
    workdir = tmp_path_factory.mktemp("slurm_run")
    copy_run(smoke_run, workdir)
    remote_rules = _rules_with() - _declared_local_rules()
    jobs = [job for layer in one_job_per_rule(jobs_of_run(workdir), remote_rules) for job in layer]
    assert {job.rule for job in jobs} == remote_rules, "a rule without a job in the smoke run"
    logs: list[tuple[str, str]] = []
    redone = redo_jobs(
        workdir, [jobs], lambda targets: logs.append(_slurm_snakemake(workdir, "--", *targets))
    )
    ((log, run_id),) = logs
    return {"dir": workdir, "log": log, "run_id": run_id, "jobs": jobs, "redone": redone}


@pytest.mark.slow
@pytest.mark.slurm
def test_every_rule_ran_as_a_slurm_job(slurm_run: dict) -> None:
    remote, local = _jobs_in_log(slurm_run["log"])
    allowed_local = _declared_local_rules()
    assert remote, "no job was submitted to SLURM"
    assert not set(local) - allowed_local, (
        f"jobs ran outside SLURM: {sorted(set(local) - allowed_local)}"
    )
    missing = _rules_with() - allowed_local - set(remote)
    assert not missing, f"rules that did not run as a SLURM job: {sorted(missing)}"
    # One job per rule, each asked for by name: every step Snakemake planned is one of them.
    assert sorted(remote + local) == sorted(job.rule for job in slurm_run["jobs"])
    assert len(remote) + len(local) == steps_done(slurm_run["log"])
    jobs = _slurm_jobs(slurm_run["run_id"])
    assert all(j["state"] == "COMPLETED" for j in jobs), jobs
    per_rule_slurm: dict[str, int] = {}
    for job in jobs:
        rule = _rule_of(job["comment"], set(remote))
        per_rule_slurm[rule] = per_rule_slurm.get(rule, 0) + 1
    per_rule_log = {r: remote.count(r) for r in set(remote)}
    assert per_rule_slurm == per_rule_log
    # The plugin's per-job logs (kept by the profile) name the same SLURM jobs.
    logs = {p.stem for p in (slurm_run["dir"] / ".snakemake" / "slurm_logs").rglob("*.log")}
    assert {j["id"] for j in jobs} <= logs


@pytest.mark.slow
@pytest.mark.slurm
def test_outputs_equal_a_local_run(slurm_run: dict, smoke_run: Path) -> None:
    """Every file the redone jobs wrote through SLURM agrees by value with the local run's (to
    1e-3: this tests the profile; bit-for-bit reproducibility is tests/test_workflow.py's); the
    SLURM jobs made nothing the local run did not (their SLURM logs aside)."""
    redone = slurm_run["redone"]
    assert {Path(job.outputs[0]) for job in slurm_run["jobs"]} <= set(redone)
    assert compare_outputs(slurm_run["dir"], smoke_run, redone, rtol=1e-3, atol=1e-5) > 0
    made, local = result_files(slurm_run["dir"]), result_files(smoke_run)
    assert made == local, (
        f"only in the SLURM run: {sorted(made - local)[:10]}; "
        f"only in the local run: {sorted(local - made)[:10]}"
    )


@pytest.mark.slow
@pytest.mark.slurm
def test_gpu_switch_puts_a_training_job_on_the_gpu(slurm_run: dict, smoke_run: Path) -> None:
    """REPLICATE_SLURM_GPUS=1 (the profile's switch): a rerun training job asks SLURM for the GPU,
    is scheduled on it, sees CUDA_VISIBLE_DEVICES inside the job, and makes the same numbers."""
    workdir = slurm_run["dir"]
    target = sorted((workdir / "results" / "gmm" / "models").glob("*.json"))[0]
    rel = target.relative_to(workdir)
    log, run_id = _slurm_snakemake(workdir, str(rel), "--forcerun", "train_gmm", gpus=1)
    jobs = _slurm_jobs(run_id)
    assert len(jobs) == 1 and jobs[0]["state"] == "COMPLETED", jobs
    job_id = jobs[0]["id"]
    show = _sh("scontrol", "show", "job", "-o", job_id)
    assert re.search(r"TresPerJob=\S*gpu[:=]1", show.stdout), show.stdout
    # The cluster's TaskProlog records each task's environment: inside the job (batch step and the
    # plugin's inner srun step) the GPU is visible as device 0.
    record = STATE / "task_env.log"
    lines = [ln for ln in record.read_text().splitlines() if ln.startswith(f"job={job_id} ")]
    assert lines, f"no task of job {job_id} recorded in {record}"
    assert all(ln.endswith("CUDA_VISIBLE_DEVICES=0") for ln in lines), lines
    assert compare_outputs(workdir, smoke_run, [rel], rtol=1e-3, atol=1e-5) == 1
