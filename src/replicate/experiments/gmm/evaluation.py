"""Scoring the Gaussian-mixture models against the exact posterior, and their figures and table.

Every trained model (see :mod:`replicate.experiments.gmm.training`) is evaluated on data it
never saw:

- ``n_test`` held-out points: forward-pass accuracy (next to the Bayes-optimal accuracy of the same
  points) and, where the model has a density, the held-out conditional NLL next to the true NLL;
- ``n_posterior_samples`` samples of p(x | y) for every label: the fraction in a mode of the
  requested label and the Wasserstein-2 distance to as many exact samples of p(x | y).

The true posterior is scored by the same code as the pseudo-model ``exact`` (Bayes classifier,
independent exact samples, true density). Its row gives the ceiling / floor each metric can reach
at these sample sizes: e.g. W2 between two finite exact samples is not 0.

Random streams, all derived from the run's seed so a rerun reproduces every number: the test
points use ``TEST_SEED_OFFSET + seed``, the exact samples the models are compared with
``REFERENCE_SEED_OFFSET + seed``, the ``exact`` pseudo-model's samples ``EXACT_SEED_OFFSET + seed``,
and model sampling the global generator seeded with ``seed``. Training draws its data from ``seed``
itself, so the test points are independent of the training set.

Example:
    >>> import tempfile, pathlib, json
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> cfg = {"n_test": 200, "n_posterior_samples": 50}
    >>> r = evaluate_exact("all", cfg, 0, d / "e.json", d / "s.csv", d / "p.csv")
    >>> r["diverged"], r["accuracy"] > 0.95, r["in_mode_fraction"] > 0.9
    (False, True, True)
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from replicate import metrics
from replicate.experiments.gmm.problem import GaussianMixture
from replicate.files import atomic_path, write_json, write_table
from replicate.runtime import resolve_device, use_threads

__all__ = [
    "EXACT_SEED_OFFSET",
    "REFERENCE_SEED_OFFSET",
    "TABLE_METRICS",
    "TEST_SEED_OFFSET",
    "evaluate_exact",
    "evaluate_gmm_run",
    "gmm_metrics_table",
    "held_out_set",
    "score_samples",
]

log = logging.getLogger("replicate")


TEST_SEED_OFFSET = 7_000_000


REFERENCE_SEED_OFFSET = 8_000_000


EXACT_SEED_OFFSET = 9_000_000


EXACT = "exact"  # the true posterior, scored as if it were a model


# Per-run metrics averaged over seeds in the table (``bayes_accuracy`` and ``true_nll`` depend only
# on the test points, so the table shows their mean alone).
TABLE_METRICS: tuple[str, ...] = (
    "accuracy",
    "in_mode_fraction",
    "w2",
    "nll",
    "seconds_per_iteration",
)


def held_out_set(label_map: str, n_test: int, seed: int) -> tuple[Tensor, Tensor]:
    """Held-out points ``(x (n, 2), labels (n,))`` of a run, independent of its training data.

    Example:
        >>> x, y = held_out_set("some", 10, seed=0)
        >>> x.shape, bool(torch.equal(x, held_out_set("some", 10, seed=0)[0]))
        (torch.Size([10, 2]), True)
    """
    gen = torch.Generator().manual_seed(TEST_SEED_OFFSET + seed)
    return GaussianMixture(label_map).sample(n_test, gen)


def _exact_samples(gm: GaussianMixture, n: int, seed: int) -> dict[int, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {label: gm.sample_conditional(label, n, gen) for label in range(gm.n_labels)}


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


def _posterior_scores(
    gm: GaussianMixture, samples: dict[int, Tensor], reference: dict[int, Tensor]
) -> dict[str, Any]:
    """In-mode fraction and W2 to exact samples, per label and averaged over labels."""
    in_mode, w2 = [], []
    for label in range(gm.n_labels):
        s = samples[label].double()
        in_mode.append(metrics.in_mode_fraction(s, label, gm.means, gm.mode_labels, gm.std))
        w2.append(metrics.wasserstein2(s, reference[label]))
    return {
        "in_mode_fraction": float(np.mean(in_mode)),
        "w2": float(np.mean(w2)),
        "in_mode_fraction_per_label": in_mode,
        "w2_per_label": w2,
    }


def score_samples(label_map: str, samples: Mapping[int, Tensor], seed: int) -> dict[str, Any]:
    """In-mode fraction and W2 of posterior ``samples`` (label -> (n, 2)), as the pipeline scores
    a model run with ``seed``: against the same exact samples, for code outside the pipeline.

    Example:
        >>> gm = GaussianMixture("all")
        >>> g = torch.Generator().manual_seed(1)
        >>> samples = {k: gm.sample_conditional(k, 200, g) for k in range(8)}
        >>> round(score_samples("all", samples, seed=0)["in_mode_fraction"], 2)
        0.99
    """
    gm = GaussianMixture(label_map)
    n = min(len(s) for s in samples.values())
    return _posterior_scores(gm, dict(samples), _exact_samples(gm, n, REFERENCE_SEED_OFFSET + seed))


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
    samples = _exact_samples(gm, n, EXACT_SEED_OFFSET + seed)
    reference = _exact_samples(gm, n, REFERENCE_SEED_OFFSET + seed)
    predicted = gm.posterior(x).argmax(dim=1)
    result |= {
        "diverged": False,
        "message": "the true posterior, scored by the same code as the models",
        "accuracy": metrics.accuracy(gm.posterior(x), y),
        "nll": result["true_nll"],
        "seconds_per_iteration": float("nan"),
        **_posterior_scores(gm, samples, reference),
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
    threads: int | None = None,
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
    from replicate.experiments.gmm.training import load_gmm_model  # the training stage's loader

    use_threads(threads)
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
    reference = _exact_samples(gm, n, REFERENCE_SEED_OFFSET + seed)
    result |= _posterior_scores(gm, samples, reference)
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
    keys = ["model", "network", "label_map"]
    runs["network"] = runs["network"].fillna("-") if "network" in runs else "-"
    table = metrics.summarise(runs, keys, list(TABLE_METRICS))
    refs = runs.groupby(keys, sort=False)[["bayes_accuracy", "true_nll"]].mean()
    table = table.merge(refs.reset_index(), on=keys)
    columns = list(keys)
    for m in TABLE_METRICS:
        columns += [f"{m}_mean", f"{m}_std"]
        if m == "accuracy":
            columns.append("bayes_accuracy")
        if m == "nll":
            columns.append("true_nll")
    table = table[[*columns, "n_seeds", "n_diverged"]]
    order = list(model_order) if model_order else [EXACT, *sorted(set(runs["model"]) - {EXACT})]
    ranks = {
        "model": {name: i for i, name in enumerate(order)},
        "network": {name: i for i, name in enumerate(["-", *(network_order or [])])},
    }

    def rank(col: pd.Series) -> pd.Series:
        if col.name not in ranks:
            return col
        return col.map(ranks[col.name]).fillna(len(ranks[col.name]))

    table = table.sort_values(["label_map", "network", "model"], key=rank).reset_index(drop=True)
    markdown = _markdown(table)
    write_table(table, csv_path, md_path, markdown)
    log.info("GMM metrics over %d runs:\n%s", len(runs), markdown)
    return table


def _markdown(table: pd.DataFrame) -> str:
    """Mean +- std cells, readable in the report."""
    out = table[["model", "network", "label_map"]].copy()
    digits = {"seconds_per_iteration": 4, "w2": 3, "nll": 3}
    for m in TABLE_METRICS:
        d = digits.get(m, 3)
        mean, std = table[f"{m}_mean"], table[f"{m}_std"]
        out[m] = metrics.mean_std_cells(mean, std, d)
        if m == "accuracy":
            out["bayes_accuracy"] = table["bayes_accuracy"].map(lambda v: f"{v:.3f}")
        if m == "nll":
            out["true_nll"] = table["true_nll"].map(lambda v: f"{v:.3f}")
    out = out.rename(columns={"seconds_per_iteration": "s/iteration"})
    out["seeds (diverged)"] = [
        f"{a} ({b})" for a, b in zip(table["n_seeds"], table["n_diverged"], strict=True)
    ]
    # disable_numparse keeps the formatted strings (tabulate would print 1.000 as 1).
    return out.to_markdown(index=False, disable_numparse=True)
