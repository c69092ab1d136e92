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

The stage that writes an evaluation's files is :func:`~.stages.evaluate_gmm_run` (the
pseudo-model: :func:`~.stages.evaluate_exact`).

Example:
    >>> x, y = held_out_set("all", 100, seed=0)
    >>> tuple(x.shape), tuple(y.shape)
    ((100, 2), (100,))
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from replicate import metrics
from replicate.experiments.gmm.problem import GaussianMixture

__all__ = [
    "EXACT_SEED_OFFSET",
    "REFERENCE_SEED_OFFSET",
    "TABLE_METRICS",
    "TEST_SEED_OFFSET",
    "exact_samples",
    "held_out_set",
    "metrics_markdown",
    "metrics_summary",
    "posterior_scores",
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


def exact_samples(gm: GaussianMixture, n: int, seed: int) -> dict[int, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {label: gm.sample_conditional(label, n, gen) for label in range(gm.n_labels)}


def posterior_scores(
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
    return posterior_scores(gm, dict(samples), exact_samples(gm, n, REFERENCE_SEED_OFFSET + seed))


def metrics_summary(
    runs: pd.DataFrame,
    model_order: Sequence[str] | None = None,
    network_order: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The metrics table of per-seed evaluations ``runs`` (one row per evaluation JSON): mean
    and std over seeds per model x network x label map, with the references, sorted by label
    map, then network, then model (in the given orders); see
    :func:`~.stages.gmm_metrics_table` for the columns."""
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

    return table.sort_values(["label_map", "network", "model"], key=rank).reset_index(drop=True)


def metrics_markdown(table: pd.DataFrame) -> str:
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
