"""The linear-Gaussian check's figure: how close ours comes to the exact posterior as a function
of ``eps / s``, beside the learned eps and sbi's NPE.

Example:
    >>> stats = pd.DataFrame({
    ...     "noise_std": [0.1] * 4, "model": ["ours_eps0.3s", "ours_eps1s", "ours_learned", "npe"],
    ...     "eps_over_noise_mean": [0.3, 1.0, 1.05, float("nan")],
    ...     "eps_over_noise_std": [0.0, 0.0, 0.02, float("nan")],
    ...     "kl_mean": [1.4, 0.04, 0.037, 0.1], "kl_std": [0.6, 0.02, 0.004, 0.05],
    ...     "std_ratio_mean": [0.8, 1.0, 1.05, 1.06], "std_ratio_std": [0.7, 0.01, 0.02, 0.04]})
    >>> fig = figure_eps(stats, n_samples=1000, data_dim=2)
    >>> [ax.get_xlabel() for ax in fig.axes]
    ['eps / s (s: the noise std of y)', 'eps / s (s: the noise std of y)']
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from replicate.experiments.linear_gaussian.settings import model_variant
from replicate.plots import label_colors, use_style

__all__ = ["figure_eps"]


def figure_eps(stats: pd.DataFrame, n_samples: int, data_dim: int) -> Figure:
    """Two panels against ``eps / s`` (log axis), one colour per noise std ``s``: the KL of the
    samples to the exact posterior and the samples' spread over the exact one, mean ± std over
    seeds. Ours with a fixed eps as a line; the learned eps as a marker where it settled (its
    std over seeds as the horizontal bar); sbi's NPE as a dashed horizontal line (dash-dotted
    with a configured batch). The KL panel
    also shows the floor that ``n_samples`` exact samples reach (about d(d+3) / (4 n)), the
    spread panel the right spread, 1. ``stats``: the table's CSV (mean and std columns)."""
    use_style()
    fig = Figure(figsize=(9.0, 3.6), layout="constrained")
    axes = fig.subplots(1, 2)
    variants = stats["model"].map(lambda m: model_variant(m)[0])
    noise_levels = sorted(stats["noise_std"].unique())
    colors = dict(zip(noise_levels, label_colors(len(noise_levels)), strict=True))
    for ax, key, label in (
        (axes[0], "kl", "KL of the samples to the exact posterior"),
        (axes[1], "std_ratio", "spread of the samples / exact spread"),
    ):
        for s, color in colors.items():
            at_s = stats["noise_std"] == s
            fixed = stats[at_s & (variants == "fixed")].sort_values("eps_over_noise_mean")
            ax.errorbar(
                fixed["eps_over_noise_mean"],
                fixed[f"{key}_mean"],
                yerr=np.nan_to_num(fixed[f"{key}_std"].to_numpy()),
                marker="o",
                capsize=3,
                color=color,
                label=f"ours, eps fixed (s = {s:g})",
            )
            for _, row in stats[at_s & (variants == "learned")].iterrows():
                ax.errorbar(
                    row["eps_over_noise_mean"],
                    row[f"{key}_mean"],
                    xerr=np.nan_to_num(row["eps_over_noise_std"]),
                    yerr=np.nan_to_num(row[f"{key}_std"]),
                    marker="s",
                    ms=7,
                    mfc="none",
                    capsize=3,
                    ls="none",
                    color=color,
                    label=f"ours, eps learned (s = {s:g})",
                )
            for _, row in stats[at_s & (variants == "npe")].iterrows():
                batch = model_variant(row["model"])[1]
                ax.axhline(
                    row[f"{key}_mean"],
                    color=color,
                    ls="--" if batch is None else "-.",
                    lw=1.0,
                    label=f"sbi NPE{'' if batch is None else f', batch {batch}'} (s = {s:g})",
                )
        if key == "kl":
            floor = data_dim * (data_dim + 3) / (4 * n_samples)
            ax.axhline(floor, color="k", ls=":", lw=1.0)
            ax.annotate(
                f"{n_samples} exact samples",
                (0.02, floor),
                xycoords=("axes fraction", "data"),
                xytext=(0, 3),
                textcoords="offset points",
                fontsize=7,
            )
            ax.set_yscale("log")
        else:
            ax.axhline(1.0, color="k", ls=":", lw=1.0, label="exact")
            ax.set_yscale("log")
        ax.set_xscale("log")
        ax.set_xlabel("eps / s (s: the noise std of y)")
        ax.set_ylabel(label)
    axes[1].legend(fontsize=7)
    return fig
