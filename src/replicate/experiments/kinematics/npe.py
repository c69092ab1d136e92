"""The field's standard amortised baseline on E4: neural posterior estimation (NPE) from ``sbi``.

``sbi``'s ``NPE`` with its default density estimator (a masked autoregressive flow) and its own
training loop (Adam, batches of 200, early stopping on a held-out tenth after 20 epochs without
improvement: ``NPE.train``'s defaults) is given exactly the simulator pairs ours sees: the
``training.iterations`` batches of ``training.batch_size`` fresh pairs that
:func:`replicate.experiments.kinematics.problem.simulated_batch` draws for the seed, as one
data set. The prior is E4's (independent Gaussians, :data:`~.problem.PRIOR_STD`). The estimator's
weights (its z-scoring included) are saved as safetensors and rebuilt from the settings, so a
checkpoint loads without pickle. sbi's loop is run epoch by epoch with a progress line each, and
with a resume path it saves its whole state after every epoch (weights, optimiser, best weights,
early-stopping counters, losses, the random state its batches are drawn from), so a killed job
resumes at its last finished epoch with the numbers of an uninterrupted run.

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
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from replicate.checkpoints import (
    CheckpointMismatch,
    config_hash,
    load_checkpoint,
    optimizer_tensors,
    restore_model,
    restore_optimizer,
    save_checkpoint,
)
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
    a TensorBoard folder in the working directory. sbi hands it every epoch's losses only when
    training ends, so they go to the debug level: the progress lines are the per-epoch ones of
    :func:`_epoch_checkpointed_npe`, written as each epoch ends."""

    log_dir = None

    def log_metric(self, name: str, value: float, step: int | None = None) -> None:
        log.debug("NPE %s %s = %.5g", f"epoch {step}" if step is not None else "", name, value)

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


# The per-epoch losses of sbi's summary, saved with the resume state so the history is whole.
_EPOCH_SUMMARY = ("training_loss", "validation_loss", "epoch_durations_sec")


def _epoch_checkpointed_npe(resume: Path | None, metadata: Mapping[str, Any]) -> type:
    """sbi's ``NPE`` with a progress line per epoch and, with ``resume``, its loop state saved
    after every epoch and restored before the loop starts (see the module's docstring).

    Hooks sbi 0.27's ``_summarize_epoch`` (called once per epoch, after validation) and
    ``_run_training_loop`` (after the data split and the network's initialisation, which the
    seeded run repeats identically); ``pyproject.toml`` pins sbi to that minor version.
    """
    from sbi.inference import NPE  # as _builder: only NPE's rules import sbi

    class EpochCheckpointedNPE(NPE):
        restored_epochs = 0

        def _summarize_epoch(self, train_loss, val_loss, epoch_start_time, summarization_kwargs):
            super()._summarize_epoch(train_loss, val_loss, epoch_start_time, summarization_kwargs)
            # What sbi's _converged will conclude at the next epoch's start.
            improved = self.epoch == 0 or val_loss < self._best_val_loss
            waiting = 0 if improved else self._epochs_since_last_improvement + 1
            log.info(
                "NPE epoch %d: training loss %.5g, validation loss %.5g (best %.5g; %d epochs "
                "without improvement), %.1f s",
                self.epoch + 1,
                train_loss,
                val_loss,
                min(self._summary["validation_loss"]),
                waiting,
                self._summary["epoch_durations_sec"][-1],
            )
            if resume is not None:
                save_checkpoint(resume, self._loop_state(), metadata)

        def _loop_state(self) -> dict[str, Tensor]:
            net, f64 = self._neural_net, torch.float64
            return {
                **{f"model.{k}": v for k, v in net.state_dict().items()},
                **optimizer_tensors(self.optimizer),
                **{f"best.{k}": v for k, v in self._best_model_state_dict.items()},
                **{
                    f"summary.{key}": torch.tensor(self._summary[key], dtype=f64)
                    for key in _EPOCH_SUMMARY
                },
                "loop.epoch": torch.tensor(self.epoch + 1),
                "loop.val_loss": torch.tensor(self._val_loss, dtype=f64),
                "loop.best_val_loss": torch.tensor(self._best_val_loss, dtype=f64),
                "loop.epochs_since_last_improvement": torch.tensor(
                    self._epochs_since_last_improvement
                ),
                "rng.cpu": torch.get_rng_state(),
            }

        def _restore_loop_state(self, learning_rate: float) -> bool:
            if resume is None or not resume.exists():
                return False
            try:
                state = load_checkpoint(resume, metadata, self._device)
            except (CheckpointMismatch, ValueError) as exc:
                log.warning("not resuming from %s: %s", resume, exc)
                return False
            restore_model(self._neural_net, state)
            self.optimizer = torch.optim.Adam(list(self._neural_net.parameters()), lr=learning_rate)
            restore_optimizer(self.optimizer, state)
            self._best_model_state_dict = {
                k[len("best.") :]: v for k, v in state.items() if k.startswith("best.")
            }
            for key in _EPOCH_SUMMARY:
                self._summary[key] = state[f"summary.{key}"].tolist()
            self.epoch = self.restored_epochs = int(state["loop.epoch"])
            self._val_loss = float(state["loop.val_loss"])
            self._best_val_loss = float(state["loop.best_val_loss"])
            self._epochs_since_last_improvement = int(state["loop.epochs_since_last_improvement"])
            torch.set_rng_state(state["rng.cpu"].cpu())
            log.info("NPE resumed from %s after epoch %d", resume, self.epoch)
            return True

        def _run_training_loop(self, train_loader, val_loader, train_config, *args, **kwargs):
            if self._restore_loop_state(train_config.learning_rate):
                train_config = replace(train_config, resume_training=True)
            return super()._run_training_loop(
                train_loader, val_loader, train_config, *args, **kwargs
            )

    return EpochCheckpointedNPE


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
    With ``files.resume``, the loop's state is saved there after every epoch and a killed run
    resumes from it (deleted when the run finishes).
    """
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
    resume = Path(files.resume) if files.resume is not None else None
    inference = _epoch_checkpointed_npe(resume, {**_metadata(settings), "seed": seed})(
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
    summary = inference.summary
    restored = inference.restored_epochs
    seconds = time.perf_counter() - begin + sum(summary["epoch_durations_sec"][:restored])
    epochs = len(summary["validation_loss"])
    batch_size = 200  # NPE.train's default training_batch_size
    steps_per_epoch = -(-int(0.9 * len(x)) // batch_size)
    steps = epochs * steps_per_epoch
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
        "resumed_at_iteration": restored * steps_per_epoch,
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
    if resume is not None:
        resume.unlink(missing_ok=True)
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
