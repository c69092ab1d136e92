"""Training speed of the Gaussian-mixture models, measured in one process (SPEC "Beyond the paper").

The paper claims the INN's two-direction losses make its training significantly slower than the
method's single likelihood. :func:`measure_training_speed` (the rule's stage:
:func:`~.stages.benchmark_training_speed`) times one full training iteration (loss, backward, Adam
step) of every model at the same network and batch size, interleaving the models over several
rounds so that drift in the machine's load hits all of them alike, and reports
the median milliseconds per iteration and the ratio to ours.

It also counts the floating-point operations of each training step (PyTorch's
``FlopCounterMode``: matrix products forward and backward, the bulk of the work) and compares the
achieved GFLOP/s with a plain float32 matrix product timed in the same process: the share of the
machine's attainable matmul speed that a small-batch flow actually uses.

Example:
    >>> cfg = {"n_train": 256, "batch_size": 32, "iterations": 1,
    ...        "network": {"n_blocks": 2, "hidden": 8, "subnet_layers": 3, "clamp": 2.0},
    ...        "ours": {"latent_dim": 2, "eps": 0.1, "sigma": 0.05, "optimizer": {"lr": 1e-3}},
    ...        "cinn": {"optimizer": {"lr": 1e-3}}}
    >>> table = measure_training_speed(cfg, ["ours", "cinn"], "cpu", iterations=2, warmup=1,
    ...                                rounds=1, matmul_size=64)
    >>> table["model"].tolist(), float(table.loc[0, "ratio_to_ours"])
    (['ours', 'cinn'], 1.0)
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from replicate.experiments.gmm.problem import GaussianMixture
from replicate.experiments.gmm.settings import model_section
from replicate.experiments.gmm.training import gmm_model
from replicate.runtime import resolve_device
from replicate.training import make_optimizer
from replicate.training_steps import StepRunner, TrainingStep

__all__ = ["matmul_gflops", "measure_training_speed", "training_step"]

log = logging.getLogger("replicate")

# Iterations between read-backs of the loss terms, as a training segment would (on a GPU each one
# waits for the queued work).
READ_BACK_EVERY = 50


def _synchronize(device: torch.device) -> None:
    # CUDA kernels run asynchronously; without a sync the clock would stop before the work ends.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(
    device: torch.device | str = "cpu", size: int = 1024, iterations: int = 10
) -> float:
    """Achieved GFLOP/s of a plain float32 ``size x size`` matrix product (2 n^3 FLOPs each).

    Example:
        >>> matmul_gflops("cpu", size=64, iterations=2) > 0
        True
    """
    device = torch.device(device)
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, generator=gen)
    b = torch.randn(size, size, device=device, generator=gen)
    for _ in range(2):  # warm-up: first calls pay for allocation and kernel selection
        a @ b
    _synchronize(device)
    begin = time.perf_counter()
    for _ in range(iterations):
        a @ b
    _synchronize(device)
    seconds = time.perf_counter() - begin
    return 2.0 * size**3 * iterations / seconds / 1e9


def training_step(
    name: str, gmm_config: Mapping[str, Any], device: torch.device, seed: int = 0
) -> Callable[[int], None]:
    """One full training iteration of model ``name`` (loss, backward, Adam step) as a closure.

    Uses the same model, optimizer settings and loss as
    :func:`replicate.experiments.gmm.stages.train_gmm_model`, on one fixed batch of
    ``batch_size`` mixture points (data loading is not what is being compared). The closure's
    argument is the iteration index (the INN's ramp reads it).

    Example:
        >>> cfg = {"batch_size": 8, "network": {"n_blocks": 1, "hidden": 4, "subnet_layers": 3,
        ...        "clamp": 2.0}, "cinn": {"optimizer": {"lr": 1e-3}}}
        >>> training_step("cinn", cfg, torch.device("cpu"))(0)
    """

    gm = GaussianMixture("all")
    x, labels = gm.sample(gmm_config["batch_size"], torch.Generator().manual_seed(seed))
    x, c = x.to(device), gm.one_hot(labels).to(device)
    model = gmm_model(name, gmm_config, "all", seed).to(device).train()
    opt_cfg = dict(gmm_config[model_section(name)]["optimizer"])
    optimizer = make_optimizer(model.parameters(), **opt_cfg)
    # The training step of replicate.experiments.gmm.training, run as training runs it (on a GPU:
    # a CUDA graph, terms read back in blocks).
    runner = StepRunner(
        TrainingStep(model.schedule, lambda **s: model.loss_terms(x, c, **s)),
        optimizer,
        opt_cfg.get("grad_clip"),
    )

    def step(i: int) -> None:
        runner.run(i)
        if i % READ_BACK_EVERY == 0:
            deque(runner.flush(), maxlen=0)

    return step


def _count_flops(step: Callable[[int], None], iteration: int) -> float:
    with FlopCounterMode(display=False) as counter:
        step(iteration)
    return float(counter.get_total_flops())


def measure_training_speed(
    gmm_config: Mapping[str, Any],
    models: Sequence[str],
    device: str | torch.device = "cpu",
    iterations: int = 20,
    warmup: int = 3,
    rounds: int = 3,
    matmul_size: int = 2048,
) -> pd.DataFrame:
    """Milliseconds per training iteration of each model, and our share of matmul speed.

    Every model is built once; then ``rounds`` times, each model runs ``warmup`` untimed and
    ``iterations`` timed iterations, in turn. The table gives the median over rounds of the mean
    time per iteration. The timed iteration index is mid-ramp (iteration 200 of the INN's
    schedule) so every INN loss is on; the cost of an iteration does not depend on the ramp value.

    Columns: ``model, ms_per_iteration, ms_min, ms_max, ratio_to_ours, gflop_per_iteration,
    achieved_gflops, fraction_of_matmul``, then the settings (``device, batch_size, n_blocks,
    hidden, subnet_layers, iterations, rounds, threads, matmul_gflops, matmul_size, torch``).
    """
    dev = device if isinstance(device, torch.device) else resolve_device(str(device))
    if "ours" not in models:
        raise ValueError(f"the speed table is relative to 'ours'; got models {list(models)}")
    steps = {name: training_step(name, gmm_config, dev) for name in models}
    flops = {name: _count_flops(step, 200) for name, step in steps.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    for r in range(rounds):
        for name, step in steps.items():
            for i in range(warmup):
                step(200 + i)
            _synchronize(dev)
            begin = time.perf_counter()
            for i in range(iterations):
                step(200 + i)
            _synchronize(dev)
            times[name].append((time.perf_counter() - begin) / iterations * 1e3)
            log.info("round %d/%d %s: %.2f ms/iteration", r + 1, rounds, name, times[name][-1])
    peak = matmul_gflops(dev, matmul_size, iterations=max(3, iterations // 2))
    net = gmm_config["network"]
    rows = []
    for name in models:
        ms = statistics.median(times[name])
        achieved = flops[name] / (ms / 1e3) / 1e9
        rows.append(
            {
                "model": name,
                "ms_per_iteration": ms,
                "ms_min": min(times[name]),
                "ms_max": max(times[name]),
                "gflop_per_iteration": flops[name] / 1e9,
                "achieved_gflops": achieved,
                "fraction_of_matmul": achieved / peak,
            }
        )
    table = pd.DataFrame(rows)
    ours_ms = float(table.set_index("model").loc["ours", "ms_per_iteration"])
    table.insert(2, "ratio_to_ours", table["ms_per_iteration"] / ours_ms)
    table = table.assign(
        device=str(dev) if dev.type != "cuda" else torch.cuda.get_device_name(dev),
        batch_size=gmm_config["batch_size"],
        n_blocks=net["n_blocks"],
        hidden=net["hidden"],
        subnet_layers=net["subnet_layers"],
        iterations=iterations,
        rounds=rounds,
        threads=torch.get_num_threads(),
        matmul_gflops=peak,
        matmul_size=matmul_size,
        torch=torch.__version__,
    )
    return table
