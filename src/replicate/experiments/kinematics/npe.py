"""The field's standard amortised baseline on E4: neural posterior estimation (NPE) from ``sbi``.

``sbi``'s ``NPE`` with its default density estimator (a masked autoregressive flow) and its own
training loop (Adam, batches of 200, early stopping on a held-out tenth after 20 epochs without
improvement: ``NPE.train``'s defaults) is given exactly the simulator pairs ours sees: the
``training.iterations`` batches of ``training.batch_size`` fresh pairs that
:func:`replicate.experiments.kinematics.problem.simulated_batch` draws for the seed, as one
data set. The prior is E4's (independent Gaussians, :data:`~.problem.PRIOR_STD`). The estimator's
weights (its z-scoring included) are saved as safetensors and rebuilt from the settings, so a
checkpoint loads without pickle; sbi's loop is not resumable, so a killed job starts over.

Example:
    >>> import tempfile, pathlib
    >>> settings = {"training": {"iterations": 4, "batch_size": 64},
    ...             "npe": {"density_estimator": "maf", "max_num_epochs": 2}}
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> files = TrainingFiles(d / "npe.safetensors", d / "npe.json")
    >>> status = train_npe_model("npe", settings, 0, files)
    >>> status["diverged"], status["simulations"]
    (False, 256)
    >>> load_npe(d / "npe.safetensors", settings).sample(torch.zeros(3, 2), n=5).shape
    torch.Size([3, 5, 4])
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from replicate.checkpoints import config_hash, load_checkpoint, save_checkpoint
from replicate.experiments.kinematics.problem import PRIOR_STD, simulated_batch
from replicate.files import atomic_path, write_json
from replicate.runtime import resolve_device, seed_everything
from replicate.training import TrainingFiles

__all__ = ["NPEPosterior", "load_npe", "npe_pairs", "train_npe_model"]

log = logging.getLogger("replicate")

DATA_DIM, OBSERVATION_DIM = 4, 2


def _prior(device: torch.device | str = "cpu") -> torch.distributions.Distribution:
    std = torch.tensor(PRIOR_STD, dtype=torch.float32, device=device)
    return torch.distributions.Independent(
        torch.distributions.Normal(torch.zeros_like(std), std), 1
    )


def npe_pairs(settings: Mapping[str, Any], seed: int) -> tuple[Tensor, Tensor]:
    """The simulator pairs ours trains on with ``seed``, as one data set (x, y) in float32: the
    batches of iterations 0, 1, ... of :func:`~.problem.simulated_batch`."""
    training = settings["training"]
    batches = [
        simulated_batch(training["batch_size"], seed, i) for i in range(training["iterations"])
    ]
    return torch.cat([x for x, _ in batches]).float(), torch.cat([y for _, y in batches]).float()


def _builder(settings: Mapping[str, Any]) -> Any:
    # sbi takes seconds to import (and pulls in its own dependencies); only NPE's rules need it.
    from sbi.neural_nets import posterior_nn

    return posterior_nn(settings["npe"].get("density_estimator", "maf"))


class _LogTracker:
    """sbi's experiment tracker (its ``Tracker`` protocol) writing to the rule's log instead of
    a TensorBoard folder in the working directory: the epoch losses are the progress lines."""

    log_dir = None

    def log_metric(self, name: str, value: float, step: int | None = None) -> None:
        log.info("NPE %s %s = %.5g", f"epoch {step}" if step is not None else "", name, value)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        for name, value in metrics.items():
            self.log_metric(name, value, step)

    def log_params(self, params: Mapping[str, Any]) -> None:
        log.info("NPE settings: %s", dict(params))

    def add_figure(self, name: str, figure: Any, step: int | None = None) -> None:
        pass  # no figures: the history CSV holds the losses

    def flush(self) -> None:
        pass


class NPEPosterior(nn.Module):
    """An sbi density estimator of p(x | y) with the interface E4's evaluation uses:
    ``sample(observations (B, 2), n) -> (B, n, 4)``."""

    def __init__(self, estimator: nn.Module) -> None:
        super().__init__()
        self.estimator = estimator

    @torch.no_grad()
    def sample(self, observations: Tensor, n: int) -> Tensor:
        """``n`` posterior draws for each observation (the estimator's own sampler; E4's prior
        has unbounded support, so no draw needs rejecting)."""
        samples = self.estimator.sample((n,), condition=observations)  # (n, B, 4)
        return samples.transpose(0, 1)


def _estimator(settings: Mapping[str, Any], device: torch.device) -> nn.Module:
    """An untrained estimator of the configured kind; its z-scoring is overwritten on load."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, DATA_DIM, generator=generator)
    y = torch.randn(64, OBSERVATION_DIM, generator=generator)
    return _builder(settings)(x, y).to(device)


def _metadata(settings: Mapping[str, Any]) -> dict[str, Any]:
    return {"experiment": "kinematics", "model": "npe", **settings}


def train_npe_model(
    name: str,
    settings: Mapping[str, Any],
    seed: int,
    files: TrainingFiles,
    *,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Train sbi's NPE on the pairs ours sees with ``seed`` (:func:`npe_pairs`); write
    ``files``: the estimator (safetensors), the status JSON (returned; the keys of the other
    models' status) and, with ``files.history``, the per-epoch training and validation losses.
    sbi's loop neither resumes (``files.resume`` is not used) nor reports per iteration.
    """
    from sbi.inference import NPE  # as above: only when NPE trains

    dev = resolve_device(device)
    npe_cfg = dict(settings["npe"])
    seed_everything(seed)
    x, y = npe_pairs(settings, seed)
    log.info(
        "training %s (sbi NPE, %s), seed %d, device %s, on %d simulator pairs",
        name,
        npe_cfg.get("density_estimator", "maf"),
        seed,
        dev,
        len(x),
    )
    inference = NPE(
        prior=_prior(dev),
        density_estimator=_builder(settings),
        device=str(dev),
        tracker=_LogTracker(),
        show_progress_bars=False,
    )
    begin = time.perf_counter()
    estimator = inference.append_simulations(x.to(dev), y.to(dev)).train(
        **({"max_num_epochs": npe_cfg["max_num_epochs"]} if npe_cfg.get("max_num_epochs") else {})
    )
    seconds = time.perf_counter() - begin
    summary = inference.summary
    epochs = len(summary["validation_loss"])
    batch_size = 200  # NPE.train's default training_batch_size
    steps = epochs * -(-int(0.9 * len(x)) // batch_size)
    best = float(summary["best_validation_loss"][-1])
    status = {
        "model": name,
        "seed": seed,
        "device": str(dev),
        "diverged": not torch.isfinite(torch.tensor(best)).item(),
        "message": f"finished after {epochs} epochs (best validation loss {best:.4g})",
        "simulations": len(x),
        "epochs": epochs,
        "iterations_done": steps,
        "iterations": steps,
        "seconds": seconds,
        "seconds_per_iteration": seconds / max(steps, 1),
        "resumed_at_iteration": 0,
        "final_terms": {"validation_loss": best},
        "config_hash": config_hash(_metadata(settings)),
        "torch_threads": torch.get_num_threads(),
    }
    save_checkpoint(files.checkpoint, estimator.state_dict(), _metadata(settings))
    if files.history is not None:
        history = pd.DataFrame(
            {
                "epoch": range(1, epochs + 1),
                "training_loss": summary["training_loss"],
                "validation_loss": summary["validation_loss"],
            }
        )
        with atomic_path(files.history) as tmp:
            history.to_csv(tmp, index=False)
    write_json(files.status, status)
    log.info("%s: %s, %.1f s", name, status["message"], seconds)
    return status


def load_npe(
    checkpoint_path: str | os.PathLike,
    settings: Mapping[str, Any],
    device: str | torch.device = "cpu",
) -> NPEPosterior:
    """Load a checkpoint written by :func:`train_npe_model`, in eval mode.

    Raises :class:`replicate.checkpoints.CheckpointMismatch` if it was trained under other settings.
    """
    dev = resolve_device(device)
    tensors = load_checkpoint(Path(checkpoint_path), _metadata(settings), dev)
    estimator = _estimator(settings, dev)
    estimator.load_state_dict(tensors)
    return NPEPosterior(estimator).eval()
