"""Helpers the tests share (imported by name; the fixtures are in conftest.py): the repository's
configs, small settings for fast trainings, running the workflow, redoing and comparing a
finished run's jobs, and a training job killed right after a checkpoint."""

from __future__ import annotations

import atexit
import contextlib
import copy
import dataclasses
import functools
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SMOKE_CONFIG = REPO / "config" / "smoke.yaml"
# Local runs of the suite cap every job at one thread (why: :func:`snakemake`).
ONE_THREAD_PER_JOB = ("--max-threads", "1")
PAPER_CONFIG = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def merged_config(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` merged into ``base`` key by key, as Snakemake merges a --configfile."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged_config(out[key], value)
        else:
            out[key] = value
    return out


def small_gmm_settings(model: str, network: str) -> dict:
    """A Gaussian-mixture model's training settings from the paper config, shrunk to seconds:
    2 blocks of width 32, batch 128, 5 iterations."""
    from replicate.experiments.gmm.settings import training_settings

    cfg = copy.deepcopy(PAPER_CONFIG["gmm"])
    cfg.update(n_train=2048, batch_size=128, iterations=5)
    for settings in cfg["networks"].values():
        settings.update(n_blocks=2, hidden=32)
    return training_settings(cfg, model, network)


def small_kinematics_config(iterations: int = 20, hidden: int = 16, n_blocks: int = 2) -> dict:
    """The paper config's kinematics section at a tiny size."""
    kin = copy.deepcopy(PAPER_CONFIG["kinematics"])
    kin["training"] |= {
        "iterations": iterations,
        "batch_size": 64,
        "standardization_draws": 2000,
        "checkpoint_every": 10,
    }
    kin["network"] |= {"n_blocks": n_blocks, "hidden": hidden}
    kin["inn"]["ramp"]["iterations_per_epoch"] = 1
    kin |= {
        "n_observations": 3,
        "n_posterior_samples": 50,
        "c2st_observations": 1,
        "figure_observations": [0, 1],
    }
    kin["reference"] |= {"tolerance": 0.1, "n_accept": 60, "batch_size": 50_000}
    return kin


# Every artefact the paper shows (and our companion tables), as the smoke configuration writes them
# (it runs one label map and one network: fig5_1_gmm_some.png and training_gmm_paper_*.png come
# from the other configurations).
PAPER_FIGURES = [
    "results/figures/fig5_1_gmm.png",
    "results/figures/fig5_2_inn_variants.png",
    "results/figures/fig5_3_samples_mnist.png",
    "results/figures/fig5_3_samples_fashion_mnist.png",
    "results/figures/fig5_4_style_mnist.png",
    "results/figures/fig5_4_style_fashion_mnist.png",
    # Training curves (not in the paper), from the runs' recorded histories.
    "results/figures/training_gmm_reference_all.png",
    "results/figures/training_latent_mnist.png",
    # E4, beyond the paper: the inverse-kinematics benchmark.
    "results/figures/kinematics_posteriors.png",
    "results/figures/kinematics_eps.png",
    # Beyond the paper: the linear-Gaussian check of eps.
    "results/figures/linear_gaussian_eps.png",
]
PAPER_TABLES = [
    "results/tables/table1.csv",
    "results/tables/gmm_metrics.csv",
    "results/tables/latent_metrics.csv",
    "results/tables/training_speed.csv",
    "results/tables/kinematics_metrics.csv",
    "results/tables/linear_gaussian.csv",
]


@functools.cache
def local_env() -> dict[str, str]:
    """The environment for local Snakemake runs of the suite.

    Where SLURM's client tools are installed but no controller answers (this machine between SLURM
    tests), the SLURM executor plugin (2.8) waits ~9 s in `scontrol show config` every time
    Snakemake starts, local runs included. A stand-in `scontrol` first on PATH fails at once and
    spares each local run that wait; local runs never use SLURM (tests/test_slurm.py uses the real
    one)."""
    shim = Path(tempfile.mkdtemp(prefix="replicate-no-scontrol-"))
    atexit.register(shutil.rmtree, shim, ignore_errors=True)
    (shim / "scontrol").write_text("#!/bin/sh\nexit 1\n")
    (shim / "scontrol").chmod(0o755)
    return {**os.environ, "PATH": f"{shim}{os.pathsep}{os.environ.get('PATH', '')}"}


def snakemake(
    workdir: Path,
    *args: str,
    configfile: Path | None = SMOKE_CONFIG,
    check: bool = True,
    timeout: float = 1800,
    cores: int | None = min(2, os.cpu_count() or 1),
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the workflow of this checkout in ``workdir``, by default on the smoke configuration
    (``cores=None``: without ``--cores``, as a user types commands that run no job); ``env``:
    variables set on top of the suite's environment (``PYTHONPATH`` for another copy of the
    library).

    Every job gets one thread (``--max-threads 1``): at the smoke configuration's sizes a training
    job asking for 2 keeps one core idle (its CPU time is its wall-clock), so two jobs side by side
    finish the smoke DAG in 369 s where 2-thread jobs take 489 s (2-core AMD EPYC, idle). The
    redone jobs of the determinism, fault and SLURM tests get the same one thread, so their files
    must equal the run's bit for bit; two threads are held to that by tests/test_joint.py."""
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        *ONE_THREAD_PER_JOB,
        *(["--cores", str(cores)] if cores else []),
        *(["--configfile", str(configfile)] if configfile else []),
        *args,
    ]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=workdir,
        env={**local_env(), **(env or {})},
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-5000:]}\n"
            f"{proc.stderr[-10000:]}"
        )
    return proc


# ---------------------------------------------------------------------------------------------
# Redoing jobs of a finished run, and comparing what they write with what the run wrote

# Not outputs of the computation: wall-clock timings and logs differ between any two runs (the
# speed table: every number in it is a timing or derived from one).
UNCOMPARED_DIRS = ("results/logs", "results/benchmarks", "results/tables/training_speed.")
# How the data were obtained (which sources were tried, how each went, how long it took) depends on
# the network and the clock; the files' checksums next to it are compared.
UNCOMPARED_KEYS = {"attempts"}
TIMING = re.compile(
    r"second|time|finished|started|elapsed|per_s|it_s|_s$|wall|speed|ms_", re.IGNORECASE
)


@dataclasses.dataclass(frozen=True)
class Job:
    """One job of a finished run: its rule, output files and input files (paths relative to the
    run's directory)."""

    rule: str
    outputs: tuple[str, ...]
    inputs: tuple[str, ...]


def copy_run(run: Path, workdir: Path) -> None:
    """Copy the finished run ``run`` (results, Snakemake records, file times) to ``workdir``."""
    shutil.copytree(
        run, workdir, symlinks=True, dirs_exist_ok=True, ignore=shutil.ignore_patterns("locks")
    )


def jobs_of_run(workdir: Path) -> list[Job]:
    """Every job of the finished smoke run in ``workdir``, from `snakemake --detailed-summary`:
    Snakemake's public listing of each output file with the rule, log files and input files that
    made it (a job's log files are its own, so they tell its outputs apart from its siblings')."""
    proc = snakemake(workdir, "--detailed-summary", cores=None)
    summary = pd.read_csv(io.StringIO(proc.stdout), sep="\t", dtype=str, keep_default_na=False)
    grouped: dict[tuple[str, str], list[pd.Series]] = {}
    for _, row in summary.iterrows():
        grouped.setdefault((row["rule"], row["log-file(s)"]), []).append(row)
    return [
        Job(
            rule=rule,
            outputs=tuple(sorted(r["output_file"] for r in rows)),
            inputs=tuple(sorted({f for f in rows[0]["input-file(s)"].split(",") if f})),
        )
        for (rule, _), rows in sorted(grouped.items())
    ]


def one_job_per_rule(jobs: list[Job], rules: set[str] | None = None) -> list[list[Job]]:
    """One job of every rule (of ``rules``; all by default), the first by output name, in layers:
    a job's layer is the longest chain of chosen jobs upstream of it. Asking Snakemake for the
    files of one layer redoes exactly its jobs, from inputs the run made, where asking for all at
    once would also redo every job between two chosen ones (an aggregate table and a training
    job upstream of it: every other seed's jobs in between)."""
    producer = {out: job for job in jobs for out in job.outputs}
    chosen: dict[str, Job] = {}
    for job in sorted(jobs, key=lambda j: j.outputs):
        if rules is None or job.rule in rules:
            chosen.setdefault(job.rule, job)
    picked = set(chosen.values())

    @functools.cache
    def upstream(job: Job) -> frozenset[Job]:
        parents = {producer[f] for f in job.inputs if f in producer}
        return frozenset(parents).union(*(upstream(p) for p in parents))

    @functools.cache
    def layer(job: Job) -> int:
        return max((layer(j) + 1 for j in upstream(job) & picked), default=0)

    layers: list[list[Job]] = [[] for _ in range(1 + max(map(layer, picked), default=-1))]
    for job in sorted(picked, key=lambda j: j.outputs):
        layers[layer(job)].append(job)
    return layers


def redo_jobs(
    workdir: Path, layers: list[list[Job]], run: Callable[[list[str]], object]
) -> list[Path]:
    """Redo the jobs of ``layers`` in ``workdir``, the last layer first so that every job reads
    the run's own inputs: per layer, delete one output of each job and ``run`` Snakemake on those
    files. Returns every file written (below results/), relative to ``workdir``."""
    started = time.time_ns()
    for layer in reversed(layers):
        targets = [job.outputs[0] for job in layer]
        for target in targets:
            (workdir / target).unlink()
        run(targets)
    return files_written_since(workdir, started)


def steps_done(log: str) -> int:
    """How many jobs the Snakemake run whose log is ``log`` planned, read from its last
    "N of N steps (100%) done" line; fails if it did not finish them all."""
    steps = re.findall(r"^(\d+) of (\d+) steps \(100%\) done$", log, re.MULTILINE)
    assert steps and steps[-1][0] == steps[-1][1], "the run did not finish every step"
    return int(steps[-1][1])


def jobs_in_start_order(workdir: Path) -> list[tuple[str, str]]:
    """``(rule, wildcards)`` of every job of the first Snakemake run in ``workdir``, in the order
    it started them, read from that run's log (``.snakemake/log``)."""
    log = sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"))[0].read_text()
    starts = re.findall(r"^(?:local)?rule (\w+):\n((?:    .*\n)*)", log, re.MULTILINE)
    return [
        (rule, next(iter(re.findall(r"^    wildcards: (.*)$", body, re.MULTILINE)), ""))
        for rule, body in starts
    ]


def files_written_since(run: Path, since_ns: int) -> list[Path]:
    """Files below results/ of ``run``, relative to it, written at or after ``since_ns``."""
    return sorted(
        p.relative_to(run)
        for p in (run / "results").rglob("*")
        if p.is_file() and p.stat().st_mtime_ns >= since_ns
    )


def result_files(run: Path) -> set[Path]:
    """Every file a run wrote below results/, relative to the run's directory."""
    return {p.relative_to(run) for p in (run / "results").rglob("*") if p.is_file()}


def _assert_values_equal(a: object, b: object, where: str, rtol: float, atol: float) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        assert set(a) == set(b), where
        for key in a:
            if not TIMING.search(str(key)) and key not in UNCOMPARED_KEYS:
                _assert_values_equal(a[key], b[key], f"{where}.{key}", rtol, atol)
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_values_equal(x, y, f"{where}[{i}]", rtol, atol)
    elif isinstance(a, float | int) and isinstance(b, float | int) and not isinstance(a, bool):
        assert math.isclose(a, b, rel_tol=rtol, abs_tol=atol) or (
            math.isnan(a) and math.isnan(b)
        ), f"{where}: {a} != {b}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def compare_outputs(
    ours: Path, reference: Path, files: list[Path], rtol: float = 0.0, atol: float = 0.0
) -> int:
    """Numbers in the CSV/JSON/NPZ files among ``files`` agree between two runs (exactly by
    default; timings and logs aside); other files (PNG, PDF, Markdown, checkpoints) must exist in
    both. Returns the number of files compared by value."""
    compared = 0
    for rel in files:
        if str(rel).startswith(UNCOMPARED_DIRS):
            continue
        a, b = ours / rel, reference / rel
        assert a.is_file(), f"{rel}: missing from {ours}"
        assert b.is_file(), f"{rel}: missing from {reference}"
        if rel.suffix == ".csv":
            x, y = pd.read_csv(a), pd.read_csv(b)
            assert list(x.columns) == list(y.columns), rel
            keep = [c for c in x.columns if not TIMING.search(str(c))]
            x, y = x[keep], y[keep]
            num = x.select_dtypes("number").columns
            np.testing.assert_allclose(x[num], y[num], rtol=rtol, atol=atol, err_msg=str(rel))
            other = [c for c in keep if c not in num]
            pd.testing.assert_frame_equal(x[other], y[other], obj=str(rel))
        elif rel.suffix == ".json":
            _assert_values_equal(
                json.loads(a.read_text()), json.loads(b.read_text()), str(rel), rtol, atol
            )
        elif rel.suffix == ".npz":
            with np.load(a) as x, np.load(b) as y:
                assert sorted(x.files) == sorted(y.files), rel
                for key in x.files:
                    np.testing.assert_allclose(
                        x[key], y[key], rtol=rtol, atol=atol, err_msg=f"{rel}: {key}"
                    )
        else:
            continue
        compared += 1
    return compared


class KilledAfterCheckpoint(Exception):
    """Stands for a SIGKILL that hit a training job right after it wrote a resume checkpoint."""


@contextlib.contextmanager
def killed_after_checkpoints(n: int, module: Any = None) -> Iterator[None]:
    """Run the block as a training job killed right after its ``n``-th resume checkpoint, written
    by the ``save_checkpoint`` that ``module`` calls (default: ``replicate.checkpoints``'s)."""
    import replicate.checkpoints

    checkpoints = module or replicate.checkpoints
    real_save, saves = checkpoints.save_checkpoint, 0

    def save_then_die(*args, **kwargs):
        nonlocal saves
        real_save(*args, **kwargs)
        saves += 1
        if saves == n:
            raise KilledAfterCheckpoint

    checkpoints.save_checkpoint = save_then_die
    try:
        with pytest.raises(KilledAfterCheckpoint):
            yield
    finally:
        checkpoints.save_checkpoint = real_save
