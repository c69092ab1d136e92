"""Training speed of every model on one CPU thread, on CUDA eager and on CUDA as a graph.

A benchmark, not a test. For every model the pipeline trains, at the size of config/config.yaml,
it builds the trainer's own :class:`replicate.training_steps.TrainingSetup` (the same model,
optimiser and step the rule runs) and times iterations in one process:

* ``cpu_it_s``: one CPU thread, eager (the pipeline's CPU path);
* ``cuda_eager_it_s``: on the GPU, every iteration's terms read back and checked before its update
  (the pipeline's step before the GPU work: one host synchronisation per iteration);
* ``cuda_deferred_it_s``: the same operations, terms read back once per 50 iterations;
* ``cuda_it_s``: the pipeline's GPU path, the whole step replayed as a CUDA graph;

then the speed-ups, and how busy the GPU is: ``gpu_ms_per_step`` is one step's GPU time from graph
replays back to back (no host in between), and ``gpu_busy_*`` that time over each mode's wall-clock
per iteration. ``--concurrency 1 2 4 8`` then starts that many processes training one model at once
on the one GPU and reports their summed it/s (how ``gpu_jobs`` in profiles/default was chosen).

    python benchmarks/gpu_speed.py --out gpu_speed.csv              # every model
    python benchmarks/gpu_speed.py --models latent_flow gmm_ours_reference --seconds 1
    python benchmarks/gpu_speed.py --models none --concurrency 1 2 4 8 --concurrency-out c.csv

Without a GPU only the CPU column is measured (the CUDA columns are left empty).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from replicate.experiments.gmm import training as gmm_training
from replicate.experiments.gmm.settings import training_settings as gmm_settings
from replicate.experiments.kinematics import training as kinematics_training
from replicate.experiments.kinematics.settings import model_kind
from replicate.experiments.kinematics.settings import model_names as kinematics_models
from replicate.experiments.kinematics.settings import training_settings as kinematics_settings
from replicate.experiments.latent.autoencoder import autoencoder_training_setup
from replicate.experiments.latent.judges import classifier_training_setup
from replicate.experiments.latent.training import latent_training_setup
from replicate.files import atomic_path
from replicate.training_steps import TrainingSetup

REPO = Path(__file__).resolve().parents[1]
READ_BACK_EVERY = 50  # iterations per read-back of the terms, as a training segment
WARMUP = 5  # untimed iterations (the graph's eager warm-up and its capture among them)


def _random_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28)).astype(np.uint8), rng.integers(0, 10, n)


def model_setups(config: dict[str, Any]) -> dict[str, Callable[[torch.device], TrainingSetup]]:
    """Every model the pipeline trains, at the config's size: name -> its setup on a device.
    Data sets are random of the right shape and 10 batches long (speed depends on the batch)."""
    setups: dict[str, Callable[[torch.device], TrainingSetup]] = {}
    gmm = copy.deepcopy(config["gmm"])
    gmm["n_train"] = 10 * gmm["batch_size"]
    for network in gmm["run_networks"]:
        for model in ("ours", "inn_full", "cinn"):
            settings = gmm_settings(gmm, model, network)
            setups[f"gmm_{model}_{network}"] = lambda d, m=model, s=settings: (
                gmm_training.training_setup(m, s, "all", 0, d)
            )
    kin = config["kinematics"]
    for model in kinematics_models(kin):
        if model_kind(model) == "npe":  # sbi's own training loop, not a TrainingStep
            continue
        settings = kinematics_settings(kin, model)
        setups[f"kinematics_{model}"] = lambda d, m=model, s=settings: (
            kinematics_training.training_setup(m, s, 0, d)
        )
    latent = config["latent"]
    flow = latent["flow"]
    rng = np.random.default_rng(0)
    u = rng.normal(size=(10 * flow["batch_size"], latent["autoencoder"]["latent_dim"]))
    y = rng.integers(0, 10, len(u))
    for kind in ("flow", "cinn"):
        setups[f"latent_{kind}"] = lambda d, k=kind: latent_training_setup(k, u, y, flow, 0, d)[0]
    ae = latent["autoencoder"]
    images, labels = _random_images(10 * ae["batch_size"])
    setups["autoencoder"] = lambda d: autoencoder_training_setup(images, ae, 0, d)[0]
    clf = latent["classifier"]
    clf_images, clf_labels = _random_images(10 * clf["batch_size"])
    setups["classifier"] = lambda d: classifier_training_setup(clf_images, clf_labels, clf, 0, d)[0]
    return setups


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def iterations_per_second(
    setup: TrainingSetup,
    mode: str,
    seconds: float,
    min_iterations: int = 3,
    warmup: int = WARMUP,
    start_at: float | None = None,
) -> tuple[float, Any]:
    """Iterations per second of ``setup`` in ``mode`` over at least ``seconds`` of steady state
    (and ``min_iterations``) after ``warmup`` iterations (and, if given, from the wall-clock
    time ``start_at``), the terms read back every :data:`READ_BACK_EVERY` iterations; also
    returns the runner (for the graph's GPU time)."""
    runner = setup.runner(mode)
    device = runner.device
    for i in range(warmup):
        runner.run(i)
    deque(runner.flush(), maxlen=0)
    _synchronize(device)
    if start_at is not None:
        time.sleep(max(0.0, start_at - time.time()))
    begin, n = time.perf_counter(), 0
    while n < min_iterations or time.perf_counter() - begin < seconds:
        runner.run(warmup + n)
        n += 1
        if n % READ_BACK_EVERY == 0:
            deque(runner.flush(), maxlen=0)
    deque(runner.flush(), maxlen=0)
    _synchronize(device)
    return n / (time.perf_counter() - begin), runner


def measure(
    name: str, build: Callable[[torch.device], TrainingSetup], seconds: float, cuda: bool
) -> dict[str, Any]:
    """One row of the table: every mode of one model."""
    torch.set_num_threads(1)
    cpu_setup = build(torch.device("cpu"))
    row: dict[str, Any] = {
        "model": name,
        "parameters": sum(p.numel() for p in cpu_setup.model.parameters()),
    }
    # One untimed iteration: the slowest model takes seconds per iteration on one thread.
    row["cpu_it_s"], _ = iterations_per_second(cpu_setup, "eager", seconds, 2, warmup=1)
    del cpu_setup
    if cuda:
        gpu = torch.device("cuda")
        for mode, column in (
            ("eager", "cuda_eager_it_s"),
            ("deferred", "cuda_deferred_it_s"),
            ("graph", "cuda_it_s"),
        ):
            row[column], runner = iterations_per_second(build(gpu), mode, seconds)
        gpu_s = runner.device_seconds_per_step()
        row["gpu_ms_per_step"] = 1e3 * gpu_s
        row["gpu_busy_eager"] = gpu_s * row["cuda_eager_it_s"]
        row["gpu_busy_graph"] = gpu_s * row["cuda_it_s"]
        row["speedup_vs_cpu"] = row["cuda_it_s"] / row["cpu_it_s"]
        row["speedup_vs_eager"] = row["cuda_it_s"] / row["cuda_eager_it_s"]
    shown = ", ".join(f"{k} {v:.4g}" for k, v in row.items() if isinstance(v, float))
    print(f"{name}: {shown}", flush=True)
    return row


def concurrency(model: str, jobs: list[int], seconds: float, config: Path) -> pd.DataFrame:
    """Summed it/s of ``n`` processes training ``model`` at once on the GPU, for each n: every
    process starts, warms up (its graph captured), then times ``seconds`` from one shared
    wall-clock moment, so that the n windows coincide."""
    rows = []
    for n in jobs:
        start_at = time.time() + 5.0 + 0.5 * n  # time for n interpreters to import and warm up
        cmd = [sys.executable, __file__, "--worker", model, "--seconds", str(seconds)]
        cmd += ["--config", str(config), "--start-at", str(start_at)]
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(n)]
        rates = [json.loads(p.communicate()[0].strip().splitlines()[-1])["it_s"] for p in procs]
        rows.append(
            {"model": model, "jobs": n, "it_s_each": np.mean(rates), "it_s_total": np.sum(rates)}
        )
        print(f"concurrency {model} x{n}: {rows[-1]['it_s_total']:.1f} it/s in all", flush=True)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "config" / "config.yaml")
    parser.add_argument("--models", nargs="+", default=None, help="default: every model")
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per mode")
    parser.add_argument("--out", type=Path, default=None, help="CSV of the table")
    parser.add_argument("--concurrency", type=int, nargs="*", default=[])
    parser.add_argument("--concurrency-model", default="latent_flow")
    parser.add_argument("--concurrency-out", type=Path, default=None)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    config = yaml.safe_load(args.config.read_text())
    setups = model_setups(config)
    if args.worker:  # one process of the concurrency probe: its it/s as JSON
        torch.set_num_threads(1)
        setup = setups[args.worker](torch.device("cuda"))
        rate, _ = iterations_per_second(setup, "graph", args.seconds, start_at=args.start_at)
        print(json.dumps({"it_s": rate}))
        return
    cuda = torch.cuda.is_available()
    names = list(setups) if args.models is None else [m for m in args.models if m != "none"]
    unknown = sorted(set(names) - set(setups))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {sorted(setups)}")
    about = {
        "device": torch.cuda.get_device_name(0) if cuda else "none",
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }
    print(json.dumps(about), flush=True)
    rows = [measure(name, setups[name], args.seconds, cuda) for name in names]
    table = pd.DataFrame(rows).assign(**about)
    if rows:
        print(table.drop(columns=list(about)).to_string(index=False, float_format="%.4g"))
    if args.out is not None and rows:
        with atomic_path(args.out) as tmp:
            table.to_csv(tmp, index=False)
    if args.concurrency and cuda:
        seconds = max(args.seconds, 2.0)
        probe = concurrency(args.concurrency_model, args.concurrency, seconds, args.config)
        if args.concurrency_out is not None:
            with atomic_path(args.concurrency_out) as tmp:
                probe.assign(**about).to_csv(tmp, index=False)


if __name__ == "__main__":
    main()
