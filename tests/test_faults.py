"""Faults tried through the whole workflow: a training job killed with SIGKILL half-way resumes
from its last checkpoint when `snakemake` is re-run, and ends with the numbers of a run that was
never interrupted; nothing the killed job was writing is taken as finished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import ONE_THREAD_PER_JOB, REPO, SMOKE_CONFIG, local_env, snakemake
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

AE_MODEL = "results/latent/mnist/autoencoder.safetensors"
AE_RESUME = "results/latent/mnist/checkpoints/autoencoder_last.safetensors"
AE_LOG = "results/logs/latent/train_autoencoder_mnist.log"


def _config(tmp_path: Path, data_dir: Path) -> Path:
    """The smoke configuration with an auto-encoder long enough to be killed half-way."""
    config = yaml.safe_load(SMOKE_CONFIG.read_text())
    config["latent"]["datasets"] = ["mnist"]
    config["latent"]["autoencoder"]["epochs"] = 6
    config["data"] = {"search_dirs": [str(data_dir)]}  # the smoke run's verified copy
    path = tmp_path / "kill.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _start(workdir: Path, configfile: Path) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
    cmd += ["--directory", str(workdir), "--cores", "2", *ONE_THREAD_PER_JOB]
    # The target before --configfile, which would take it as a second config file.
    cmd += [AE_MODEL, "--configfile", str(configfile)]
    return subprocess.Popen(
        cmd,
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=local_env(),
        start_new_session=True,  # its own process group: SIGKILL reaches the job too
    )


def test_sigkilled_autoencoder_resumes_and_equals_an_uninterrupted_run(
    smoke_run: Path, tmp_path: Path
) -> None:
    data_dir = smoke_run / "results" / "data" / "mnist"
    configfile = _config(tmp_path, data_dir)
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    killed.mkdir()
    whole.mkdir()

    job = _start(killed, configfile)
    deadline = time.monotonic() + 600
    while not (killed / AE_RESUME).exists():  # the first epoch's checkpoint
        assert job.poll() is None, (
            f"snakemake ended before the first checkpoint:\n{job.stdout.read()}"
        )
        assert time.monotonic() < deadline, "no checkpoint after 10 minutes"
        time.sleep(0.2)
    time.sleep(1.0)  # well into the next epoch
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    assert not (killed / AE_MODEL).exists(), "a killed job left its output behind"

    # A killed snakemake leaves its lock; `snakemake --unlock` is the documented first step, typed
    # as the README has it (no --cores).
    config_args = ("--configfile", str(configfile))
    snakemake(killed, "--unlock", AE_MODEL, *config_args, configfile=None, cores=None)
    snakemake(killed, AE_MODEL, *config_args, configfile=None)
    log = (killed / AE_LOG).read_text()
    assert "resuming after auto-encoder epoch" in log, log[-3000:]
    metrics = json.loads((killed / "results/latent/mnist/autoencoder_metrics.json").read_text())
    assert 1 <= metrics["resumed_after_epoch"] < 6
    assert not (killed / AE_RESUME).exists()

    snakemake(whole, AE_MODEL, *config_args, configfile=None)
    resumed, reference = load_file(killed / AE_MODEL), load_file(whole / AE_MODEL)
    assert resumed.keys() == reference.keys()
    for name, tensor in reference.items():
        assert (tensor == resumed[name]).all(), f"{name} differs after the resume"
