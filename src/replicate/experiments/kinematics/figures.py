"""The figures of the inverse-kinematics experiment (E4).

- :func:`figure_posteriors`: for a few test observations y*, the arms drawn from each model's
  posterior beside the rejection-sampling reference (segments translucent, in the style of
  Kruse et al. 2021, the target marked), and below each, the end points those arms reach;
- :func:`figure_eps`: ours' posterior error and re-simulation error against ``eps``, with the
  INN, the cINN and the reference's own floor as lines.

Example:
    >>> from replicate.experiments.kinematics.problem import rejection_sample, sample_prior
    >>> g = torch.Generator().manual_seed(0)
    >>> y = forward(sample_prior(1, g))
    >>> draws = rejection_sample(y, 50, 0.05, g, batch_size=20_000).samples
    >>> fig = figure_posteriors(y, {"rejection": draws, "cinn": draws}, tolerance=0.05)
    >>> len(fig.axes)
    4
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.patches import Circle
from torch import Tensor

from replicate.experiments.kinematics.evaluation import (
    REFERENCE_MODEL,
)
from replicate.experiments.kinematics.problem import (
    forward,
    joint_positions,
)
from replicate.experiments.kinematics.settings import model_kind, ours_variant
from replicate.plots import use_style

__all__ = ["figure_eps", "figure_posteriors"]

# The segments' colours, base to hand (blues of tab20c, as Kruse et al.'s figures).
_SEGMENT_COLORS = ("#3182bd", "#6baed6", "#9ecae1")
# The arm's reach: the plotting window of every arm panel (x, y in the plane).
_ARM_X, _ARM_Y = (-0.35, 2.25), (-1.3, 1.3)
# Half-width of the end-point panels around y*, in units of the plane.
_END_WINDOW = 0.12
_TITLES = {
    REFERENCE_MODEL: "rejection (reference)",
    "inn": "INN",
    "cinn": "cINN",
    "npe": "NPE (sbi)",
}


def _title(name: str) -> str:
    if name in _TITLES:
        return _TITLES[name]
    variant, value = ours_variant(name)
    how = {"fixed": "eps =", "learned": "eps learned >=", "annealed": "eps annealed to"}[variant]
    return f"ours, {how} {value:g}"


def _ours(name: str, variant: str) -> bool:
    return (
        name != REFERENCE_MODEL and model_kind(name) == "ours" and ours_variant(name)[0] == variant
    )


def figure_posteriors(
    observations: Tensor,
    samples: Mapping[str, Tensor],
    tolerance: float,
    n_arms: int = 300,
) -> Figure:
    """Arms and end points of posterior samples, one column per model, two rows per observation.

    ``observations`` (N, 2); ``samples`` maps a model name to its samples (N, S, 4) (the first
    ``n_arms`` of each are drawn). The end-point panels show ``f(x)`` around y* with the
    reference's acceptance disc of radius ``tolerance``.
    """
    use_style()
    names = list(samples)
    n_obs = len(observations)
    fig = Figure(figsize=(2.4 * len(names), 4.6 * n_obs), layout="constrained")
    axes = fig.subplots(2 * n_obs, len(names), squeeze=False, height_ratios=[1.6, 1.0] * n_obs)
    for i, target in enumerate(np.asarray(observations, dtype=np.float64)):
        for j, name in enumerate(names):
            x = torch.as_tensor(samples[name][i], dtype=torch.float64)[:n_arms]
            finite = bool(torch.isfinite(x).all())
            arm_ax, end_ax = axes[2 * i, j], axes[2 * i + 1, j]
            if finite:
                points = joint_positions(x).numpy()
                for k, color in enumerate(_SEGMENT_COLORS):
                    segments = np.stack([points[:, k], points[:, k + 1]], axis=1)
                    arm_ax.add_collection(
                        LineCollection(segments, colors=color, alpha=0.08, linewidths=0.8)
                    )
                ends = forward(x).numpy()
                end_ax.scatter(ends[:, 0], ends[:, 1], s=3, color="#08519c", alpha=0.5, lw=0)
            else:
                arm_ax.text(
                    0.5, 0.5, "diverged", ha="center", va="center", transform=arm_ax.transAxes
                )
            arm_ax.axvline(0.0, ls=":", c="gray", lw=0.6)
            for ax in (arm_ax, end_ax):
                ax.plot(*target, marker="+", ms=10, mew=1.2, color="crimson", zorder=5)
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_aspect("equal")
            arm_ax.set_xlim(*_ARM_X)
            arm_ax.set_ylim(*_ARM_Y)
            end_ax.add_patch(Circle(target, tolerance, fill=False, ec="crimson", lw=0.6, ls="--"))
            end_ax.set_xlim(target[0] - _END_WINDOW, target[0] + _END_WINDOW)
            end_ax.set_ylim(target[1] - _END_WINDOW, target[1] + _END_WINDOW)
            if i == 0:
                arm_ax.set_title(_title(name), fontsize=9)
            if j == 0:
                arm_ax.set_ylabel(f"y* = ({target[0]:.2f}, {target[1]:.2f})\narms", fontsize=8)
                end_ax.set_ylabel(f"end points (±{_END_WINDOW})", fontsize=8)
    return fig


def figure_eps(table: pd.DataFrame) -> Figure:
    """Ours' MMD and re-simulation error against ``eps`` (mean +- std over seeds; a learned eps
    at its floor, an annealed one at its target, as markers), with the other models and the
    reference floor as horizontal lines; ``table`` is the metrics CSV."""
    use_style()
    fig = Figure(figsize=(9.0, 3.6), layout="constrained")
    axes = fig.subplots(1, 2)
    ours = table[table["model"].map(lambda m: _ours(m, "fixed"))]
    eps = ours["model"].map(lambda m: ours_variant(m)[1]).to_numpy()
    order = np.argsort(eps)
    others = [m for m in table["model"] if m == REFERENCE_MODEL or model_kind(m) != "ours"]
    # Learned and annealed eps: one marker each, at the floor / target eps it was given.
    markers = {
        "learned": ("s", "tab:purple", "ours, eps learned (at its floor)"),
        "annealed": ("^", "tab:red", "ours, eps annealed (at its target)"),
    }
    styles = {
        REFERENCE_MODEL: ("k", ":"),
        "inn": ("tab:orange", "--"),
        "cinn": ("tab:green", "-."),
        "npe": ("tab:brown", (0, (5, 1, 1, 1))),
    }
    for ax, key, label in (
        (axes[0], "mmd", "posterior MMD$^2$ to the reference"),
        (axes[1], "resimulation_error", "re-simulation error $E\\|f(x) - y^*\\|^2$"),
    ):
        mean, std = ours[f"{key}_mean"].to_numpy()[order], ours[f"{key}_std"].to_numpy()[order]
        ax.errorbar(
            eps[order],
            mean,
            yerr=np.nan_to_num(std),
            marker="o",
            capsize=3,
            color="tab:blue",
            label="ours, eps fixed",
        )
        for variant, (marker, color, marker_label) in markers.items():
            rows = table[table["model"].map(lambda m, v=variant: _ours(m, v))]
            if len(rows):
                ax.errorbar(
                    rows["model"].map(lambda m: ours_variant(m)[1]),
                    rows[f"{key}_mean"],
                    yerr=np.nan_to_num(rows[f"{key}_std"].to_numpy()),
                    marker=marker,
                    ls="none",
                    capsize=3,
                    color=color,
                    label=marker_label,
                )
        for name in others:
            row = table[table["model"] == name].iloc[0]
            color, ls = styles.get(name, ("gray", "-"))
            ax.axhline(row[f"{key}_mean"], color=color, ls=ls, lw=1.2, label=_title(name))
        if key == "resimulation_error":
            # An ideal model with noise eps on each of 2 coordinates: E||f(x) - y*||^2 = 2 eps^2.
            grid = np.geomspace(eps.min(), eps.max(), 50)
            ax.plot(
                grid,
                2 * grid**2,
                color="tab:blue",
                lw=0.8,
                alpha=0.5,
                ls="--",
                label="2 eps$^2$ (ideal)",
            )
        ax.set_xscale("log")
        # The unbiased MMD^2 of the floor is about 0 and may be negative: linear axis for it.
        ax.set_yscale("log" if key == "resimulation_error" else "linear")
        ax.set_xlabel("eps (noise on the observation output)")
        ax.set_ylabel(label)
    axes[1].legend(fontsize=8)
    return fig
