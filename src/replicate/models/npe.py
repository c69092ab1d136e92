"""Neural posterior estimation (NPE) from ``sbi``, the field's standard amortised baseline, on
any simulator pairs (x, y): sbi's density estimator (a masked autoregressive flow by default) and
its own training loop (Adam at 5e-4, batches of 200, gradient norm clipped at 5, early stopping
on a held-out tenth after 20 epochs without improvement: ``NPE.train``'s defaults), run epoch by
epoch with a progress line each. With a resume path the loop's whole state (weights, optimiser,
best weights, early-stopping counters, losses, the random state its batches are drawn from) is
saved as safetensors after every epoch, so a killed run resumes at its last finished epoch with
the numbers of an uninterrupted one. sbi is imported only when NPE is used.

Example:
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(400, 2, generator=g); y = x + 0.1 * torch.randn(400, 2, generator=g)
    >>> posterior, summary = fit_npe(x, y, gaussian_prior(torch.ones(2)), max_num_epochs=2)
    >>> posterior.sample(y[:3], n=5).shape, summary["epochs"]
    (torch.Size([3, 5, 2]), 3)
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from replicate.checkpoints import (
    load_resumable,
    model_tensors,
    optimizer_tensors,
    restore_model,
    restore_optimizer,
    save_resumable,
    tensors_under,
    tensors_with_prefix,
)
from replicate.runtime import StopRequest, TrainingInterrupted, stop_requests

__all__ = ["NPEPosterior", "fit_npe", "gaussian_prior", "npe_estimator"]

log = logging.getLogger("replicate")

# NPE.train's default training_batch_size and validation_fraction (sbi 0.27).
BATCH_SIZE, VALIDATION_FRACTION = 200, 0.1


def gaussian_prior(
    std: Tensor, device: torch.device | str = "cpu"
) -> torch.distributions.Distribution:
    """Independent zero-mean Gaussians of standard deviations ``std``, as sbi takes a prior.

    Example:
        >>> gaussian_prior(torch.ones(3)).sample((2,)).shape
        torch.Size([2, 3])
    """
    std = torch.as_tensor(std, dtype=torch.float32, device=device)
    return torch.distributions.Independent(
        torch.distributions.Normal(torch.zeros_like(std), std), 1
    )


def _builder(density_estimator: str) -> Any:
    from sbi.neural_nets import posterior_nn  # as _epoch_checkpointed_npe: only here

    return posterior_nn(density_estimator)


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
    """An sbi density estimator of p(x | y) with the sampling interface of the library's models:
    ``sample(observations (B, m), n) -> (B, n, d)``."""

    def __init__(self, estimator: nn.Module) -> None:
        super().__init__()
        self.estimator = estimator

    @torch.no_grad()
    def sample(self, observations: Tensor, n: int) -> Tensor:
        """``n`` posterior draws for each observation, by the estimator's own sampler (no draw
        is rejected: for priors of unbounded support, as E4's and the linear-Gaussian check's)."""
        samples = self.estimator.sample((n,), condition=observations)  # (n, B, d)
        return samples.transpose(0, 1)


def npe_estimator(
    density_estimator: str, data_dim: int, observation_dim: int, device: torch.device | str = "cpu"
) -> nn.Module:
    """An untrained estimator of the given kind and shapes, to load trained weights into (its
    z-scoring is part of the weights, so the data it is built from does not matter).

    Example:
        >>> type(npe_estimator("maf", 4, 2)).__name__
        'NFlowsFlow'
    """
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, data_dim, generator=generator)
    y = torch.randn(64, observation_dim, generator=generator)
    return _builder(density_estimator)(x, y).to(device)


# The per-epoch losses of sbi's summary, saved with the resume state so the history is whole.
_EPOCH_SUMMARY = ("training_loss", "validation_loss", "epoch_durations_sec")


def _epoch_checkpointed_npe(
    resume: Path | None, metadata: Mapping[str, Any], stop: StopRequest | None = None
) -> type:
    """sbi's ``NPE`` with a progress line per epoch and, with ``resume``, its loop state saved
    after every epoch and restored before the loop starts (see the module's docstring).

    Hooks sbi 0.27's ``_summarize_epoch`` (called once per epoch, after validation) and
    ``_run_training_loop`` (after the data split and the network's initialisation, which the
    seeded run repeats identically); ``pyproject.toml`` pins sbi to that minor version. A
    SIGTERM or SIGINT recorded in ``stop`` ends the run after the epoch in progress is saved
    (sbi's loop has no place to stop within an epoch), by
    :class:`replicate.runtime.TrainingInterrupted`.
    """
    from sbi.inference import NPE  # seconds to import, with its own dependencies: only here

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
                save_resumable(resume, self._loop_state(), metadata)
                if stop is not None and stop.signal_number is not None:
                    raise TrainingInterrupted(stop.signal_number, self.epoch + 1, resume)

        def _loop_state(self) -> dict[str, Tensor]:
            f64 = torch.float64
            return {
                **model_tensors(self._neural_net),
                **optimizer_tensors(self.optimizer),
                **tensors_with_prefix(self._best_model_state_dict, "best"),
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
            state = None if resume is None else load_resumable(resume, metadata, self._device)
            if state is None:
                return False
            restore_model(self._neural_net, state)
            self.optimizer = torch.optim.Adam(list(self._neural_net.parameters()), lr=learning_rate)
            restore_optimizer(self.optimizer, state)
            self._best_model_state_dict = tensors_under(state, "best")
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


def fit_npe(
    x: Tensor,
    y: Tensor,
    prior: torch.distributions.Distribution,
    *,
    density_estimator: str = "maf",
    max_num_epochs: int | None = None,
    training_batch_size: int | None = None,
    resume: str | os.PathLike | None = None,
    resume_metadata: Mapping[str, Any] | None = None,
    device: torch.device | str = "cpu",
) -> tuple[NPEPosterior, dict[str, Any]]:
    """Train sbi's NPE on the pairs (x (N, d), y (N, m)) with sbi's defaults (the module's
    docstring); ``max_num_epochs`` None: until early stopping; ``training_batch_size`` None:
    sbi's default 200 (sbibm, sbi's authors' benchmark, trains with 10,000:
    ``sbibm/algorithms/sbi/snpe.py``, ``run``'s ``training_batch_size``). With ``resume``, the
    loop's state is saved there after every epoch under ``resume_metadata`` (a checkpoint of
    other metadata is ignored with a warning) and resumed from; the file is left for the caller
    to delete.

    Returns the posterior (best epoch's weights, eval mode) and a summary: ``epochs`` run,
    ``best_validation_loss``, the per-epoch ``training_loss`` and ``validation_loss``,
    ``seconds`` (all epochs, across resumes), ``restored_epochs`` and ``steps_per_epoch``.
    """
    path = Path(resume) if resume is not None else None
    with contextlib.ExitStack() as stack:
        stop = stack.enter_context(stop_requests()) if path is not None else None
        inference = _epoch_checkpointed_npe(path, dict(resume_metadata or {}), stop)(
            prior=prior,
            density_estimator=_builder(density_estimator),
            device=str(device),
            tracker=_LogTracker(),
            show_progress_bars=False,
        )
        begin = time.perf_counter()
        # sbi prints its convergence message; it goes to the log (stdout stays the caller's).
        training_batch_size = training_batch_size or BATCH_SIZE
        printed = stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        estimator = inference.append_simulations(x.to(device), y.to(device)).train(
            training_batch_size=training_batch_size,
            **({"max_num_epochs": max_num_epochs} if max_num_epochs else {}),
        )
    for line in filter(None, map(str.strip, printed.getvalue().splitlines())):
        log.info("sbi: %s", line)
    summary = inference.summary
    restored = inference.restored_epochs
    n_train = int((1 - VALIDATION_FRACTION) * len(x))
    return NPEPosterior(estimator).eval(), {
        "epochs": len(summary["validation_loss"]),
        "best_validation_loss": float(summary["best_validation_loss"][-1]),
        "training_loss": list(summary["training_loss"]),
        "validation_loss": list(summary["validation_loss"]),
        "seconds": time.perf_counter() - begin + sum(summary["epoch_durations_sec"][:restored]),
        "restored_epochs": restored,
        # sbi's training loader drops a last short batch (drop_last).
        "steps_per_epoch": n_train // min(training_batch_size, n_train),
    }
