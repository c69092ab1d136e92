"""The figures of E3: Figure 5.3 (samples by class), Figure 5.4 (one z per row, the label varied),
the auto-encoder's reconstructions and the training curves, each a matplotlib figure built from
arrays (the stages load and save).

Example:
    >>> import numpy as np
    >>> fig = figure_samples_by_class(np.zeros((20, 28, 28), np.uint8), np.arange(20) % 10, 2,
    ...                               "mnist")
    >>> len(fig.axes)
    1
    >>> plt.close(fig)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # before pyplot: figures are written to files, never shown

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from replicate.experiments.latent.evaluation import DATASET_NAMES  # noqa: E402
from replicate.experiments.latent.models import N_CLASSES  # noqa: E402
from replicate.plots import CurvePanel, figure_training_curves  # noqa: E402

__all__ = [
    "figure_image_grid",
    "figure_latent_training",
    "figure_reconstructions",
    "figure_samples_by_class",
    "figure_style",
]


def _name(dataset: str) -> str:
    return DATASET_NAMES.get(dataset, dataset)


def figure_image_grid(
    grid: np.ndarray,
    row_labels: Sequence[str] | None = None,
    title: str = "",
    col_labels: Sequence[str] | None = None,
) -> Figure:
    """A matplotlib figure of a (rows, cols, 28, 28) uint8 image grid, no gaps, grey.

    Example:
        >>> import numpy as np
        >>> fig = figure_image_grid(np.zeros((2, 3, 28, 28), np.uint8), ["a", "b"])
        >>> len(fig.axes)
        1
        >>> plt.close(fig)
    """
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


def figure_samples_by_class(
    images: np.ndarray, labels: np.ndarray, n_per_class: int, dataset: str
) -> Figure:
    """Figure 5.3: one row per class of its first ``n_per_class`` generated images.

    Example:
        >>> figure_samples_by_class(np.zeros((10, 28, 28), np.uint8), np.arange(10), 2, "mnist")
        Traceback (most recent call last):
        ...
        ValueError: fewer than 2 samples of some class
    """
    grid = [images[labels == k][:n_per_class] for k in range(N_CLASSES)]
    if min(len(row) for row in grid) < n_per_class:
        raise ValueError(f"fewer than {n_per_class} samples of some class")
    return figure_image_grid(
        np.stack(grid),
        [str(k) for k in range(N_CLASSES)],
        f"{_name(dataset)}: samples conditioned on the label (row)",
    )


def figure_style(grid: np.ndarray, dataset: str) -> Figure:
    """Figure 5.4: rows of one fixed z each (``grid``: (rows, classes, 28, 28)), the label
    varied 0..9 along the row."""
    return figure_image_grid(
        grid,
        [f"z{r + 1}" for r in range(len(grid))],
        f"{_name(dataset)}: fixed z per row, label 0-9 along the row",
        col_labels=[str(k) for k in range(N_CLASSES)],
    )


def figure_reconstructions(originals: np.ndarray, reconstructions: np.ndarray, dataset: str):
    """Test originals (top row) above their reconstructions, uint8 (N, 28, 28) each."""
    return figure_image_grid(
        np.stack([originals, reconstructions]),
        ["original", "reconstruction"],
        f"{_name(dataset)}: auto-encoder on test images",
    )


def figure_latent_training(
    autoencoder_loss: Sequence[float], runs: Mapping[str, Sequence[Sequence[float]]], dataset: str
) -> Figure:
    """The per-epoch training losses of the auto-encoder and, per model (``ours``, ``cinn``),
    of every seed's run (``runs[model]``: one list of epoch losses per seed)."""

    def epochs(losses: Sequence[float]) -> np.ndarray:
        return np.arange(1, len(losses) + 1)

    panels = [
        CurvePanel(
            "auto-encoder (seeds[0])",
            [epochs(autoencoder_loss)],
            {"reconstruction MSE / pixel": [np.asarray(autoencoder_loss)]},
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
    return figure_training_curves(
        panels,
        title=f"{_name(dataset)}: training losses per epoch, "
        f"{max(len(v) for v in runs.values()) if runs else 0} seed(s)",
        xlabel="epoch",
    )
