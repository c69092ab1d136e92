"""Every figure of the pipeline shares one look: :func:`use_style`, and :func:`save_figure`, which
writes a PNG (for the report) and a PDF (for papers) atomically.

The Gaussian-mixture figures (paper Figures 5.1 and 5.2) are drawn from plain arrays, so the same
functions plot samples read back from ``results/gmm/samples/*.csv`` or straight from a model.

Example:
    >>> import tempfile, pathlib, numpy as np
    >>> use_style()
    >>> rng = np.random.default_rng(0)
    >>> xy, labels = rng.normal(size=(50, 2)), rng.integers(0, 8, 50)
    >>> fig = figure_gmm(xy, labels, xy, labels, n_labels=8, title="demo")
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "demo.png"
    >>> save_figure(fig, out)
    >>> sorted(p.name for p in out.parent.iterdir())
    ['demo.pdf', 'demo.png']
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # rules run headless; never try to open a window

import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from replicate.files import atomic_path  # noqa: E402

__all__ = [
    "GMM_LIMIT",
    "CurvePanel",
    "Panel",
    "figure_gmm",
    "figure_panels",
    "figure_training_curves",
    "label_colors",
    "mark_diverged",
    "save_figure",
    "scatter_labels",
    "use_style",
]

# Figure 5.1 of the paper (and the INN reference code) shows the square [-3, 3]^2.
GMM_LIMIT = 3.0


def use_style() -> None:
    """Apply the shared seaborn style (paper context, white ticks, embedded TrueType in PDFs).

    Example:
        >>> use_style()
        >>> import matplotlib
        >>> matplotlib.rcParams["pdf.fonttype"]
        42
    """
    sns.set_theme(
        context="paper",
        style="ticks",
        font_scale=1.0,
        rc={
            "figure.dpi": 100,
            "savefig.dpi": 200,
            "savefig.bbox": "tight",
            # Type 42 keeps PDF text editable and avoids Type 3 fonts that journals reject.
            "pdf.fonttype": 42,
            "ps.fonttype": 42,
            "axes.titlesize": 10,
            "axes.labelsize": 9,
            "legend.fontsize": 8,
        },
    )


def label_colors(n_labels: int) -> list[tuple[float, float, float]]:
    """One fixed colour per label (tab10 without its grey, kept for the mode rings), the same in
    every figure.

    Example:
        >>> len(label_colors(8)), label_colors(4) == label_colors(8)[:4]
        (8, True)
    """
    if not 1 <= n_labels <= 9:
        raise ValueError(f"label_colors supports 1..9 labels, got {n_labels}")
    tab10 = list(sns.color_palette("tab10", 10))
    return [tab10[i] for i in (0, 1, 2, 3, 4, 5, 6, 8, 9)][:n_labels]


def save_figure(fig: Figure, png_path: str | os.PathLike) -> None:
    """Write ``fig`` to ``png_path`` and beside it as ``.pdf``, each atomically; closes ``fig``.

    Atomic writes mean a killed rule never leaves a half-written figure that Snakemake would take
    as finished.

    Example:
        >>> import tempfile, pathlib
        >>> fig, ax = plt.subplots()
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "sub" / "f.png"
        >>> save_figure(fig, out)
        >>> out.exists(), out.with_suffix(".pdf").exists()
        (True, True)
    """
    png_path = Path(png_path)
    if png_path.suffix.lower() != ".png":
        raise ValueError(f"save_figure wants a .png path (the PDF goes beside it), got {png_path}")
    try:
        for path, fmt in ((png_path, "png"), (png_path.with_suffix(".pdf"), "pdf")):
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=fmt)
    finally:
        plt.close(fig)


def _square(ax: Axes, limit: float) -> None:
    ax.set_xlim(-limit, limit)
    ax.set_ylim(-limit, limit)
    ax.set_aspect("equal")
    ax.set_xticks(np.arange(-limit, limit + 1e-9, 1.0))
    ax.set_yticks(np.arange(-limit, limit + 1e-9, 1.0))


def scatter_labels(
    ax: Axes,
    xy: np.ndarray,
    labels: np.ndarray,
    n_labels: int,
    *,
    title: str = "",
    limit: float = GMM_LIMIT,
    circles: np.ndarray | None = None,
    radius: float | None = None,
    size: float = 2.0,
) -> None:
    """Scatter 2-d points coloured by integer label on the square [-limit, limit]^2.

    ``circles`` (k, 2) with ``radius`` draws faint rings, e.g. the 3-std region of each true mode,
    so a reader sees where samples ought to land.

    Example:
        >>> fig, ax = plt.subplots()
        >>> scatter_labels(ax, np.zeros((3, 2)), np.array([0, 1, 2]), 8, title="t")
        >>> len(ax.collections)
        1
        >>> plt.close(fig)
    """
    xy, labels = np.asarray(xy, dtype=float), np.asarray(labels, dtype=int)
    if xy.ndim != 2 or xy.shape[1] != 2 or len(xy) != len(labels):
        raise ValueError(f"need xy (n, 2) and labels (n,), got {xy.shape} and {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= n_labels):
        raise ValueError(
            f"labels must lie in 0..{n_labels - 1}, got {labels.min()}..{labels.max()}"
        )
    colors = np.array(label_colors(n_labels))
    # Shuffle the drawing order so no label systematically hides another where they overlap.
    order = np.random.default_rng(0).permutation(len(xy))
    ax.scatter(
        xy[order, 0],
        xy[order, 1],
        c=colors[labels[order]] if len(xy) else None,
        s=size,
        linewidths=0,
        alpha=0.7,
        rasterized=True,  # keeps the PDF small with thousands of points
    )
    if circles is not None and radius is not None:
        for cx, cy in np.asarray(circles, dtype=float):
            ax.add_patch(
                plt.Circle((cx, cy), radius, fill=False, lw=0.6, ls="--", color="0.55", zorder=0)
            )
    _square(ax, limit)
    ax.set_title(title)


def mark_diverged(ax: Axes, title: str, message: str = "", limit: float = GMM_LIMIT) -> None:
    """An empty panel that says the run diverged (instead of crashing the figure).

    Example:
        >>> fig, ax = plt.subplots()
        >>> mark_diverged(ax, "inn_full", "NaN at iteration 12")
        >>> "diverged" in ax.texts[0].get_text()
        True
        >>> plt.close(fig)
    """
    text = "diverged"
    if message:
        # Long exception texts would overflow the panel; the first sentence says enough.
        short = textwrap.shorten(message.split(". ")[0], 90, placeholder="...")
        text = "\n".join([text, *textwrap.wrap(short, 30)])
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="firebrick")
    _square(ax, limit)
    ax.set_title(title)


def _label_legend(fig: Figure, n_labels: int, title: str = "label") -> None:
    colors = label_colors(n_labels)
    handles = [
        Line2D([], [], marker="o", ls="", color=colors[k], markersize=5, label=str(k))
        for k in range(n_labels)
    ]
    # "outside" places the legend in its own column of the constrained layout, beside the panels.
    fig.legend(handles=handles, title=title, loc="outside right center", frameon=False)


def figure_gmm(
    test_xy: np.ndarray | None,
    predicted: np.ndarray | None,
    samples_xy: np.ndarray | None,
    sample_labels: np.ndarray | None,
    n_labels: int,
    *,
    title: str = "",
    circles: np.ndarray | None = None,
    radius: float | None = None,
    diverged_message: str | None = None,
) -> Figure:
    """Paper Figure 5.1: left, test points coloured by the label the forward pass predicts; right,
    posterior samples for every label coloured by the requested label.

    Pass ``diverged_message`` (and ``None`` arrays) for a run that diverged: both panels say so.

    Example:
        >>> fig = figure_gmm(None, None, None, None, 8, diverged_message="NaN loss")
        >>> [ax.texts[0].get_text().split()[0] for ax in fig.axes]
        ['diverged', 'diverged']
        >>> plt.close(fig)
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(7.0, 3.6), layout="constrained")
    left_title = "forward pass: predicted label"
    right_title = "backward pass: samples of p(x | y)"
    if diverged_message is not None:
        mark_diverged(left, left_title, diverged_message)
        mark_diverged(right, right_title, diverged_message)
    else:
        kw = {"circles": circles, "radius": radius}
        scatter_labels(left, test_xy, predicted, n_labels, title=left_title, **kw)
        scatter_labels(right, samples_xy, sample_labels, n_labels, title=right_title, **kw)
    left.set_xlabel("$x_1$")
    right.set_xlabel("$x_1$")
    left.set_ylabel("$x_2$")
    if title:
        fig.suptitle(title)
    _label_legend(fig, n_labels)
    return fig


@dataclass
class Panel:
    """One panel of :func:`figure_panels`: samples and their labels, or ``None`` if it diverged.

    Example:
        >>> Panel("ours", None, None, diverged_message="NaN").diverged
        True
    """

    title: str
    xy: np.ndarray | None
    labels: np.ndarray | None
    diverged_message: str | None = None

    @property
    def diverged(self) -> bool:
        return self.diverged_message is not None or self.xy is None


def figure_panels(
    panels: Sequence[Panel],
    n_labels: int,
    *,
    title: str = "",
    circles: np.ndarray | None = None,
    radius: float | None = None,
) -> Figure:
    """Paper Figure 5.2: posterior samples of several models side by side, one panel each.

    Example:
        >>> xy, lab = np.zeros((4, 2)), np.arange(4)
        >>> fig = figure_panels([Panel("a", xy, lab), Panel("b", None, None, "NaN")], 8)
        >>> len(fig.axes), fig.axes[1].texts[0].get_text().startswith("diverged")
        (2, True)
        >>> plt.close(fig)
    """
    if not panels:
        raise ValueError("figure_panels needs at least one panel")
    fig, axes = plt.subplots(
        1, len(panels), figsize=(2.9 * len(panels) + 0.6, 3.3), layout="constrained"
    )
    axes = np.atleast_1d(axes)
    for ax, panel in zip(axes, panels, strict=True):
        if panel.diverged:
            mark_diverged(ax, panel.title, panel.diverged_message or "")
        else:
            scatter_labels(
                ax,
                panel.xy,
                panel.labels,
                n_labels,
                title=panel.title,
                circles=circles,
                radius=radius,
            )
        ax.set_xlabel("$x_1$")
    axes[0].set_ylabel("$x_2$")
    if title:
        fig.suptitle(title)
    _label_legend(fig, n_labels, title="requested\nlabel")
    return fig


@dataclass
class CurvePanel:
    """One model's training curves: each term against the step, one line per seed.

    Attributes:
        title: the panel's title.
        steps: per seed, the step of each recorded value (iteration or epoch).
        terms: term name -> per seed, its values (aligned with ``steps``).
        log_scale: draw the values on a log axis (terms that are positive and span decades).
        marker: a step to mark with a dashed vertical line (e.g. where a weight ramp reaches 1),
            and ``marker_label`` its legend text.
        diverged: per seed, the step where the run diverged, or None.
        ylim: the value axis's range; None for matplotlib's choice.
    """

    title: str
    steps: Sequence[np.ndarray]
    terms: dict[str, Sequence[np.ndarray]]
    log_scale: bool = False
    marker: float | None = None
    marker_label: str = ""
    diverged: Sequence[float | None] = ()
    ylim: tuple[float, float] | None = None


def figure_training_curves(
    panels: Sequence[CurvePanel], *, title: str = "", xlabel: str = "iteration", ncols: int = 5
) -> Figure:
    """Training curves of several models, a panel each, from their recorded loss histories.

    Every term has one colour; each seed is one line of it. A diverged run ends in a red cross
    at the step where it diverged.

    Example:
        >>> steps = [np.arange(5), np.arange(3)]
        >>> panel = CurvePanel("m", steps, {"loss": [np.ones(5), np.ones(3)]}, diverged=[None, 2])
        >>> fig = figure_training_curves([panel])
        >>> len(fig.axes[0].lines)  # two seeds' losses, the divergence's line and its cross
        4
        >>> plt.close(fig)
    """
    if not panels:
        raise ValueError("figure_training_curves needs at least one panel")
    ncols = min(ncols, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3.2 * ncols, 2.7 * nrows), layout="constrained", squeeze=False
    )
    names = list(dict.fromkeys(name for panel in panels for name in panel.terms))
    colors = dict(zip(names, sns.color_palette("colorblind", len(names)), strict=True))
    for ax, panel in zip(axes.flat, panels, strict=False):
        for name, per_seed in panel.terms.items():
            for k, (steps, values) in enumerate(zip(panel.steps, per_seed, strict=True)):
                ax.plot(
                    steps,
                    values,
                    color=colors[name],
                    lw=0.8,
                    alpha=0.8,
                    label=name if k == 0 else None,
                )
        ends = [step for step in panel.diverged if step is not None]
        for k, step in enumerate(ends):  # one legend entry for all diverged seeds
            ax.axvline(step, color="red", lw=0.8, ls=":")
            label = "diverged" if k == 0 else None
            ax.plot([step], [ax.get_ylim()[1]], "x", color="red", ms=8, label=label)
        if panel.marker is not None:
            ax.axvline(panel.marker, color="0.4", lw=0.8, ls="--", label=panel.marker_label)
        if panel.log_scale:
            ax.set_yscale("log")
        if panel.ylim is not None:
            ax.set_ylim(*panel.ylim)
        ax.set_title(panel.title)
        ax.set_xlabel(xlabel)
        ax.legend(loc="upper right", frameon=False)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return fig
