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

from replicate import metrics
from replicate.experiments.gmm.evaluation import EXACT, _read_eval
from replicate.experiments.gmm.problem import GaussianMixture
from replicate.plots import (
    CurvePanel,
    Panel,
    figure_gmm,
    figure_panels,
    figure_training_curves,
    save_figure,
    use_style,
)

__all__ = [
    "model_title",
    "plot_fig5_1",
    "plot_fig5_2",
    "plot_training_curves",
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


def _network_name(result: Mapping[str, Any]) -> str:
    """``"<network> network, "`` for a model's result; empty for the exact posterior."""
    network = result.get("network", "-")
    return "" if network in ("-", "") or not isinstance(network, str) else f"{network} network, "


def _score_line(result: Mapping[str, Any]) -> str:
    return f"in mode {result['in_mode_fraction']:.3f}, W2 {result['w2']:.3f}"


def plot_fig5_1(
    predictions_csv: str | os.PathLike,
    samples_csv: str | os.PathLike,
    eval_json: str | os.PathLike,
    png_path: str | os.PathLike,
) -> None:
    """Paper Figure 5.1 for one run (PNG + PDF): forward-pass labels and posterior samples."""
    use_style()
    result = _read_eval(eval_json)
    gm = GaussianMixture(result["label_map"])
    title = (
        f"{model_title(result['model'])}, {_network_name(result)}label map "
        f"'{result['label_map']}', seed {result['seed']}"
    )
    kw = {"circles": gm.means.numpy(), "radius": metrics.DEFAULT_MODE_RADIUS * gm.std}
    if result["diverged"]:
        fig = figure_gmm(
            None,
            None,
            None,
            None,
            gm.n_labels,
            title=title,
            diverged_message=str(result["message"]),
            **kw,
        )
    else:
        pred, samples = pd.read_csv(predictions_csv), pd.read_csv(samples_csv)
        title += (
            f"\naccuracy {result['accuracy']:.3f} (Bayes {result['bayes_accuracy']:.3f}); "
            + _score_line(result)
        )
        fig = figure_gmm(
            pred[["x1", "x2"]].to_numpy(),
            pred["predicted"].to_numpy(),
            samples[["x1", "x2"]].to_numpy(),
            samples["label"].to_numpy(),
            gm.n_labels,
            title=title,
            **kw,
        )
    save_figure(fig, png_path)


def plot_fig5_2(
    models: Sequence[str],
    samples_csvs: Sequence[str | os.PathLike],
    eval_jsons: Sequence[str | os.PathLike],
    png_path: str | os.PathLike,
    gmm_config: Mapping[str, Any] | None = None,
) -> None:
    """Paper Figure 5.2 (PNG + PDF): posterior samples of each model in ``models``, side by side.

    A diverged run's panel says so. Each panel's title carries its in-mode fraction and W2.
    """
    use_style()
    panels, label_map, n_inn, network = [], None, 0, ""
    for model, samples_csv, eval_json in zip(models, samples_csvs, eval_jsons, strict=True):
        result = _read_eval(eval_json)
        label_map = label_map or result["label_map"]
        network = network or _network_name(result)
        title = model_title(model, gmm_config)
        if model.startswith("inn_"):  # the paper's panel letters (a), (b), (c)
            title = f"({'abcdefghij'[n_inn]}) {title}"
            n_inn += 1
        if result["diverged"]:
            panels.append(Panel(title, None, None, diverged_message=str(result["message"])))
            continue
        samples = pd.read_csv(samples_csv)
        panels.append(
            Panel(
                f"{title}\n{_score_line(result)}",
                samples[["x1", "x2"]].to_numpy(),
                samples["label"].to_numpy(),
            )
        )
    gm = GaussianMixture(label_map or "all")
    fig = figure_panels(
        panels,
        gm.n_labels,
        title=f"samples of p(x | y), {network}label map '{gm.label_map}'",
        circles=gm.means.numpy(),
        radius=metrics.DEFAULT_MODE_RADIUS * gm.std,
    )
    save_figure(fig, png_path)


def plot_training_curves(
    history_csvs: Sequence[str | os.PathLike],
    status_jsons: Sequence[str | os.PathLike],
    png_path: str | os.PathLike,
    network: str,
    label_map: str,
    gmm_config: Mapping[str, Any] | None = None,
) -> None:
    """Write :func:`training_curves_figure` as PNG + PDF (rule ``plot_training_gmm``).

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> pd.DataFrame({"iteration": range(20), "loss": np.linspace(3, 1, 20)}).to_csv(
        ...     d / "h.csv", index=False)
        >>> _ = (d / "s.json").write_text(json.dumps({"model": "ours", "diverged": False}))
        >>> plot_training_curves([d / "h.csv"], [d / "s.json"], d / "t.png", "reference", "all")
        >>> sorted(p.name for p in d.glob("t.*"))
        ['t.pdf', 't.png']
    """
    use_style()
    fig = training_curves_figure(history_csvs, status_jsons, network, label_map, gmm_config)
    save_figure(fig, png_path)


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
