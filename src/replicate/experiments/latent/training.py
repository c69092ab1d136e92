"""Training the E3 models on auto-encoder latents (the paper's flow and the cINN baseline),
resumable through the shared trainer (:func:`replicate.training.fit`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from replicate.experiments.latent.models import (
    N_CLASSES,
    LatentCINN,
    LatentFlow,
    _cinn_metadata,
    _flow_kwargs,
    _flow_metadata,
    network_kwargs,
)
from replicate.training import EpochBatches, fit_epochs, make_optimizer
from replicate.training_steps import TrainingSetup, TrainingStep

__all__ = ["latent_training_setup", "train_latent_cinn", "train_latent_flow"]


def _latent_pairs(
    train_u: np.ndarray, train_y: np.ndarray, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Checked training latents (N, d) float32 and labels (N,) int64 on ``device``: checked once
    here, so that the training step does not check (and synchronise) every batch."""
    u = torch.as_tensor(np.asarray(train_u, dtype=np.float32))
    y = torch.as_tensor(np.asarray(train_y, dtype=np.int64))
    if u.ndim != 2 or len(u) != len(y) or len(u) == 0:
        raise ValueError(f"train_u (N, d) and train_y (N,) disagree: {u.shape} vs {y.shape}")
    if not bool(torch.isfinite(u).all()):
        raise ValueError("train_u must be finite, but contains NaN or inf values")
    if int(y.min()) < 0 or int(y.max()) >= N_CLASSES:
        raise ValueError(
            f"train_y must lie in 0..{N_CLASSES - 1}, got {int(y.min())}..{int(y.max())}"
        )
    return u.to(device), y.to(device)


def latent_training_setup(
    kind: str,
    train_u: np.ndarray,
    train_y: np.ndarray,
    flow_config: Mapping[str, Any],
    seed: int,
    device: str | torch.device = "cpu",
) -> tuple[TrainingSetup, EpochBatches]:
    """The latent flow (``kind="flow"``) or the cINN (``"cinn"``) on raw latents, with its
    standardisation set from them, its Adam and its step (``flow_config``'s network, batch size
    and lr; the cINN takes the same), and the epochs' batches.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> u, y = rng.normal(size=(64, 4)).astype(np.float32), rng.integers(0, 10, 64)
        >>> cfg = {"n_blocks": 1, "hidden": 8, "subnet_layers": 2, "clamp": 2.0, "eps": 0.1,
        ...        "sigma": 0.05, "batch_size": 32, "lr": 1e-3}
        >>> setup, batches = latent_training_setup("cinn", u, y, cfg, seed=0)
        >>> type(setup.model).__name__, batches.per_epoch
        ('LatentCINN', 2)
    """
    device = torch.device(device)
    u, y = _latent_pairs(train_u, train_y, device)
    latent_dim = u.shape[1]
    torch.manual_seed(seed)
    model: LatentFlow | LatentCINN
    if kind == "flow":
        model = LatentFlow(**_flow_kwargs(flow_config, latent_dim), permutation_seed=seed)
        model = model.to(device)
        model.fit_standardization(u)
    elif kind == "cinn":
        model = LatentCINN(**network_kwargs(flow_config, latent_dim), permutation_seed=seed)
        model = model.to(device)
        model.fit_standardization(u, y)
    else:
        raise ValueError(f"kind must be 'flow' or 'cinn', got {kind!r}")
    batches = EpochBatches(len(u), int(flow_config["batch_size"]), seed, device=device)
    optimizer = make_optimizer(model.parameters(), lr=float(flow_config["lr"]))

    def inputs(i: int) -> dict[str, Tensor]:
        rows = batches(i)
        return {"x": u[rows], "condition": y[rows]}

    return TrainingSetup(model, optimizer, TrainingStep(inputs, model.loss_terms)), batches


def _fit_on_latents(
    setup: TrainingSetup,
    batches: EpochBatches,
    *,
    epochs: int,
    seed: int,
    metadata: Mapping[str, Any],
    checkpoint_path: str | os.PathLike | None,
    progress_every: int,
    name: str,
) -> dict[str, Any]:
    """The one training loop of every latent model: its mean NLL over shuffled mini-batches,
    epoch by epoch, the global generator reseeded per epoch, resumable from ``checkpoint_path``
    (saved after every epoch) with the numbers of an uninterrupted run."""
    model = setup.model
    model.train()
    lr = setup.optimizer.defaults["lr"]
    metadata = {
        **metadata,
        "epochs": epochs,
        "batch_size": batches.batch_size,
        "lr": lr,
        "n_train": batches.n,
    }
    result = fit_epochs(
        setup,
        batches,
        epochs,
        seed=seed,  # each epoch's noise comes from (seed, epoch)
        name=name,
        checkpoint_path=checkpoint_path,
        metadata=metadata,
        progress_every=progress_every,
    )
    model.eval()
    return {
        "epoch_loss": result.segment_means(batches.per_epoch),
        "resumed_after_epoch": result.resumed_at // batches.per_epoch,
        "seconds": result.seconds,
        "seconds_per_iteration": result.seconds_per_iteration,
        "batches_per_epoch": batches.per_epoch,
    }


def train_latent_flow(
    train_u: np.ndarray,
    train_y: np.ndarray,
    config: Mapping[str, Any],
    seed: int,
    checkpoint_path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    progress_every: int = 100,
) -> tuple[LatentFlow, dict[str, Any]]:
    """Train the conditional flow on latents by its NLL, epoch by epoch, resumably.

    The noise on the padding is drawn from the global generator, reseeded from ``(seed, epoch)``
    at the start of every epoch, and the shuffling comes from
    :func:`replicate.training.epoch_permutation`; so a run resumed from the per-epoch
    checkpoint gives the numbers of an uninterrupted one.

    Args:
        train_u, train_y: raw latents (N, latent_dim) float32 and labels (N,) int.
        config: the ``latent.flow`` section.
        seed: seeds the initialisation, the permutations, the shuffling and the noise.
        checkpoint_path: per-epoch checkpoint; resumed from when its configuration matches.
        device: where to train.
        progress_every: a progress line every this many iterations (0: none).

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> u, y = rng.normal(size=(64, 4)).astype(np.float32), rng.integers(0, 10, 64)
        >>> cfg = {"n_blocks": 1, "hidden": 8, "subnet_layers": 2, "clamp": 2.0, "eps": 0.1,
        ...        "sigma": 0.05, "epochs": 2, "batch_size": 32, "lr": 1e-3}
        >>> model, summary = train_latent_flow(u, y, cfg, seed=0, progress_every=0)
        >>> len(summary["epoch_loss"])
        2
    """
    setup, batches = latent_training_setup("flow", train_u, train_y, config, seed, device)
    latent_dim = setup.model.latent_dim
    summary = _fit_on_latents(
        setup,
        batches,
        epochs=int(config["epochs"]),
        seed=seed,
        metadata=_flow_metadata(config, latent_dim, seed),
        checkpoint_path=checkpoint_path,
        progress_every=progress_every,
        name="latent flow",
    )
    return setup.model, summary


def train_latent_cinn(
    train_u: np.ndarray,
    train_y: np.ndarray,
    flow_config: Mapping[str, Any],
    epochs: int,
    seed: int,
    device: str | torch.device = "cpu",
    progress_every: int = 100,
    checkpoint_path: str | os.PathLike | None = None,
) -> tuple[LatentCINN, dict[str, Any]]:
    """Train the cINN on latents by its plain NLL, with ours' network, batch size and lr.

    Args:
        train_u, train_y: raw latents (N, d) and labels (N,).
        flow_config: the ``latent.flow`` section (network, ``batch_size``, ``lr``), so the
            baseline matches ours in everything but the method.
        epochs: ``latent.cinn.epochs``.
        seed: seeds the initialisation, the permutations and the shuffling.
        checkpoint_path: per-epoch checkpoint; resumed from when its configuration matches (a
            killed job resumes like the flow's).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> u, y = rng.normal(size=(64, 4)).astype(np.float32), rng.integers(0, 10, 64)
        >>> cfg = {"n_blocks": 1, "hidden": 8, "subnet_layers": 2, "clamp": 2.0,
        ...        "batch_size": 32, "lr": 1e-3}
        >>> model, summary = train_latent_cinn(u, y, cfg, epochs=2, seed=0, progress_every=0)
        >>> len(summary["epoch_loss"])
        2
    """
    setup, batches = latent_training_setup("cinn", train_u, train_y, flow_config, seed, device)
    latent_dim = setup.model.latent_dim
    summary = _fit_on_latents(
        setup,
        batches,
        epochs=int(epochs),
        seed=seed,
        metadata=_cinn_metadata(flow_config, latent_dim, seed),
        checkpoint_path=checkpoint_path,
        progress_every=progress_every,
        name="cINN",
    )
    return setup.model, summary
