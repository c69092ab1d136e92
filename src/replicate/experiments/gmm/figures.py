"""Figures 5.1 and 5.2 and the training curves of the Gaussian-mixture experiment, drawn from the
files the evaluation wrote (:mod:`replicate.experiments.gmm.evaluation`)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from replicate.experiments.gmm.evaluation import EXACT
from replicate.plots import (
    CurvePanel,
    figure_training_curves,
)

__all__ = [
    "model_title",
    "training_curves_figure",
]


def model_title(model: str, gmm_config: Mapping[str, Any] | None = None) -> str:
    """A readable panel title for a model name; an INN's second line names its losses and ramp.

    Example:
        >>> cfg = {"inn": {"variants": {"full": {"losses": ["y", "z"], "ramp_epochs": 50}}}}
        >>> print(model_title("inn_full", cfg))
        INN full
        y+z, ramp 50 ep.
        >>> model_title("ours")
        'ours'
    """
    if model.startswith("inn_"):
        variant = model[len("inn_") :]
        spec = (gmm_config or {}).get("inn", {}).get("variants", {}).get(variant)
        name = "INN " + variant.replace("_", " ")
        if spec:
            losses = "+".join(
                {"x_backward": "x_bw", "x_reconstruction": "x_rec"}.get(k, k)
                for k in spec["losses"]
            )
            name += f"\n{losses}, ramp {spec['ramp_epochs']} ep."
        return name
    return {"cinn": "cINN", EXACT: "exact p(x | y)"}.get(model, model)


def training_curves_figure(
    history_csvs: Sequence[str | os.PathLike],
    status_jsons: Sequence[str | os.PathLike],
    network: str,
    label_map: str,
    gmm_config: Mapping[str, Any] | None = None,
) -> Figure:
    """Every model's recorded training losses, a panel per model, a line per seed.

    ``history_csvs`` are the training rule's per-iteration histories and ``status_jsons`` its
    status files, in the same order (each status names its model), all of one ``network`` and
    ``label_map``. INN panels show every loss term on a log axis and a dashed line where the
    backward MMD's ramp reaches 1; ours and the cINN show their NLL, on a linear axis cut to the
    values after the first tenth of training (the first iterations are orders of magnitude
    larger).
    A diverged run ends in a red cross where it diverged. ``tests/test_plots.py`` checks the
    lines against the histories.
    """
    runs: dict[str, list[tuple[pd.DataFrame, dict[str, Any]]]] = {}
    for history_csv, status_json in zip(history_csvs, status_jsons, strict=True):
        status = json.loads(Path(status_json).read_text())
        runs.setdefault(status["model"], []).append((pd.read_csv(history_csv), status))
    if not runs:
        raise ValueError("training_curves_figure: no training histories given")
    panels = []
    for model, seeds in runs.items():
        histories = [h for h, _ in seeds]
        terms = [c for c in histories[0].columns if c not in ("iteration", "ramp")]
        is_inn = model.startswith("inn_")
        panel = CurvePanel(
            title=f"{model_title(model, gmm_config)}".replace("\n", ", "),
            steps=[h["iteration"].to_numpy() for h in histories],
            # "loss" is the INN's weighted sum of its terms, and the others' NLL.
            terms={
                {"loss": "weighted sum" if is_inn else "NLL"}.get(t, t): [
                    h[t].to_numpy() for h in histories
                ]
                for t in terms
            },
            log_scale=is_inn,
            diverged=[s["iterations_done"] if s.get("diverged") else None for _, s in seeds],
        )
        if is_inn and "x_backward" in terms:
            saturated = histories[0].index[histories[0]["ramp"] >= 1.0]
            if len(saturated):
                panel.marker = float(histories[0]["iteration"][saturated[0]])
                panel.marker_label = "ramp reaches 1"
        if not is_inn:  # NLL: cut off the first tenth, whose values dwarf the rest
            tails = [h["loss"].to_numpy()[len(h) // 10 :] for h in histories if len(h)]
            tails = [t[np.isfinite(t)] for t in tails]
            low = min(float(t.min()) for t in tails if len(t))
            high = max(float(t.max()) for t in tails if len(t))
            pad = 0.05 * (high - low or 1.0)
            panel.ylim = (low - pad, high + pad)
        panels.append(panel)
    n_seeds = max(len(v) for v in runs.values())
    return figure_training_curves(
        panels,
        title=f"training losses, {network} network, label map '{label_map}', {n_seeds} seed(s)",
    )
