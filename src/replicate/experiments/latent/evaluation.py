"""Scoring E3 (SPEC E3; Figures 5.3, 5.4, Table 1): test accuracy of the forward pass next to the
paper's, generated images, and the table of the judges' metrics
(:mod:`replicate.experiments.latent.judges`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from replicate.experiments.latent.autoencoder import AutoEncoder
from replicate.experiments.latent.models import (
    N_CLASSES,
    LatentCINN,
    LatentFlow,
)
from replicate.metrics import accuracy, summarise

__all__ = [
    "CHANCE_ACCURACY",
    "PAPER_ACCURACY",
    "TABLE_METRICS",
    "decode_to_uint8",
    "evaluate_latent_flow",
    "figure_image_grid",
    "latent_metrics_markdown",
    "latent_metrics_table",
    "sample_images",
    "style_images",
    "table1",
]


# Table 1 of the paper: test accuracy of the forward pass.
PAPER_ACCURACY = {"mnist": 0.984, "fashion_mnist": 0.901}


DATASET_NAMES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}


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
        "accuracy": accuracy(torch.cat(scores).numpy(), y.cpu().numpy()),
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
    flow: LatentFlow | LatentCINN, autoencoder: AutoEncoder, n_per_class: int, seed: int
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

    Columns ``dataset, accuracy_mean, accuracy_std, n_seeds, paper_accuracy``; mean and sample
    std over seeds as every table here computes them (:func:`replicate.metrics.summarise`: the std
    of one seed is NaN, undefined).

    Example:
        >>> table1({"mnist": [0.98, 0.99]}).round(4).to_dict("records")[0]["accuracy_mean"]
        0.985
    """
    empty = [dataset for dataset, accuracies in evaluations.items() if len(accuracies) == 0]
    if empty:
        raise ValueError(f"no accuracies for {', '.join(empty)}")
    frame = pd.DataFrame(
        [
            {"dataset": dataset, "accuracy": float(a)}
            for dataset, accuracies in evaluations.items()
            for a in accuracies
        ]
    )
    table = summarise(frame, ["dataset"], ["accuracy"]).drop(columns=["n_diverged"])
    table["paper_accuracy"] = [PAPER_ACCURACY.get(d, float("nan")) for d in table["dataset"]]
    return table


CHANCE_ACCURACY = 1.0 / N_CLASSES


MODEL_NAMES = {"ours": "ours (forward pass)", "cinn": "cINN (Bayes' rule)"}


# -- the metrics table ------------------------------------------------------------------------
TABLE_METRICS = ["test_accuracy", "sample_accuracy", "frechet_distance", "label_probe_accuracy"]


def latent_metrics_table(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Mean and sample std (ddof=1) over seeds of every metric, one row per (dataset, model).

    Each record has ``dataset``, ``model`` and the metrics of :data:`TABLE_METRICS` (NaN where a
    model has none, e.g. the reference rows have no test accuracy). Columns: ``dataset, model,
    <metric>_mean, <metric>_std ..., chance_accuracy, n_seeds``.

    Example:
        >>> recs = [{"dataset": "mnist", "model": "ours", "test_accuracy": a,
        ...          "sample_accuracy": 0.9, "frechet_distance": 1.0,
        ...          "label_probe_accuracy": 0.1} for a in (0.97, 0.99)]
        >>> row = latent_metrics_table(recs).round(4).to_dict("records")[0]
        >>> row["test_accuracy_mean"], row["test_accuracy_std"], row["n_seeds"]
        (0.98, 0.0141, 2)
    """

    if not records:
        raise ValueError("no records for the latent metrics table")
    frame = pd.DataFrame([dict(r) for r in records])
    for column in TABLE_METRICS:
        if column not in frame:
            frame[column] = np.nan
    table = summarise(frame, ["dataset", "model"], TABLE_METRICS)
    table = table.drop(columns=["n_diverged"])
    table.insert(len(table.columns) - 1, "chance_accuracy", CHANCE_ACCURACY)
    return table


def latent_metrics_markdown(table: pd.DataFrame) -> str:
    """The table with ``mean +- std`` cells (``-`` where a model has no such number)."""
    from replicate.metrics import mean_std_cells

    shown = table[["dataset", "model"]].copy()
    for metric in TABLE_METRICS:
        mean, std = table[f"{metric}_mean"], table[f"{metric}_std"]
        digits = 2 if metric == "frechet_distance" else 4
        shown[metric] = mean_std_cells(mean, std, digits, missing="-")
    shown["chance_accuracy"] = table["chance_accuracy"]
    shown["n_seeds"] = table["n_seeds"]
    return shown.to_markdown(index=False, floatfmt=".2f") + "\n"
