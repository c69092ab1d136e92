"""The linear-Gaussian pipeline stages: one call per Snakemake rule
(workflow/rules/linear_gaussian.smk), each reading the rule's inputs, calling the library and
writing its outputs; the thread pool comes from :func:`replicate.runtime.run_stage`. The models
are small (a run takes seconds on one core): they train on the CPU, whatever the device. The
figure stage imports its figure module itself: matplotlib and seaborn take about a second to
import, which every run would otherwise pay at its start.

Example:
    >>> import tempfile, pathlib
    >>> settings = {"forward": [[1.0, 0.5], [-0.3, 0.8]], "n_observations": 5, "n_samples": 50,
    ...             "training": {"n_train": 128, "n_validation": 32, "epochs": 2},
    ...             "network": {"n_blocks": 2, "hidden": 16}}
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "run.json"
    >>> row = run_linear_gaussian_model("ours_eps1s", 0.3, 0, settings, out)
    >>> read_json(out)["kl"] == row["kl"]
    True
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from replicate.experiments.linear_gaussian.evaluation import (
    METRICS,
    RUN_ORDER,
    run_model,
    sbibm_npe_check,
    sbibm_table,
    summary_table,
)
from replicate.files import read_json, write_json, write_table
from replicate.metrics import in_model_order, summarise

__all__ = [
    "linear_gaussian_table",
    "npe_sbibm_check",
    "plot_linear_gaussian_eps",
    "run_linear_gaussian_model",
]


def run_linear_gaussian_model(
    model: str,
    noise_std: float,
    seed: int,
    settings: Mapping[str, Any],
    output: str | os.PathLike,
) -> dict[str, Any]:
    """Train and score one model at one noise level and seed
    (:func:`~replicate.experiments.linear_gaussian.evaluation.run_model`); its row as JSON."""
    row = run_model(model, noise_std, seed, settings)
    write_json(output, row)
    return row


def linear_gaussian_table(
    run_paths: Sequence[str | os.PathLike],
    model_order: Sequence[str],
    csv_path: str | os.PathLike,
    md_path: str | os.PathLike,
) -> pd.DataFrame:
    """Mean and std over seeds of every metric per noise std and model (models in
    ``model_order``): the numbers as CSV, ``mean ± std`` cells as Markdown."""
    runs = in_model_order(pd.DataFrame([read_json(p) for p in run_paths]), model_order, RUN_ORDER)
    stats = summarise(runs, ["noise_std", "model"], METRICS)
    table = summary_table(runs, model_order)
    write_table(stats, csv_path, md_path, table.to_markdown(index=False, disable_numparse=True))
    return stats


def npe_sbibm_check(
    settings: Mapping[str, Any], csv_path: str | os.PathLike, md_path: str | os.PathLike
) -> pd.DataFrame:
    """sbi's NPE on sbibm's gaussian_linear task against sbibm's published C2ST
    (:func:`~replicate.experiments.linear_gaussian.evaluation.sbibm_npe_check` with
    ``settings``): every run as CSV, the table as Markdown."""
    runs = sbibm_npe_check(**settings)
    table = sbibm_table(runs)
    write_table(runs, csv_path, md_path, table.to_markdown(index=False, disable_numparse=True))
    return table


def plot_linear_gaussian_eps(
    csv_path: str | os.PathLike, png_path: str | os.PathLike, n_samples: int, data_dim: int
) -> None:
    """Rule plot_linear_gaussian_eps: the figure of
    :func:`~replicate.experiments.linear_gaussian.figures.figure_eps` from the table's CSV."""
    from replicate.experiments.linear_gaussian.figures import figure_eps
    from replicate.plots import save_figure

    save_figure(figure_eps(pd.read_csv(csv_path), n_samples, data_dim), png_path)
