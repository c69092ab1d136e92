"""The paper's conditional flow in the auto-encoder's latent space (SPEC E3; Figures 5.3, 5.4,
Table 1).

:class:`LatentFlow` wraps :class:`replicate.conditional_flow.ConditionalFlow` unchanged:
``[u (20), x0 (10)] <-> [z (20), y_hat (10)]`` with label noise ``eps`` and padding noise
``sigma``. The one addition is an exact affine standardisation of ``u`` (train-set mean and std per
coordinate) before the flow, stored with the flow: the auto-encoder's latents have arbitrary
scale, and the flow's soft-clamped couplings train better on unit-scale inputs. ``sample`` and
``predict`` take and return latents in the raw encoder space, so callers never see it.

Example:
    >>> import torch
    >>> flow = LatentFlow(latent_dim=4, n_classes=3, n_blocks=2, hidden=8)
    >>> u = torch.randn(5, 4)
    >>> flow.predict(u).shape, flow.sample(torch.tensor([0, 1, 2])).shape
    (torch.Size([5, 3]), torch.Size([3, 4]))
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from replicate.autoencoder import AutoEncoder
from replicate.conditional_flow import ConditionalFlow
from replicate.data import load_images
from replicate.runtime import (
    load_checkpoint,
    save_checkpoint,
    use_threads,
    write_npz,
    write_table,
)
from replicate.standardization import Standardization
from replicate.training import EpochBatches, Resume, fit, make_optimizer

__all__ = [
    "PAPER_ACCURACY",
    "LatentFlow",
    "LatentModel",
    "classification_accuracy",
    "decode_to_uint8",
    "evaluate_latent_flow",
    "figure_image_grid",
    "load_latent_flow",
    "load_latent_model",
    "network_kwargs",
    "sample_images",
    "save_latent_model",
    "style_images",
    "table1",
    "train_latent_flow",
]

log = logging.getLogger("replicate")

N_CLASSES = 10
# Table 1 of the paper: test accuracy of the forward pass.
PAPER_ACCURACY = {"mnist": 0.984, "fashion_mnist": 0.901}
DATASET_NAMES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}


class LatentModel(nn.Module):
    """What every model on auto-encoder latents shares: integer labels as one-hot conditions,
    and ``u`` standardised by the training latents' mean and std (buffers, saved with the weights).

    Example:
        >>> import torch
        >>> model = LatentModel(latent_dim=3, n_classes=2)
        >>> model.set_standardisation(torch.full((3,), 5.0), torch.full((3,), 2.0))
        >>> model.standardise(torch.full((1, 3), 7.0)).tolist(), model.one_hot(torch.tensor([1]))
        ([[1.0, 1.0, 1.0]], tensor([[0., 1.]]))
    """

    def __init__(self, latent_dim: int, n_classes: int) -> None:
        super().__init__()
        self.latent_dim, self.n_classes = latent_dim, n_classes
        self.u_standardization = Standardization(latent_dim)

    @property
    def u_mean(self) -> Tensor:
        """The training latents' per-coordinate mean (the standardisation's shift)."""
        return self.u_standardization.shift

    @property
    def u_std(self) -> Tensor:
        """The training latents' per-coordinate std (the standardisation's scale)."""
        return self.u_standardization.scale

    def set_standardisation(self, mean: Tensor, std: Tensor) -> None:
        """Store the per-coordinate mean and std of the training latents."""
        if bool((std <= 0).any()):
            raise ValueError("every latent coordinate needs a positive std")
        self.u_standardization.set(mean, std)

    def standardise(self, u: Tensor) -> Tensor:
        """Raw latents -> the network's input space."""
        return self.u_standardization(u)

    def destandardise(self, x: Tensor) -> Tensor:
        """The network's input space -> raw latents (the inverse of :meth:`standardise`)."""
        return self.u_standardization.inverse(x)

    def one_hot(self, labels: Tensor) -> Tensor:
        """Integer labels (N,) -> one-hot float (N, n_classes) on the model's device."""
        if labels.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.n_classes):
            raise ValueError(f"labels must lie in 0..{self.n_classes - 1}")
        return torch.eye(self.n_classes, device=self.u_mean.device)[labels.to(self.u_mean.device)]


def save_latent_model(
    path: str | os.PathLike, model: LatentModel, metadata: Mapping[str, Any], seed: int
) -> None:
    """Save a latent model (weights, permutations, standardisation, seed) as safetensors."""
    save_checkpoint(path, {**model.state_dict(), "seed": torch.tensor(seed)}, metadata)


def load_latent_model(
    path: str | os.PathLike,
    build: Callable[[int, int], LatentModel],
    metadata: Callable[[int, int], Mapping[str, Any]],
    device: str | torch.device = "cpu",
) -> LatentModel:
    """Load what :func:`save_latent_model` wrote, in eval mode.

    The latent size and the seed (which picks the permutations) come from the file; ``build``
    and ``metadata`` turn them into the model and the configuration the file must match.
    """
    tensors = load_checkpoint(path, None, device)
    latent_dim = int(tensors["u_standardization.shift"].shape[0])
    seed = int(tensors["seed"])
    tensors = load_checkpoint(path, metadata(latent_dim, seed), device)
    model = build(latent_dim, seed)
    model.load_state_dict({k: v for k, v in tensors.items() if k != "seed"})
    return model.to(device).eval()


class LatentFlow(LatentModel):
    """The conditional flow on auto-encoder latents, with the latents' standardisation inside.

    Args:
        latent_dim: size of ``u`` (and of ``z``; the padding then has ``n_classes`` dims).
        n_classes: number of labels; the condition is the one-hot label.
        eps, sigma, n_blocks, hidden, subnet_layers, clamp, permutation_seed: passed to
            :class:`ConditionalFlow`.

    Example:
        >>> import torch
        >>> flow = LatentFlow(latent_dim=3, n_classes=2, n_blocks=1, hidden=4)
        >>> flow.predict(torch.randn(5, 3)).shape, flow.sample(torch.tensor([0, 1])).shape
        (torch.Size([5, 2]), torch.Size([2, 3]))
    """

    def __init__(
        self,
        latent_dim: int = 20,
        n_classes: int = N_CLASSES,
        eps: float = 0.1,
        sigma: float = 0.05,
        n_blocks: int = 4,
        hidden: int = 64,
        subnet_layers: int = 3,
        clamp: float = 2.0,
        permutation_seed: int = 0,
    ) -> None:
        super().__init__(latent_dim, n_classes)
        # D = latent_dim, M = n_classes, K = latent_dim: the padding has n_classes dims.
        self.flow = ConditionalFlow(
            data_dim=latent_dim,
            condition_dim=n_classes,
            latent_dim=latent_dim,
            eps=eps,
            sigma=sigma,
            n_blocks=n_blocks,
            hidden=hidden,
            subnet_layers=subnet_layers,
            clamp=clamp,
            permutation_seed=permutation_seed,
        )

    def nll(self, u: Tensor, labels: Tensor) -> Tensor:
        """Per-row training loss of raw latents ``u`` with integer ``labels`` (paper eq. 10).

        The standardisation's constant log-Jacobian is left out; it does not change gradients.
        """
        return self.flow.nll(self.standardise(u), self.one_hot(labels))

    @torch.no_grad()
    def predict(self, u: Tensor) -> Tensor:
        """Class scores ``y_hat`` (N, n_classes) from one forward pass; argmax is the class."""
        return self.flow.predict(self.standardise(u))

    @torch.no_grad()
    def encode(self, u: Tensor) -> Tensor:
        """The dummy variable ``z = f_z([u, 0])`` (N, latent_dim)."""
        return self.flow.encode(self.standardise(u))

    @torch.no_grad()
    def sample(self, labels: Tensor, z: Tensor | None = None) -> Tensor:
        """Raw latents ``u`` ~ p(u | label), one per entry of ``labels`` (LongTensor (N,)).

        Pass ``z`` (N, latent_dim) to fix the dummy variable (Figure 5.4); else z ~ N(0, I).
        """
        return self.destandardise(self.flow.sample(self.one_hot(labels), z=z))


def network_kwargs(config: Mapping[str, Any], latent_dim: int) -> dict[str, Any]:
    """The network settings every latent model takes, from a ``latent.flow`` config section.

    Example:
        >>> cfg = {"n_blocks": 4, "hidden": 64, "subnet_layers": 3, "clamp": 2.0}
        >>> network_kwargs(cfg, 20)["n_classes"]
        10
    """
    return {
        "latent_dim": latent_dim,
        "n_classes": N_CLASSES,
        "n_blocks": int(config["n_blocks"]),
        "hidden": int(config["hidden"]),
        "subnet_layers": int(config["subnet_layers"]),
        "clamp": float(config["clamp"]),
    }


def _flow_kwargs(config: Mapping[str, Any], latent_dim: int) -> dict[str, Any]:
    eps, sigma = float(config["eps"]), float(config["sigma"])
    return {**network_kwargs(config, latent_dim), "eps": eps, "sigma": sigma}


def _flow_metadata(config: Mapping[str, Any], latent_dim: int, seed: int) -> dict[str, Any]:
    # The seed picks the permutations, so it is part of what the weights mean.
    return {"model": "latent_conditional_flow", **_flow_kwargs(config, latent_dim), "seed": seed}


def load_latent_flow(
    path: str | os.PathLike,
    config_section: Mapping[str, Any],
    device: str | torch.device = "cpu",
) -> LatentFlow:
    """Load a trained :class:`LatentFlow` (eval mode) from ``flow_seed{seed}.safetensors``.

    ``config_section`` is the ``latent.flow`` config; the network keys must match the file's
    (else :class:`replicate.runtime.CheckpointMismatch`). Latent size and seed come from the file.

    Example:
        >>> import tempfile, pathlib, torch
        >>> cfg = {"n_blocks": 1, "hidden": 4, "subnet_layers": 2, "clamp": 2.0, "eps": 0.1,
        ...        "sigma": 0.05}
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "flow.safetensors"
        >>> save_latent_flow(path, LatentFlow(3, **{k: v for k, v in cfg.items()}), cfg, 3, 0)
        >>> load_latent_flow(path, cfg).sample(torch.tensor([1])).shape
        torch.Size([1, 3])
    """
    return load_latent_model(
        path,
        lambda latent_dim, seed: LatentFlow(
            **_flow_kwargs(config_section, latent_dim), permutation_seed=seed
        ),
        lambda latent_dim, seed: _flow_metadata(config_section, latent_dim, seed),
        device,
    )


def save_latent_flow(
    path: str | os.PathLike,
    model: LatentFlow,
    config: Mapping[str, Any],
    latent_dim: int,
    seed: int,
) -> None:
    """Save a :class:`LatentFlow` (weights, permutations, standardisation) as safetensors."""
    save_latent_model(path, model, _flow_metadata(config, latent_dim, seed), seed)


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
    device = torch.device(device)
    u = torch.as_tensor(np.asarray(train_u, dtype=np.float32))
    y = torch.as_tensor(np.asarray(train_y, dtype=np.int64))
    if u.ndim != 2 or len(u) != len(y):
        raise ValueError(f"train_u (N, d) and train_y (N,) disagree: {u.shape} vs {y.shape}")
    n, latent_dim = u.shape
    epochs = int(config["epochs"])
    batches = EpochBatches(n, int(config["batch_size"]), seed, device=device)

    torch.manual_seed(seed)
    model = LatentFlow(**_flow_kwargs(config, latent_dim), permutation_seed=seed).to(device)
    model.set_standardisation(u.mean(0).to(device), u.std(0).clamp_min(1e-6).to(device))
    optimizer = make_optimizer(model.parameters(), lr=float(config["lr"]))
    metadata = {
        **_flow_metadata(config, latent_dim, seed),
        "epochs": epochs,
        "batch_size": int(config["batch_size"]),
        "lr": float(config["lr"]),
        "n_train": n,
    }
    u, y = u.to(device), y.to(device)

    def step(i: int) -> dict[str, Tensor]:
        idx = batches(i)
        return {"loss": model.nll(u[idx], y[idx]).mean()}

    begin = time.perf_counter()
    result = fit(
        step,
        optimizer,
        epochs * batches.per_epoch,
        progress_every=progress_every,
        what="latent flow iteration",
        segment=batches.per_epoch,
        seed=seed,  # each epoch's padding noise comes from (seed, epoch)
        resume=Resume(checkpoint_path, model, metadata) if checkpoint_path else None,
    )
    summary = {
        "epoch_loss": result.segment_means(batches.per_epoch),
        "resumed_after_epoch": result.resumed_at // batches.per_epoch,
        "seconds": time.perf_counter() - begin,
        "seconds_per_iteration": result.seconds_per_iteration,
        "batches_per_epoch": batches.per_epoch,
    }
    return model.eval(), summary


def classification_accuracy(scores: np.ndarray | Tensor, labels: np.ndarray | Tensor) -> float:
    """Fraction of rows whose argmax score is the label (the paper's Table 1 measure).

    Example:
        >>> classification_accuracy([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], [0, 1, 1])
        0.6666666666666666
    """
    scores, labels = np.asarray(scores), np.asarray(labels)
    if scores.ndim != 2 or len(scores) != len(labels) or len(labels) == 0:
        raise ValueError(f"scores (N, C) and labels (N,) disagree: {scores.shape}, {labels.shape}")
    return float(np.mean(scores.argmax(axis=1) == labels))


@torch.no_grad()
def evaluate_latent_flow(
    model: LatentFlow,
    test_u: np.ndarray,
    test_y: np.ndarray,
    batch_size: int = 2000,
    seed: int = 0,
) -> dict[str, float]:
    """Test accuracy through the forward pass, and the mean test NLL of the padded latents.

    The NLL draws the padding noise of training; it comes from ``seed`` (the global generator is
    left as it was), so the same model gives the same numbers on every run.

    Example:
        >>> import numpy as np
        >>> flow = LatentFlow(latent_dim=3, n_blocks=1, hidden=4)
        >>> r = evaluate_latent_flow(flow, np.zeros((4, 3), np.float32), np.arange(4))
        >>> sorted(r)
        ['accuracy', 'n_test', 'nll']
    """
    device = model.u_mean.device
    u = torch.as_tensor(np.asarray(test_u, dtype=np.float32), device=device)
    y = torch.as_tensor(np.asarray(test_y, dtype=np.int64), device=device)
    scores, nll = [], []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, len(u), batch_size):
            ub, yb = u[start : start + batch_size], y[start : start + batch_size]
            scores.append(model.predict(ub).cpu())
            nll.append(model.nll(ub, yb).cpu())
    return {
        "accuracy": classification_accuracy(torch.cat(scores).numpy(), y.cpu().numpy()),
        "nll": float(torch.cat(nll).mean()),
        "n_test": len(u),
    }


@torch.no_grad()
def decode_to_uint8(autoencoder: AutoEncoder, u: Tensor, batch_size: int = 1000) -> np.ndarray:
    """Decode raw latents (N, d) to uint8 images (N, 28, 28).

    Example:
        >>> import torch
        >>> decode_to_uint8(AutoEncoder(3).eval(), torch.zeros(2, 3)).dtype
        dtype('uint8')
    """
    autoencoder.eval()
    device = next(autoencoder.parameters()).device
    out = []
    for start in range(0, len(u), batch_size):
        images = autoencoder.decode(u[start : start + batch_size].to(device))
        out.append((images[:, 0] * 255.0).round().clamp(0, 255).to(torch.uint8).cpu())
    return torch.cat(out).numpy()


@torch.no_grad()
def sample_images(
    flow: LatentFlow, autoencoder: AutoEncoder, n_per_class: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``n_per_class`` generated images of every class, class-major: rows of class 0 first.

    Returns uint8 images (10 * n_per_class, 28, 28) and int64 labels.

    Example:
        >>> images, labels = sample_images(LatentFlow(3, n_blocks=1, hidden=4),
        ...                                AutoEncoder(3), n_per_class=2, seed=0)
        >>> images.shape, labels.tolist()[:4]
        ((20, 28, 28), [0, 0, 1, 1])
    """
    torch.manual_seed(seed)
    labels = torch.arange(flow.n_classes).repeat_interleave(n_per_class)
    u = flow.sample(labels)
    return decode_to_uint8(autoencoder, u), labels.numpy().astype(np.int64)


@torch.no_grad()
def style_images(
    flow: LatentFlow, autoencoder: AutoEncoder, n_rows: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Figure 5.4's grid: each of ``n_rows`` rows shares one z, the label runs over the classes.

    Returns uint8 images (n_rows, n_classes, 28, 28) and the z used (n_rows, latent_dim).

    Example:
        >>> grid, z = style_images(LatentFlow(3, n_blocks=1, hidden=4), AutoEncoder(3), 2, 0)
        >>> grid.shape, z.shape
        ((2, 10, 28, 28), (2, 3))
    """
    torch.manual_seed(seed)
    k = flow.n_classes
    z = torch.randn(n_rows, flow.latent_dim, device=flow.u_mean.device)
    labels = torch.arange(k).repeat(n_rows)  # row-major: row r is labels 0..k-1
    u = flow.sample(labels, z=z.repeat_interleave(k, dim=0))
    images = decode_to_uint8(autoencoder, u).reshape(n_rows, k, 28, 28)
    return images, z.cpu().numpy()


def figure_image_grid(
    grid: np.ndarray,
    row_labels: Sequence[str] | None = None,
    title: str = "",
    col_labels: Sequence[str] | None = None,
):
    """A matplotlib figure of a (rows, cols, 28, 28) uint8 image grid, no gaps, grey.

    Example:
        >>> import numpy as np
        >>> fig = figure_image_grid(np.zeros((2, 3, 28, 28), np.uint8), ["a", "b"])
        >>> len(fig.axes)
        1
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = grid.shape[:2]
    mosaic = grid.transpose(0, 2, 1, 3).reshape(rows * 28, cols * 28)
    fig, ax = plt.subplots(figsize=(0.35 * cols + 0.6, 0.35 * rows + 0.4))
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    if col_labels is not None:
        ax.set_xticks(np.arange(cols) * 28 + 14, labels=list(col_labels))
        ax.tick_params(axis="x", length=0)
    else:
        ax.set_xticks([])
    if row_labels is not None:
        ax.set_yticks(np.arange(rows) * 28 + 14, labels=list(row_labels))
        ax.tick_params(axis="y", length=0)
    else:
        ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    if title:
        ax.set_title(title)
    return fig


def table1(evaluations: Mapping[str, Sequence[float]]) -> pd.DataFrame:
    """Table 1 from per-seed test accuracies: ``{dataset: [accuracy per seed]}``.

    Columns ``dataset, accuracy_mean, accuracy_std, n_seeds, paper_accuracy``; the std is the
    sample std over seeds (ddof=1; 0 for one seed).

    Example:
        >>> table1({"mnist": [0.98, 0.99]}).round(4).to_dict("records")[0]["accuracy_mean"]
        0.985
    """
    rows = []
    for dataset, accuracies in evaluations.items():
        acc = np.asarray(accuracies, dtype=float)
        if acc.size == 0:
            raise ValueError(f"no accuracies for {dataset}")
        rows.append(
            {
                "dataset": dataset,
                "accuracy_mean": float(acc.mean()),
                "accuracy_std": float(acc.std(ddof=1)) if acc.size > 1 else 0.0,
                "n_seeds": int(acc.size),
                "paper_accuracy": PAPER_ACCURACY.get(dataset, float("nan")),
            }
        )
    return pd.DataFrame(
        rows, columns=["dataset", "accuracy_mean", "accuracy_std", "n_seeds", "paper_accuracy"]
    )


# -- pipeline stages: one call per Snakemake rule ---------------------------------------------
def autoencoder_stage(
    data_dir: str | os.PathLike,
    dataset: str,
    latent_config: Mapping[str, Any],
    seed: int,
    model_path: str | os.PathLike,
    metrics_path: str | os.PathLike,
    checkpoint_path: str | os.PathLike,
    device: str = "cpu",
    threads: int | None = None,
) -> dict[str, Any]:
    """Rule ``train_autoencoder``: pretrain (resumably), save, log the test reconstruction error."""
    use_threads(threads)
    from replicate.autoencoder import run_autoencoder_stage
    from replicate.runtime import resolve_device

    train, _ = load_images(data_dir, dataset, "train", latent_config["n_train"])
    test, _ = load_images(data_dir, dataset, "test", latent_config["n_test"])
    return run_autoencoder_stage(
        train,
        test,
        latent_config["autoencoder"],
        seed,
        model_path,
        metrics_path,
        checkpoint_path,
        resolve_device(device),
    )


def encode_stage(
    data_dir: str | os.PathLike,
    dataset: str,
    latent_config: Mapping[str, Any],
    autoencoder_path: str | os.PathLike,
    latents_path: str | os.PathLike,
    device: str = "cpu",
    threads: int | None = None,
) -> None:
    """Rule ``encode_latents``: ``latents.npz`` with ``train_u, train_y, test_u, test_y``."""
    use_threads(threads)
    from replicate.autoencoder import encode_images, load_autoencoder
    from replicate.runtime import resolve_device

    dev = resolve_device(device)
    model = load_autoencoder(autoencoder_path, latent_config["autoencoder"], dev)
    arrays: dict[str, np.ndarray] = {}
    for split, n in (("train", latent_config["n_train"]), ("test", latent_config["n_test"])):
        images, labels = load_images(data_dir, dataset, split, n)
        arrays[f"{split}_u"] = encode_images(model, images, device=str(dev))
        arrays[f"{split}_y"] = labels
        log.info("encoded %d %s images of %s", len(images), split, dataset)
    write_npz(latents_path, **arrays)


def reconstruction_figure_stage(
    data_dir: str | os.PathLike,
    dataset: str,
    latent_config: Mapping[str, Any],
    autoencoder_path: str | os.PathLike,
    png_path: str | os.PathLike,
    n_images: int = 20,
) -> None:
    """Rule ``plot_reconstructions``: test originals (top row) above their reconstructions."""
    from replicate.autoencoder import load_autoencoder, to_unit_images
    from replicate.plots import save_figure, use_style

    model = load_autoencoder(autoencoder_path, latent_config["autoencoder"])
    images, _ = load_images(data_dir, dataset, "test", latent_config["n_test"])
    images = images[:n_images]
    with torch.no_grad():
        recon = model(to_unit_images(images))[:, 0]
    recon = (recon * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    use_style()
    fig = figure_image_grid(
        np.stack([images, recon]),
        ["original", "reconstruction"],
        f"{DATASET_NAMES.get(dataset, dataset)}: auto-encoder on test images",
    )
    save_figure(fig, png_path)


def flow_stage(
    latents_path: str | os.PathLike,
    latent_config: Mapping[str, Any],
    seed: int,
    model_path: str | os.PathLike,
    checkpoint_path: str | os.PathLike,
    device: str = "cpu",
    threads: int | None = None,
    history_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Rule ``train_latent_flow``: train one seed's flow on the training latents and save it;
    its per-epoch training NLL and timings go to ``history_path`` (JSON) when given."""
    use_threads(threads)
    from replicate.runtime import resolve_device, write_json

    with np.load(latents_path) as f:
        train_u, train_y = f["train_u"], f["train_y"]
    model, summary = train_latent_flow(
        train_u, train_y, latent_config["flow"], seed, checkpoint_path, resolve_device(device)
    )
    save_latent_flow(model_path, model, latent_config["flow"], train_u.shape[1], seed)
    if history_path is not None:
        write_json(history_path, {"model": "ours", "seed": seed, **summary})
    log.info("trained latent flow seed %d in %.1f s", seed, summary["seconds"])
    return summary


def evaluate_stage(
    latents_path: str | os.PathLike,
    flow_path: str | os.PathLike,
    latent_config: Mapping[str, Any],
    dataset: str,
    seed: int,
    json_path: str | os.PathLike,
) -> dict[str, Any]:
    """Rule ``evaluate_latent_flow``: test accuracy through the forward pass (Table 1), as JSON."""
    from replicate.runtime import write_json

    model = load_latent_flow(flow_path, latent_config["flow"])
    with np.load(latents_path) as f:
        test = evaluate_latent_flow(model, f["test_u"], f["test_y"], seed=seed)
        train = evaluate_latent_flow(model, f["train_u"], f["train_y"], seed=seed)
    result = {
        "dataset": dataset,
        "seed": seed,
        "accuracy": test["accuracy"],
        "test_nll": test["nll"],
        "n_test": test["n_test"],
        "train_accuracy": train["accuracy"],
        "train_nll": train["nll"],
        "paper_accuracy": PAPER_ACCURACY.get(dataset),
    }
    log.info(
        "%s seed %d: test accuracy %.4f (paper %s)",
        dataset,
        seed,
        test["accuracy"],
        PAPER_ACCURACY.get(dataset),
    )
    write_json(json_path, result)
    return result


def samples_stage(
    flow_path: str | os.PathLike,
    autoencoder_path: str | os.PathLike,
    latent_config: Mapping[str, Any],
    seed: int,
    samples_path: str | os.PathLike,
) -> None:
    """Rule ``sample_latent_flow``: ``n_eval_samples_per_class`` images per class, as npz."""
    from replicate.autoencoder import load_autoencoder

    flow = load_latent_flow(flow_path, latent_config["flow"])
    ae = load_autoencoder(autoencoder_path, latent_config["autoencoder"])
    images, labels = sample_images(flow, ae, int(latent_config["n_eval_samples_per_class"]), seed)
    write_npz(samples_path, images=images, labels=labels)
    log.info("wrote %d generated images (seed %d) to %s", len(images), seed, samples_path)


def fig5_3_stage(
    samples_path: str | os.PathLike, dataset: str, n_per_class: int, png_path: str | os.PathLike
) -> None:
    """Rule ``plot_fig5_3``: 10 rows (one per class) of the first ``n_per_class`` samples."""
    from replicate.plots import save_figure, use_style

    with np.load(samples_path) as f:
        images, labels = f["images"], f["labels"]
    grid = np.stack([images[labels == k][:n_per_class] for k in range(N_CLASSES)])
    if grid.shape[1] < n_per_class:
        raise ValueError(f"{samples_path} holds fewer than {n_per_class} samples per class")
    use_style()
    fig = figure_image_grid(
        grid,
        [str(k) for k in range(N_CLASSES)],
        f"{DATASET_NAMES.get(dataset, dataset)}: samples conditioned on the label (row)",
    )
    save_figure(fig, png_path)


def fig5_4_stage(
    flow_path: str | os.PathLike,
    autoencoder_path: str | os.PathLike,
    latent_config: Mapping[str, Any],
    dataset: str,
    seed: int,
    png_path: str | os.PathLike,
    images_path: str | os.PathLike,
) -> None:
    """Rule ``plot_fig5_4``: rows of one fixed z each, the label varied 0..9 along the row."""
    from replicate.autoencoder import load_autoencoder
    from replicate.plots import save_figure, use_style

    flow = load_latent_flow(flow_path, latent_config["flow"])
    ae = load_autoencoder(autoencoder_path, latent_config["autoencoder"])
    grid, z = style_images(flow, ae, int(latent_config["n_style_rows"]), seed)
    write_npz(images_path, images=grid, z=z)
    use_style()
    fig = figure_image_grid(
        grid,
        [f"z{r + 1}" for r in range(len(grid))],
        f"{DATASET_NAMES.get(dataset, dataset)}: fixed z per row, label 0-9 along the row",
        col_labels=[str(k) for k in range(N_CLASSES)],
    )
    save_figure(fig, png_path)


def training_curves_stage(
    autoencoder_metrics_path: str | os.PathLike,
    history_paths: Sequence[str | os.PathLike],
    dataset: str,
    png_path: str | os.PathLike,
) -> None:
    """Rule ``plot_training_latent``: per-epoch training losses of the auto-encoder and of every
    latent flow and cINN (one line per seed), read from what their training rules recorded."""
    from replicate.plots import CurvePanel, figure_training_curves, save_figure, use_style

    autoencoder = json.loads(Path(autoencoder_metrics_path).read_text())
    runs: dict[str, list[list[float]]] = {}
    for path in history_paths:
        history = json.loads(Path(path).read_text())
        runs.setdefault(history["model"], []).append(history["epoch_loss"])

    def epochs(losses: Sequence[float]) -> np.ndarray:
        return np.arange(1, len(losses) + 1)

    panels = [
        CurvePanel(
            "auto-encoder (seeds[0])",
            [epochs(autoencoder["epoch_loss"])],
            {"reconstruction MSE / pixel": [np.asarray(autoencoder["epoch_loss"])]},
            log_scale=True,
        )
    ]
    for model, title in (("ours", "ours (latent flow)"), ("cinn", "cINN")):
        if model in runs:
            losses = runs[model]
            panels.append(
                CurvePanel(
                    title, [epochs(v) for v in losses], {"NLL": list(map(np.asarray, losses))}
                )
            )
    use_style()
    fig = figure_training_curves(
        panels,
        title=f"{DATASET_NAMES.get(dataset, dataset)}: training losses per epoch, "
        f"{max(len(v) for v in runs.values()) if runs else 0} seed(s)",
        xlabel="epoch",
    )
    save_figure(fig, png_path)


def table1_stage(
    eval_paths: Sequence[str | os.PathLike],
    csv_path: str | os.PathLike,
    md_path: str | os.PathLike,
) -> pd.DataFrame:
    """Rule ``table1``: per-seed accuracy JSONs (grouped by their ``dataset``) -> CSV + Markdown.

    Example:
        >>> import json, tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> for seed, acc in enumerate([0.5, 0.7]):
        ...     text = json.dumps({"dataset": "mnist", "accuracy": acc})
        ...     _ = (d / f"{seed}.json").write_text(text)
        >>> table1_stage([d / "0.json", d / "1.json"], d / "t.csv", d / "t.md").n_seeds.tolist()
        [2]
    """
    import json

    accuracies: dict[str, list[float]] = {}
    for path in eval_paths:
        result = json.loads(Path(path).read_text())
        accuracies.setdefault(result["dataset"], []).append(float(result["accuracy"]))
    frame = table1(accuracies)
    write_table(frame, csv_path, md_path, frame.to_markdown(index=False, floatfmt=".4f"))
    log.info("Table 1:\n%s", frame.to_string(index=False))
    return frame
