"""Model-agnostic scores for conditional models, and mean +- std aggregation over seeds.

Nothing here knows about a particular model or dataset: every function takes arrays (NumPy or
torch) so the Gaussian-mixture stage and the latent MNIST stage share them.

- :func:`accuracy`: share of rows whose arg-max score is the true label.
- :func:`in_mode_fraction`: share of samples that land in a mode carrying the requested label.
- :func:`wasserstein2`: exact empirical Wasserstein-2 distance between two point clouds (POT).
- :func:`nll`: held-out negative log-likelihood ``-mean log p(x | y)``.
- :func:`c2st`: classifier two-sample test accuracy between two sample sets (0.5: alike).
- :func:`summarise`: mean, std, number of seeds and of diverged runs, per group.

Example:
    >>> import numpy as np
    >>> accuracy(np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([1, 1]))
    0.5
    >>> a = np.array([[0.0, 0.0], [1.0, 0.0]])
    >>> round(wasserstein2(a, a + [0.0, 2.0]), 6)
    2.0
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

__all__ = [
    "DEFAULT_MODE_RADIUS",
    "accuracy",
    "c2st",
    "gaussian_w2",
    "in_mode_fraction",
    "in_model_order",
    "mean_std_cells",
    "mean_std_table",
    "nll",
    "summarise",
    "wasserstein2",
]

# A sample is "in a mode" within this many standard deviations of the mode centre. For an isotropic
# 2-d Gaussian the chance of landing within r std is 1 - exp(-r^2 / 2): 0.9889 for r = 3, which is
# therefore the score of exact samples (the ceiling of the metric), not 1.
DEFAULT_MODE_RADIUS = 3.0


def _numpy(a: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().double().numpy()
    return np.asarray(a)


def accuracy(scores: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor) -> float:
    """Share of rows whose arg-max score equals ``labels``; ``scores`` is (n, n_classes).

    Pass only the columns of real classes: with the Gaussian mixture's label map ``some`` the
    condition is 8 wide but only the first 4 columns are labels.

    Example:
        >>> accuracy(np.eye(3), np.array([0, 1, 0]))
        0.6666666666666666
    """
    scores, labels = _numpy(scores), _numpy(labels).astype(int)
    if scores.ndim != 2 or len(scores) != len(labels):
        raise ValueError(f"need scores (n, k) and labels (n,), got {scores.shape}, {labels.shape}")
    if len(labels) == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return float((scores.argmax(axis=1) == labels).mean())


def in_mode_fraction(
    samples: np.ndarray | torch.Tensor,
    requested: np.ndarray | torch.Tensor | int,
    centers: np.ndarray | torch.Tensor,
    center_labels: np.ndarray | torch.Tensor,
    std: float,
    radius: float = DEFAULT_MODE_RADIUS,
) -> float:
    """Share of ``samples`` that land in a mode of their requested label.

    A sample counts when BOTH hold: (1) its nearest mode centre carries the requested label, and
    (2) it lies within ``radius * std`` (Euclidean) of that centre. (1) alone would accept samples
    smeared far outside every mode; (2) alone would accept samples in the wrong mode.

    For isotropic Gaussian modes in d = 2 dimensions, exact samples of p(x | y) score
    ``1 - exp(-radius^2 / 2)`` (0.989 at the default radius 3) when the modes are far apart; that
    is the ceiling to compare a model with.

    Args:
        samples: (n, d) points drawn from the model's p(x | y).
        requested: (n,) label each sample was drawn for, or one int for all of them.
        centers: (k, d) mode centres; center_labels: (k,) the label each mode carries.
        std: the modes' standard deviation; radius: in units of std.

    Example:
        >>> centers, lab = np.array([[0.0, 0.0], [5.0, 0.0]]), np.array([0, 1])
        >>> x = np.array([[0.1, 0.0], [2.0, 0.0], [5.0, 2.0]])  # hit, wrong mode, too far
        >>> in_mode_fraction(x, np.array([0, 1, 1]), centers, lab, std=0.5)
        0.3333333333333333
    """
    x, centers = _numpy(samples).astype(float), _numpy(centers).astype(float)
    center_labels = _numpy(center_labels).astype(int)
    if x.ndim != 2 or x.shape[1] != centers.shape[1]:
        raise ValueError(f"samples must be (n, {centers.shape[1]}), got {x.shape}")
    if len(x) == 0:
        raise ValueError("in_mode_fraction of an empty sample is undefined")
    requested = np.broadcast_to(_numpy(requested).astype(int), (len(x),))
    dist = np.linalg.norm(x[:, None, :] - centers[None, :, :], axis=2)
    nearest = dist.argmin(axis=1)
    hit = (center_labels[nearest] == requested) & (dist[np.arange(len(x)), nearest] <= radius * std)
    return float(hit.mean())


def wasserstein2(
    a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, max_iterations: int = 10_000_000
) -> float:
    """Exact Wasserstein-2 distance between two equally weighted point clouds.

    Solves the optimal-transport linear programme with POT (``ot.emd2``) on squared Euclidean
    costs and returns the square root, so the result is in the units of the data. The sizes of
    ``a`` and ``b`` may differ. Between finite samples of the same distribution the value is not 0
    but shrinks with the sample size; compare models at equal sample sizes (and against the value
    for two independent exact samples, the floor).

    Example:
        >>> a = np.array([[0.0, 0.0], [1.0, 1.0]])
        >>> wasserstein2(a, a[::-1])
        0.0
    """
    # POT imports scikit-learn's clustering on the way (over a second): only W2 needs it, so
    # the training and plotting jobs that import this module do not pay for it.
    import ot

    a, b = _numpy(a).astype(np.float64), _numpy(b).astype(np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need two (n, d) arrays with the same d, got {a.shape} and {b.shape}")
    if len(a) == 0 or len(b) == 0:
        raise ValueError("wasserstein2 needs non-empty samples")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan")  # a model that emits inf/NaN samples has no finite distance
    cost = ot.dist(a, b, metric="sqeuclidean")
    weights_a, weights_b = np.full(len(a), 1.0 / len(a)), np.full(len(b), 1.0 / len(b))
    # The default iteration cap (1e5) stops short on a few thousand points and returns a
    # non-optimal plan with only a warning; the cap here is high enough to reach the optimum.
    w2_squared = ot.emd2(weights_a, weights_b, cost, numItermax=max_iterations)
    return float(np.sqrt(max(float(w2_squared), 0.0)))


def gaussian_w2(
    mean_a: np.ndarray, cov_a: np.ndarray, mean_b: np.ndarray, cov_b: np.ndarray
) -> float:
    """Closed-form Wasserstein-2 distance between two Gaussians N(mean_a, cov_a), N(mean_b, cov_b).

    ``W2^2 = |m_a - m_b|^2 + tr(C_a + C_b - 2 (C_b^1/2 C_a C_b^1/2)^1/2)``; a reference value for
    :func:`wasserstein2` on large samples.

    Example:
        >>> round(gaussian_w2(np.zeros(2), np.eye(2), np.array([3.0, 4.0]), np.eye(2)), 6)
        5.0
    """

    def sqrtm(m: np.ndarray) -> np.ndarray:
        # Symmetric PSD square root via the eigen-decomposition (no SciPy needed).
        vals, vecs = np.linalg.eigh((m + m.T) / 2)
        return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T

    mean_a, mean_b = np.asarray(mean_a, float), np.asarray(mean_b, float)
    cov_a, cov_b = np.asarray(cov_a, float), np.asarray(cov_b, float)
    root_b = sqrtm(cov_b)
    cross = sqrtm(root_b @ cov_a @ root_b)
    w2_squared = ((mean_a - mean_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * cross)
    return float(np.sqrt(max(w2_squared, 0.0)))


def nll(log_prob: np.ndarray | torch.Tensor) -> float:
    """Negative mean log-likelihood, ``-mean log p(x | y)``, of held-out rows (nats per point).

    Compute it for the model and, on the same points, for the true density: the true model's value
    is the floor any model can reach in expectation.

    Example:
        >>> nll(np.log([0.5, 0.25]))
        1.0397207708399179
    """
    values = _numpy(log_prob).astype(np.float64)
    if values.size == 0:
        raise ValueError("nll of an empty set is undefined")
    return float(-values.mean())


def c2st(
    samples: np.ndarray | torch.Tensor,
    reference: np.ndarray | torch.Tensor,
    seed: int = 0,
    folds: int = 5,
    *,
    early_stopping: bool = True,
    max_iter: int = 1000,
) -> float:
    """Classifier two-sample test accuracy (0.5: indistinguishable, 1: fully separated).

    An ``MLPClassifier`` with two hidden layers of 10 x D units, on z-scored data (scored by
    the reference's mean and std), ``folds``-fold cross-validated on equal numbers of each set
    (the larger set is subsampled), seeded. By default it stops on a held-out tenth of each
    training fold (E4's metric); ``early_stopping=False, max_iter=10_000`` is the classifier of
    sbibm (Lueckmann et al. 2021), which trains to convergence and reads lower on the same
    samples (``replicate.experiments.linear_gaussian.evaluation.sbibm_npe_check`` measures both).

    Example:
        >>> g = np.random.default_rng(0)
        >>> a, b = g.normal(size=(400, 2)), g.normal(size=(400, 2))
        >>> abs(c2st(a, b) - 0.5) < 0.1, c2st(a, b + 3.0) > 0.95
        (True, True)
    """
    # scikit-learn takes a second to import; only the C2ST needs it.
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neural_network import MLPClassifier

    a = np.asarray(torch.as_tensor(samples, dtype=torch.float64))
    b = np.asarray(torch.as_tensor(reference, dtype=torch.float64))
    n = min(len(a), len(b))
    rng = np.random.default_rng(seed)
    a, b = a[rng.permutation(len(a))[:n]], b[rng.permutation(len(b))[:n]]
    mean, std = b.mean(0), b.std(0) + 1e-12
    data = (np.concatenate([a, b]) - mean) / std
    labels = np.concatenate([np.zeros(n), np.ones(n)])
    width = 10 * data.shape[1]
    classifier = MLPClassifier(
        hidden_layer_sizes=(width, width),
        max_iter=max_iter,
        random_state=seed,
        early_stopping=early_stopping,
    )
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(cross_val_score(classifier, data, labels, cv=split, scoring="accuracy").mean())


def summarise(
    df: pd.DataFrame,
    by: Sequence[str],
    metrics: Sequence[str],
    diverged: str = "diverged",
) -> pd.DataFrame:
    """Mean and sample standard deviation (ddof=1) of each metric over the rows of each group.

    One row per group with columns ``<metric>_mean``, ``<metric>_std``, ``n_seeds`` (rows in the
    group, i.e. runs) and ``n_diverged`` (rows whose boolean ``diverged`` column is true; 0 when the
    column is absent). NaN entries (a diverged run, or a model without the metric) are left out of
    mean and std, so both describe the runs that produced a number; the std of a single number is
    NaN, as it is undefined.

    Example:
        >>> df = pd.DataFrame({"model": ["a", "a", "b"], "acc": [0.5, 0.7, 0.9],
        ...                    "diverged": [False, False, True]})
        >>> summarise(df, ["model"], ["acc"]).round(3).to_dict("records")[0]
        {'model': 'a', 'acc_mean': 0.6, 'acc_std': 0.141, 'n_seeds': 2, 'n_diverged': 0}
    """
    by, metrics = list(by), list(metrics)
    missing = [c for c in by + metrics if c not in df.columns]
    if missing:
        raise KeyError(f"summarise: columns {missing} are not in the table ({list(df.columns)})")
    groups = df.groupby(by, sort=False, dropna=False)
    stats = groups[metrics].agg(["mean", "std"])
    stats.columns = [f"{metric}_{stat}" for metric, stat in stats.columns]
    stats["n_seeds"] = groups.size()
    if diverged in df.columns:
        stats["n_diverged"] = groups[diverged].apply(
            lambda s: int(s.fillna(False).astype(bool).sum())
        )
    else:
        stats["n_diverged"] = 0
    return stats.reset_index()


def in_model_order(
    frame: pd.DataFrame, model_order: Sequence[str], by: Sequence[str] = ("model",)
) -> pd.DataFrame:
    """The rows of ``frame`` sorted by the columns ``by``, its ``model`` column in the order of
    ``model_order`` (the others by value); a ``ValueError`` names any model not in that order.

    Example:
        >>> runs = pd.DataFrame({"s": [0.3, 0.1, 0.1], "model": ["npe", "npe", "ours"]})
        >>> in_model_order(runs, ["ours", "npe"], by=["s", "model"]).values.tolist()
        [[0.1, 'ours'], [0.1, 'npe'], [0.3, 'npe']]
    """
    unknown = sorted(set(frame["model"]) - set(model_order))
    if unknown:
        raise ValueError(f"models {unknown} are not in the table's order {list(model_order)}")
    rank = {m: i for i, m in enumerate(model_order)}
    return frame.sort_values(
        list(by), key=lambda column: column.map(rank) if column.name == "model" else column
    ).reset_index(drop=True)


def mean_std_cells(
    mean: Sequence[float], std: Sequence[float], digits: int = 3, missing: str = "n/a"
) -> list[str]:
    """Table cells ``mean ± std`` (``mean`` alone where the std is NaN: one seed; ``missing``
    where there is no mean), as every markdown table of the pipeline shows them.

    Example:
        >>> mean_std_cells([0.5, 0.25, float("nan")], [0.1, float("nan"), 0.2], digits=2)
        ['0.50 ± 0.10', '0.25', 'n/a']
    """
    return [
        missing
        if pd.isna(m)
        else (f"{m:.{digits}f}" if pd.isna(s) else f"{m:.{digits}f} ± {s:.{digits}f}")
        for m, s in zip(mean, std, strict=True)
    ]


def mean_std_table(
    frame: pd.DataFrame,
    by: Sequence[str],
    metrics: Sequence[str],
    digits: int | Mapping[str, int] = 3,
    missing: str = "n/a",
) -> pd.DataFrame:
    """Mean ± std over the runs of each group of ``frame`` (:func:`summarise`) as table cells
    (:func:`mean_std_cells`): the group's columns, one column per metric and ``seeds`` (runs in
    the group). ``digits``: for every metric, or per metric name (3 for a name not given).

    Example:
        >>> runs = pd.DataFrame({"s": [0.1, 0.1, 0.3], "kl": [0.02, 0.04, 0.01],
        ...                      "epochs": [10, 12, 9]})
        >>> mean_std_table(runs, ["s"], ["kl", "epochs"], {"epochs": 1}).to_dict("records")[0]
        {'s': 0.1, 'kl': '0.030 ± 0.014', 'epochs': '11.0 ± 1.4', 'seeds': 2}
    """
    stats = summarise(frame, by, metrics)
    table = stats[list(by)].copy()
    for m in metrics:
        places = digits if isinstance(digits, int) else digits.get(m, 3)
        table[m] = mean_std_cells(stats[f"{m}_mean"], stats[f"{m}_std"], places, missing)
    table["seeds"] = stats["n_seeds"]
    return table
