"""The deterministic auto-encoder of "Generative Latent Flow" (GLF; SPEC E3): 28x28 images in
[0, 1] <-> a 20-dimensional latent ``u``, pretrained by a pixel reconstruction loss.

Architecture (the GLF reference code for MNIST / Fashion-MNIST):

- encoder: Conv(1->64, k4 s2 p1) - ReLU - Conv(64->128, k4 s2 p1) - BN - ReLU - FC(6272->1024) - BN
  - ReLU - FC(1024->latent_dim);
- decoder, its mirror: FC(latent_dim->1024) - BN - ReLU - FC(1024->6272) - BN - ReLU -
  ConvT(128->64, k4 s2 p1) - BN - ReLU - ConvT(64->1, k4 s2 p1) - sigmoid.

Loss: the mean squared error on pixels in [0, 1] (GLF's plain reconstruction loss; no perceptual
loss on these grey-scale datasets). Training is epoch-based and resumable: the model, the optimiser
and the loss history are checkpointed after every epoch, and each epoch's shuffling is drawn from
``(seed, epoch)``, so a run killed and re-run gives the same numbers as one that never stopped.

Example:
    >>> import torch
    >>> ae = AutoEncoder(latent_dim=20).eval()
    >>> images = torch.rand(4, 1, 28, 28)
    >>> ae.encode(images).shape, ae.decode(ae.encode(images)).shape
    (torch.Size([4, 20]), torch.Size([4, 1, 28, 28]))
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from replicate.checkpoints import (
    load_checkpoint,
    model_tensors,
    restore_model,
    save_checkpoint,
)
from replicate.training import EpochBatches, fit_epochs, make_optimizer
from replicate.training_steps import TrainingSetup, TrainingStep

__all__ = [
    "AutoEncoder",
    "autoencoder_training_setup",
    "encode_images",
    "load_autoencoder",
    "reconstruction_error",
    "save_autoencoder",
    "to_unit_images",
    "train_autoencoder",
]

log = logging.getLogger("replicate")

IMAGE_SHAPE = (1, 28, 28)
_FEATURES = 128 * 7 * 7  # 6272: the encoder's second conv output, flattened


class AutoEncoder(nn.Module):
    """GLF's deterministic auto-encoder for 28x28 grey images (see the module docstring).

    Args:
        latent_dim: size of the latent ``u`` (the paper: 20).

    Example:
        >>> import torch
        >>> ae = AutoEncoder(latent_dim=5).eval()
        >>> out = ae(torch.rand(2, 1, 28, 28))
        >>> out.shape, bool(out.min() >= 0), bool(out.max() <= 1)
        (torch.Size([2, 1, 28, 28]), True, True)
    """

    def __init__(self, latent_dim: int = 20) -> None:
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        self.latent_dim = latent_dim
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 64, 4, stride=2, padding=1),  # 28 -> 14
            nn.ReLU(),
            nn.Conv2d(64, 128, 4, stride=2, padding=1),  # 14 -> 7
            nn.BatchNorm2d(128),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(_FEATURES, 1024),
            nn.BatchNorm1d(1024),
            nn.ReLU(),
            nn.Linear(1024, latent_dim),
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, 1024),
            nn.BatchNorm1d(1024),
            nn.ReLU(),
            nn.Linear(1024, _FEATURES),
            nn.BatchNorm1d(_FEATURES),
            nn.ReLU(),
            nn.Unflatten(1, (128, 7, 7)),
            nn.ConvTranspose2d(128, 64, 4, stride=2, padding=1),  # 7 -> 14
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.ConvTranspose2d(64, 1, 4, stride=2, padding=1),  # 14 -> 28
            nn.Sigmoid(),  # pixels in [0, 1], like the data
        )

    def encode(self, images: Tensor) -> Tensor:
        """Latents ``u`` (N, latent_dim) of images (N, 1, 28, 28) with values in [0, 1]."""
        if images.ndim != 4 or tuple(images.shape[1:]) != IMAGE_SHAPE:
            raise ValueError(f"images must have shape (N, 1, 28, 28), got {tuple(images.shape)}")
        return self.encoder(images)

    def decode(self, u: Tensor) -> Tensor:
        """Images (N, 1, 28, 28) in [0, 1] from latents ``u`` (N, latent_dim)."""
        if u.ndim != 2 or u.shape[1] != self.latent_dim:
            raise ValueError(f"u must have shape (N, {self.latent_dim}), got {tuple(u.shape)}")
        return self.decoder(u)

    def forward(self, images: Tensor) -> Tensor:
        """Reconstructions of ``images``."""
        return self.decode(self.encode(images))


def to_unit_images(images: np.ndarray | Tensor) -> Tensor:
    """uint8 images (N, 28, 28) -> float32 tensor (N, 1, 28, 28) in [0, 1].

    Example:
        >>> import numpy as np
        >>> to_unit_images(np.full((2, 28, 28), 255, dtype=np.uint8)).amax().item()
        1.0
    """
    t = torch.as_tensor(np.asarray(images))
    if t.ndim != 3 or tuple(t.shape[1:]) != IMAGE_SHAPE[1:]:
        raise ValueError(f"images must have shape (N, 28, 28), got {tuple(t.shape)}")
    if t.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 (0..255), got {t.dtype}")
    return (t.float() / 255.0).unsqueeze(1)


def _metadata(config: Mapping[str, Any]) -> dict[str, Any]:
    """What a trained auto-encoder records and a load must match: its whole config section."""
    return {"model": "glf_autoencoder", **config, "latent_dim": int(config["latent_dim"])}


def load_autoencoder(
    path: str | os.PathLike, config_section: Mapping[str, Any], device: str | torch.device = "cpu"
) -> AutoEncoder:
    """Load a trained auto-encoder (eval mode) from its safetensors file.

    ``config_section`` is the ``latent.autoencoder`` config; every key of it must match what the
    file was trained under, else :class:`replicate.checkpoints.CheckpointMismatch` names the keys
    that differ.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "ae.safetensors"
        >>> save_autoencoder(path, AutoEncoder(latent_dim=3), {"latent_dim": 3})
        >>> load_autoencoder(path, {"latent_dim": 3}).training
        False
    """
    tensors = load_checkpoint(path, _metadata(config_section), device)
    model = AutoEncoder(int(config_section["latent_dim"])).to(device)
    restore_model(model, tensors)
    return model.eval()


def save_autoencoder(
    path: str | os.PathLike, model: AutoEncoder, config_section: Mapping[str, Any]
) -> None:
    """Save the auto-encoder's weights as safetensors with the settings
    :func:`load_autoencoder` checks (the ``latent.autoencoder`` config).

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "ae.safetensors"
        >>> save_autoencoder(path, AutoEncoder(latent_dim=3), {"latent_dim": 3})
        >>> load_autoencoder(path, {"latent_dim": 3}).latent_dim
        3
    """
    save_checkpoint(path, model_tensors(model), _metadata(config_section))


@torch.no_grad()
def encode_images(
    model: AutoEncoder, images: np.ndarray, batch_size: int = 1000, device: str = "cpu"
) -> np.ndarray:
    """Latents (N, latent_dim) float32 of uint8 images (N, 28, 28), in eval mode, in batches.

    Example:
        >>> import numpy as np
        >>> ae = AutoEncoder(latent_dim=4).eval()
        >>> encode_images(ae, np.zeros((3, 28, 28), dtype=np.uint8), batch_size=2).shape
        (3, 4)
    """
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        batch = to_unit_images(images[start : start + batch_size]).to(device)
        out.append(model.encode(batch).cpu())
    return torch.cat(out).numpy().astype(np.float32)


@torch.no_grad()
def reconstruction_error(
    model: AutoEncoder, images: np.ndarray, batch_size: int = 1000, device: str = "cpu"
) -> dict[str, float]:
    """Mean squared error and mean absolute error per pixel (in [0, 1] units), eval mode.

    Example:
        >>> import numpy as np
        >>> ae = AutoEncoder(latent_dim=4).eval()
        >>> sorted(reconstruction_error(ae, np.zeros((2, 28, 28), dtype=np.uint8)))
        ['mae', 'mse']
    """
    model.eval()
    sq, ab, count = 0.0, 0.0, 0
    for start in range(0, len(images), batch_size):
        batch = to_unit_images(images[start : start + batch_size]).to(device)
        diff = model(batch) - batch
        sq += float((diff**2).sum())
        ab += float(diff.abs().sum())
        count += diff.numel()
    return {"mse": sq / count, "mae": ab / count}


def autoencoder_training_setup(
    images: np.ndarray, config: Mapping[str, Any], seed: int, device: str | torch.device = "cpu"
) -> tuple[TrainingSetup, EpochBatches]:
    """The auto-encoder (initialised from ``seed``), its Adam, its per-pixel MSE step on shuffled
    batches of ``images`` (uint8 (N, 28, 28), held on the device), and the epochs' batches.

    Example:
        >>> imgs = np.zeros((10, 28, 28), np.uint8)
        >>> setup, batches = autoencoder_training_setup(imgs, {"latent_dim": 4, "batch_size": 4,
        ...                                             "lr": 1e-3}, seed=0)
        >>> batches.per_epoch  # 4 + 4 + a last batch of 2 (one row would be refused)
        3
    """
    device = torch.device(device)
    # Keep the last, partial batch only if it has >1 row: BatchNorm cannot train on one row.
    batches = EpochBatches(
        len(images), int(config["batch_size"]), seed, min_last_batch=2, device=device
    )
    torch.manual_seed(seed)
    model = AutoEncoder(int(config["latent_dim"])).to(device)
    optimizer = make_optimizer(model.parameters(), lr=float(config["lr"]))
    # On the device whole (MNIST's 60,000 images are 188 MB as float32): a batch is then one
    # gather there, not a copy from the host that waits for the GPU every iteration.
    data = to_unit_images(images).to(device)

    def inputs(i: int) -> dict[str, Tensor]:
        return {"batch": data[batches(i)]}

    def loss_terms(batch: Tensor) -> dict[str, Tensor]:
        return {"loss": torch.mean((model(batch) - batch) ** 2)}

    return TrainingSetup(model, optimizer, TrainingStep(inputs, loss_terms)), batches


def train_autoencoder(
    images: np.ndarray,
    config: Mapping[str, Any],
    seed: int,
    checkpoint_path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    progress_every: int = 50,
) -> tuple[AutoEncoder, dict[str, Any]]:
    """Train the auto-encoder on uint8 ``images`` (N, 28, 28) by per-pixel MSE.

    Args:
        images: the training images.
        config: the ``latent.autoencoder`` section (``latent_dim, epochs, batch_size, lr``).
        seed: seeds the initialisation and every epoch's shuffling.
        checkpoint_path: if given, the state is saved there after every epoch and at the end
            (for the caller to delete once the model is saved); a run finding a checkpoint of
            the same configuration resumes from it (one of another configuration is ignored,
            with a warning, and overwritten).
        device: where to train.
        progress_every: a progress line every this many iterations (0: none).

    Returns:
        The trained model (eval mode) and a summary (per-epoch mean loss, seconds, iterations).

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> imgs = rng.integers(0, 256, (16, 28, 28)).astype(np.uint8)
        >>> cfg = {"latent_dim": 4, "epochs": 1, "batch_size": 8, "lr": 1e-3}
        >>> model, summary = train_autoencoder(imgs, cfg, seed=0, progress_every=0)
        >>> len(summary["epoch_loss"])
        1
    """
    setup, batches = autoencoder_training_setup(images, config, seed, device)
    model, epochs = setup.model, int(config["epochs"])
    metadata = {
        **_metadata(config),
        "epochs": epochs,
        "batch_size": int(config["batch_size"]),
        "lr": float(config["lr"]),
        "seed": int(seed),
        "n_train": len(images),
    }
    begin = time.perf_counter()
    result = fit_epochs(
        setup,
        batches,
        epochs,
        seed=seed,
        name="auto-encoder",
        checkpoint_path=checkpoint_path,
        metadata=metadata,
        progress_every=progress_every,
    )
    summary = {
        "epoch_loss": result.segment_means(batches.per_epoch),
        "epochs": epochs,
        "resumed_after_epoch": result.resumed_at // batches.per_epoch,
        "iterations_run": result.iterations,
        "seconds": time.perf_counter() - begin,
        "seconds_per_iteration": result.seconds_per_iteration,
        "seconds_per_epoch": result.seconds_per_iteration * batches.per_epoch,
        "batches_per_epoch": batches.per_epoch,
    }
    return model.eval(), summary
