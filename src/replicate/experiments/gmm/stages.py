"""The E1/E2 pipeline stages: one call per Snakemake rule (workflow/rules/gmm.smk, gmm_eval.smk),
each reading the rule's inputs, calling the library (problem, training, evaluation, figures,
benchmark) and writing its outputs; the thread pool and the device come from
:func:`replicate.runtime.run_stage`.

The figure stages import their figure modules themselves: matplotlib and seaborn take about a
second to import, which every training and evaluation job would otherwise pay at its start.

Example:
    >>> import tempfile, pathlib, json
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> cfg = {"n_train": 512, "batch_size": 64, "iterations": 3, "n_test": 200,
    ...        "n_posterior_samples": 50,
    ...        "network": {"n_blocks": 2, "hidden": 8, "subnet_layers": 3, "clamp": 2.0},
    ...        "ours": {"latent_dim": 2, "eps": 0.1, "sigma": 0.05,
    ...                 "optimizer": {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8,
    ...                               "weight_decay": 0.0, "grad_clip": None}}}
    >>> files = TrainingFiles(d / "m.safetensors", d / "m.json")
    >>> status = train_gmm_model("ours", cfg, "all", 0, files, progress_every=0)
    >>> status["diverged"], status["iterations_done"]
    (False, 3)
    >>> r = evaluate_exact("all", cfg, 0, d / "e.json", d / "s.csv", d / "p.csv")
    >>> r["diverged"], r["accuracy"] > 0.95, r["in_mode_fraction"] > 0.9
    (False, True, True)
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from replicate import metrics
from replicate.experiments.gmm.benchmark import measure_training_speed
from replicate.experiments.gmm.evaluation import (
    EXACT,
    EXACT_SEED_OFFSET,
    REFERENCE_SEED_OFFSET,
    exact_samples,
    held_out_set,
    metrics_markdown,
    metrics_summary,
    posterior_scores,
)
from replicate.experiments.gmm.problem import GaussianMixture
from replicate.experiments.gmm.training import (
    RESUME_EVERY,
    checkpoint_metadata,
    load_gmm_model,
    training_setup,
)
from replicate.files import atomic_path, write_json, write_table
from replicate.runtime import resolve_device
from replicate.training import TrainingFiles, fit_to_files

__all__ = [
    "benchmark_training_speed",
    "evaluate_exact",
    "evaluate_gmm_run",
    "gmm_metrics_table",
    "plot_fig5_1",
    "plot_fig5_2",
    "plot_training_curves",
    "train_gmm_model",
]

log = logging.getLogger("replicate")


def train_gmm_model(
    name: str,
    gmm_config: Mapping[str, Any],
    label_map: str,
    seed: int,
    files: TrainingFiles,
    *,
    device: str | torch.device = "cpu",
    progress_every: int = 25,
) -> dict[str, Any]:
    """Train model ``name`` on the mixture with label map ``label_map``; write ``files``.

    A fixed training set of ``n_train`` points is drawn from ``seed``; iteration ``i`` draws its
    batch of ``batch_size`` rows from a generator seeded by ``(seed, i)``, and the model's own noise
    comes from the global generator reseeded from ``(seed, segment)`` every
    :data:`RESUME_EVERY` iterations, so the same seed gives the same weights on the CPU, whether
    or not the run was killed and resumed from ``files.resume`` (saved every segment). A
    divergence (NaN/inf loss) does not raise: the status says ``diverged: true`` with
    the iteration and the loss terms, and the last finite weights are still saved, so that the
    workflow goes on and the evaluation reports the run as diverged.

    Writes the checkpoint (safetensors), the status JSON (returned as a dict) and, if
    ``files.history`` is given, the per-iteration loss terms as CSV.
    """
    dev = resolve_device(device)
    metadata = checkpoint_metadata(name, gmm_config, label_map)
    setup = training_setup(name, gmm_config, label_map, seed, dev)
    model, batch_size = setup.model, gmm_config["batch_size"]
    log.info(
        "training %s on label map '%s', seed %d, device %s, %d iterations at batch %d, "
        "%d parameters",
        name,
        label_map,
        seed,
        dev,
        gmm_config["iterations"],
        batch_size,
        sum(p.numel() for p in model.parameters()),
    )
    model.train()
    return fit_to_files(
        setup.step,
        model,
        setup.optimizer,
        gmm_config["iterations"],
        files,
        metadata=metadata,
        describe={"model": name, "label_map": label_map, "seed": seed, "device": str(dev)},
        segment=RESUME_EVERY,
        seed=seed,
        grad_clip=setup.grad_clip,
        progress_every=progress_every,
    )


def _nan_to_none(value: Any) -> Any:
    # JSON has no NaN; a missing number is written as null (read back as NaN by the table).
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


def _write_outputs(
    result: dict[str, Any],
    samples: dict[int, Tensor] | None,
    predictions: pd.DataFrame | None,
    eval_json: str | os.PathLike,
    samples_csv: str | os.PathLike,
    predictions_csv: str | os.PathLike,
) -> None:
    rows = (
        [
            pd.DataFrame({"x1": s[:, 0].numpy(), "x2": s[:, 1].numpy(), "label": label})
            for label, s in samples.items()
        ]
        if samples
        else [pd.DataFrame(columns=["x1", "x2", "label"])]
    )
    with atomic_path(samples_csv) as tmp:
        pd.concat(rows, ignore_index=True).to_csv(tmp, index=False)
    if predictions is None:
        predictions = pd.DataFrame(columns=["x1", "x2", "label", "predicted"])
    with atomic_path(predictions_csv) as tmp:
        predictions.to_csv(tmp, index=False)
    write_json(eval_json, {k: _nan_to_none(v) for k, v in result.items()})


def _base_result(
    model: str,
    network: str,
    label_map: str,
    seed: int,
    gmm_config: Mapping[str, Any],
    x: Tensor,
    y: Tensor,
) -> dict[str, Any]:
    gm = GaussianMixture(label_map)
    true_ll = gm.log_likelihood(x)[torch.arange(len(y)), y]
    return {
        "model": model,
        "network": network,
        "label_map": label_map,
        "seed": seed,
        "n_test": gmm_config["n_test"],
        "n_posterior_samples": gmm_config["n_posterior_samples"],
        "bayes_accuracy": gm.bayes_accuracy(x),
        "true_nll": metrics.nll(true_ll),
        "mode_radius_std": metrics.DEFAULT_MODE_RADIUS,
    }


def _predictions(x: Tensor, y: Tensor, predicted: Tensor) -> pd.DataFrame:
    return pd.DataFrame(
        {"x1": x[:, 0].numpy(), "x2": x[:, 1].numpy(), "label": y.numpy(), "predicted": predicted}
    )


def evaluate_exact(
    label_map: str,
    gmm_config: Mapping[str, Any],
    seed: int,
    eval_json: str | os.PathLike,
    samples_csv: str | os.PathLike,
    predictions_csv: str | os.PathLike,
) -> dict[str, Any]:
    """Score the true posterior like a model: Bayes classifier, fresh exact samples, true density.

    Writes the same three files as :func:`evaluate_gmm_run` and returns the metrics dict.
    """
    gm = GaussianMixture(label_map)
    x, y = held_out_set(label_map, gmm_config["n_test"], seed)
    result = _base_result(EXACT, "-", label_map, seed, gmm_config, x, y)
    n = gmm_config["n_posterior_samples"]
    samples = exact_samples(gm, n, EXACT_SEED_OFFSET + seed)
    reference = exact_samples(gm, n, REFERENCE_SEED_OFFSET + seed)
    predicted = gm.posterior(x).argmax(dim=1)
    result |= {
        "diverged": False,
        "message": "the true posterior, scored by the same code as the models",
        "accuracy": metrics.accuracy(gm.posterior(x), y),
        "nll": result["true_nll"],
        "seconds_per_iteration": float("nan"),
        **posterior_scores(gm, samples, reference),
    }
    _write_outputs(
        result,
        samples,
        _predictions(x, y, predicted.numpy()),
        eval_json,
        samples_csv,
        predictions_csv,
    )
    log.info("exact posterior, label map %s, seed %d: %s", label_map, seed, _summary(result))
    return result


def _summary(result: Mapping[str, Any]) -> str:
    keys = ("accuracy", "bayes_accuracy", "in_mode_fraction", "w2", "nll", "true_nll")
    return " ".join(f"{k}={result[k]:.4f}" for k in keys if result.get(k) is not None)


def evaluate_gmm_run(
    model_name: str,
    checkpoint_path: str | os.PathLike,
    status_path: str | os.PathLike,
    gmm_config: Mapping[str, Any],
    label_map: str,
    seed: int,
    device: str,
    eval_json: str | os.PathLike,
    samples_csv: str | os.PathLike,
    predictions_csv: str | os.PathLike,
    network: str = "",
) -> dict[str, Any]:
    """Evaluate one trained run against the exact posterior and write its three outputs.

    ``gmm_config`` must hold the model's training settings (to load the checkpoint) plus
    ``n_test`` and ``n_posterior_samples``; ``network`` is the name of its network (for the
    table and figure titles). A run whose status says ``diverged`` is not loaded: its
    metrics are NaN (``null`` in the JSON), ``diverged`` is true, and the samples and predictions
    files hold only their header, so the table and figures report it instead of failing.

    Outputs: ``eval_json`` (every metric, per-label values, timing from the training status),
    ``samples_csv`` (``x1,x2,label``: ``n_posterior_samples`` per label, the samples behind the
    figures and the posterior metrics) and ``predictions_csv`` (``x1,x2,label,predicted`` for the
    test points).
    """
    status = json.loads(Path(status_path).read_text())
    gm = GaussianMixture(label_map)
    x, y = held_out_set(label_map, gmm_config["n_test"], seed)
    result = _base_result(model_name, network, label_map, seed, gmm_config, x, y)
    result |= {
        "diverged": bool(status["diverged"]),
        "message": status.get("message", ""),
        "iterations_done": status.get("iterations_done"),
        "seconds_per_iteration": float(status.get("seconds_per_iteration", float("nan"))),
        "train_device": status.get("device"),
        "final_terms": status.get("final_terms", {}),
    }
    nan_metrics = {
        "accuracy": float("nan"),
        "nll": float("nan"),
        "in_mode_fraction": float("nan"),
        "w2": float("nan"),
    }
    if result["diverged"]:
        log.warning(
            "%s (%s network) %s seed %d diverged in training: %s",
            model_name,
            network,
            label_map,
            seed,
            result["message"],
        )
        result |= nan_metrics | {"has_log_prob": None}
        _write_outputs(result, None, None, eval_json, samples_csv, predictions_csv)
        return result

    dev = resolve_device(device)
    model = load_gmm_model(model_name, checkpoint_path, gmm_config, label_map, dev)
    scores = model.predict(x).cpu()[:, : gm.n_labels]
    predicted = scores.argmax(dim=1)
    result["accuracy"] = metrics.accuracy(scores, y)
    log_p = model.log_prob(x, gm.one_hot(y))
    result["has_log_prob"] = log_p is not None
    result["nll"] = metrics.nll(log_p.cpu()) if log_p is not None else float("nan")

    torch.manual_seed(seed)  # model sampling draws from the global generators (CPU and CUDA)
    n = gmm_config["n_posterior_samples"]
    samples = {
        label: model.sample(gm.one_hot(torch.tensor(label)), n).cpu().double()
        for label in range(gm.n_labels)
    }
    reference = exact_samples(gm, n, REFERENCE_SEED_OFFSET + seed)
    result |= posterior_scores(gm, samples, reference)
    result["n_non_finite_samples"] = int(
        sum((~torch.isfinite(s)).any(1).sum() for s in samples.values())
    )
    _write_outputs(
        result,
        samples,
        _predictions(x, y, predicted.numpy()),
        eval_json,
        samples_csv,
        predictions_csv,
    )
    log.info(
        "%s (%s network), label map %s, seed %d: %s",
        model_name,
        network,
        label_map,
        seed,
        _summary(result),
    )
    return result


def _read_eval(path: str | os.PathLike) -> dict[str, Any]:
    data = json.loads(Path(path).read_text())
    return {k: (float("nan") if v is None else v) for k, v in data.items()}


def gmm_metrics_table(
    eval_paths: Sequence[str | os.PathLike],
    csv_path: str | os.PathLike,
    md_path: str | os.PathLike,
    model_order: Sequence[str] | None = None,
    network_order: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per model x network x label map: mean and std over seeds of every metric, written
    as CSV and Markdown; sorted by label map, then network, then model (in the given orders).

    Columns: ``model, network, label_map`` (the exact posterior's network is ``-``), then for
    each of :data:`TABLE_METRICS` ``<metric>_mean`` and ``<metric>_std``, ``bayes_accuracy`` and
    ``true_nll`` (means over the seeds' test sets, the references for ``accuracy`` and ``nll``),
    ``n_seeds`` and ``n_diverged``. Means and stds skip
    diverged runs (see :func:`replicate.metrics.summarise`).

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> cfg = {"n_test": 100, "n_posterior_samples": 20}
        >>> paths = [d / f"e{s}.json" for s in (0, 1)]
        >>> for s, p in enumerate(paths):
        ...     _ = evaluate_exact("all", cfg, s, p, d / "s.csv", d / "p.csv")
        >>> t = gmm_metrics_table(paths, d / "t.csv", d / "t.md")
        >>> t[["model", "network", "label_map", "n_seeds", "n_diverged"]].values.tolist()
        [['exact', '-', 'all', 2, 0]]
    """
    runs = pd.DataFrame([_read_eval(p) for p in eval_paths])
    if runs.empty:
        raise ValueError("gmm_metrics_table: no evaluation files given")
    table = metrics_summary(runs, model_order, network_order)
    markdown = metrics_markdown(table)
    write_table(table, csv_path, md_path, markdown)
    log.info("GMM metrics over %d runs:\n%s", len(runs), markdown)
    return table


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
    from replicate.experiments.gmm.figures import model_title
    from replicate.plots import figure_gmm, save_figure, use_style

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
    from replicate.experiments.gmm.figures import model_title
    from replicate.plots import Panel, figure_panels, save_figure, use_style

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
        >>> import numpy as np
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> pd.DataFrame({"iteration": range(20), "loss": np.linspace(3, 1, 20)}).to_csv(
        ...     d / "h.csv", index=False)
        >>> _ = (d / "s.json").write_text(json.dumps({"model": "ours", "diverged": False}))
        >>> plot_training_curves([d / "h.csv"], [d / "s.json"], d / "t.png", "reference", "all")
        >>> sorted(p.name for p in d.glob("t.*"))
        ['t.pdf', 't.png']
    """
    from replicate.experiments.gmm.figures import training_curves_figure
    from replicate.plots import save_figure, use_style

    use_style()
    fig = training_curves_figure(history_csvs, status_jsons, network, label_map, gmm_config)
    save_figure(fig, png_path)


def benchmark_training_speed(
    gmm_config: Mapping[str, Any],
    models: Sequence[str],
    device: str,
    csv_path: str | os.PathLike | None,
    md_path: str | os.PathLike | None = None,
    iterations: int = 20,
    warmup: int = 3,
    rounds: int = 3,
    matmul_size: int = 2048,
) -> pd.DataFrame:
    """Run :func:`measure_training_speed` on each of ``gmm_config["networks"]``; log and write.

    One table, a ``network`` column first; ``ratio_to_ours`` compares models on the same network.

    Example:
        >>> net = {"n_blocks": 1, "hidden": 4, "subnet_layers": 2, "clamp": 2.0}
        >>> cfg = {"batch_size": 8, "networks": {"a": net, "b": net | {"hidden": 8}},
        ...        "ours": {"latent_dim": 2, "eps": 0.1, "sigma": 0.05, "optimizer": {"lr": 1e-3}},
        ...        "cinn": {"optimizer": {"lr": 1e-3}}}
        >>> t = benchmark_training_speed(cfg, ["ours", "cinn"], "cpu", None, iterations=1,
        ...                              warmup=0, rounds=1, matmul_size=32)
        >>> t[["network", "model", "hidden"]].values.tolist()
        [['a', 'ours', 4], ['a', 'cinn', 4], ['b', 'ours', 8], ['b', 'cinn', 8]]
    """
    tables = []
    for network, settings in gmm_config["networks"].items():
        log.info(
            "benchmark on %s (%s, %d threads), %s network: batch %d, %d blocks, %d hidden, "
            "%d iterations x %d rounds",
            device,
            platform.processor() or platform.machine(),
            torch.get_num_threads(),
            network,
            gmm_config["batch_size"],
            settings["n_blocks"],
            settings["hidden"],
            iterations,
            rounds,
        )
        config = {**gmm_config, "network": settings}
        table = measure_training_speed(
            config, models, device, iterations, warmup, rounds, matmul_size
        )
        table.insert(0, "network", network)
        tables.append(table)
    table = pd.concat(tables, ignore_index=True)
    shown = [
        "network",
        "model",
        "ms_per_iteration",
        "ratio_to_ours",
        "gflop_per_iteration",
        "achieved_gflops",
        "fraction_of_matmul",
    ]
    log.info(
        "training speed (plain float32 matmul: %.1f GFLOP/s)\n%s",
        float(table["matmul_gflops"].iloc[0]),
        table[shown].to_markdown(index=False, floatfmt=".3f"),
    )
    if csv_path is not None:
        with atomic_path(csv_path) as tmp:
            table.to_csv(tmp, index=False)
    if md_path is not None:
        with atomic_path(md_path) as tmp:
            # The CSV has every column; the Markdown keeps what a reader compares.
            columns = [
                *shown,
                "matmul_gflops",
                "device",
                "threads",
                "batch_size",
                "n_blocks",
                "hidden",
                "subnet_layers",
            ]
            tmp.write_text(table[columns].to_markdown(index=False, floatfmt=".4g") + "\n")
    return table
