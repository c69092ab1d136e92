"""Shared fixtures: one finished local run of the smoke configuration, reused by every slow test."""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SMOKE_CONFIG = REPO / "config" / "smoke.yaml"

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
]
# tests/test_slurm.py runs the whole smoke DAG a second time, from nothing, through SLURM, wherever
# it can start its test cluster (as root), and compares every file with the local run's.
SLURM_RERUN = os.geteuid() == 0
PAPER_TABLES = [
    "results/tables/table1.csv",
    "results/tables/gmm_metrics.csv",
    "results/tables/latent_metrics.csv",
    "results/tables/training_speed.csv",
    "results/tables/kinematics_metrics.csv",
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
) -> subprocess.CompletedProcess[str]:
    """Run the workflow of this checkout in ``workdir``, by default on the smoke configuration
    (``cores=None``: without ``--cores``, as a user types commands that run no job)."""
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        *(["--cores", str(cores)] if cores else []),
        *(["--configfile", str(configfile)] if configfile else []),
        *args,
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, cwd=workdir, env=local_env()
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-5000:]}\n"
            f"{proc.stderr[-10000:]}"
        )
    return proc


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding a finished local run of the whole DAG on the smoke configuration."""
    workdir = tmp_path_factory.mktemp("smoke_run")
    snakemake(workdir)
    return workdir


class KilledAfterCheckpoint(Exception):
    """Stands for a SIGKILL that hit a training job right after it wrote a resume checkpoint."""


@contextlib.contextmanager
def killed_after_checkpoints(n: int) -> Iterator[None]:
    """Run the block as a training job killed right after its ``n``-th resume checkpoint."""
    import replicate.training as training

    real_save, saves = training.save_checkpoint, 0

    def save_then_die(*args, **kwargs):
        nonlocal saves
        real_save(*args, **kwargs)
        saves += 1
        if saves == n:
            raise KilledAfterCheckpoint

    training.save_checkpoint = save_then_die
    try:
        with pytest.raises(KilledAfterCheckpoint):
            yield
    finally:
        training.save_checkpoint = real_save
