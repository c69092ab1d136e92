"""The reference posteriors, every model's posterior samples and their scores (E4).

- :class:`Reference` (:func:`load_reference`): the test observations y* (from the prior
  predictive) and, by rejection sampling, the reference draws of p(x | y*) plus a held-out set of
  the same method, which scores as a perfect sampler would (the floor of every metric at these
  sample sizes), as :func:`~.stages.make_reference` writes them;
- :func:`posterior_scores`: one sample set per observation against the reference: MMD, C2ST,
  re-simulation error, central-interval coverage, each per observation;
- :func:`score_summary`: the scores of one sample set as the metrics table shows them.

Files (so anyone can recompute a metric): ``reference.npz`` holds ``observations`` (N, 2),
``draws`` (N * R, 4) with ``observation_index`` (N * R,), ``n_drawn`` (N,) and ``tolerance``;
a samples file holds ``observations`` (N, 2) and ``samples`` (N, S, 4).

Example:
    >>> from replicate.experiments.kinematics.problem import forward, rejection_sample, sample_prior
    >>> g = torch.Generator().manual_seed(0)
    >>> y = forward(sample_prior(2, g))
    >>> ref = rejection_sample(y, 60, 0.05, g, batch_size=20_000).samples
    >>> scores = posterior_scores(ref[:, :30], ref[:, 30:], y, c2st_observations=0)
    >>> sorted(scores), len(scores["mmd"])
    (['c2st', 'coverage', 'mmd', 'non_finite', 'resimulation_error'], 2)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from replicate.experiments.kinematics.metrics import (
    central_interval_coverage,
    posterior_mmd,
    resimulation_error,
)
from replicate.files import read_npz, write_npz
from replicate.metrics import c2st

__all__ = [
    "DISPLAY_SCALE",
    "REFERENCE_MODEL",
    "SCORES",
    "METRICS",
    "Reference",
    "load_reference",
    "posterior_scores",
    "read_samples",
    "write_samples",
]

log = logging.getLogger("replicate")

# The table's columns: (key in the evaluation JSON, header, digits).
METRICS: tuple[tuple[str, str, int], ...] = (
    ("mmd", "MMD^2 (x 1e3)", 2),
    ("c2st", "C2ST accuracy", 3),
    ("resimulation_error", "re-simulation error (x 1e4)", 2),
    ("resimulation_error_median", "median re-simulation error (x 1e4)", 2),
    ("coverage_90", "90% interval coverage", 3),
    ("non_finite_share", "non-finite samples", 4),
    ("seconds_per_iteration", "s / iteration", 4),
    ("train_seconds", "training s", 0),
)
# Display scales of the small numbers (the CSV keeps raw values).
DISPLAY_SCALE = {"mmd": 1e3, "resimulation_error": 1e4, "resimulation_error_median": 1e4}
# The columns that score samples (the rest time the training).
SCORES = (
    "mmd",
    "c2st",
    "resimulation_error",
    "resimulation_error_median",
    "coverage_90",
    "non_finite_share",
)
REFERENCE_MODEL = "rejection"
COVERAGE_LEVEL = 0.9


# -- the reference ----------------------------------------------------------------------------
class Reference:
    """Test observations and their reference draws, as :func:`load_reference` reads them.

    Attributes:
        observations: (N, 2).
        draws: (N, R, 4): the first R accepted draws of each observation (the reference).
        held_out: (N, S, 4) or None: the next S accepted draws, scored like a model's samples.
        n_drawn: (N,) prior draws each observation took; tolerance: the acceptance radius.
    """

    def __init__(
        self,
        observations: Tensor,
        draws: Tensor,
        held_out: Tensor | None,
        n_drawn: Tensor,
        tolerance: float,
    ) -> None:
        self.observations, self.draws, self.held_out = observations, draws, held_out
        self.n_drawn, self.tolerance = n_drawn, tolerance


def load_reference(
    reference_path: str | os.PathLike, held_out_path: str | os.PathLike | None = None
) -> Reference:
    """Read :func:`~.stages.make_reference`'s files back (``ValueError`` for a damaged one)."""
    data = read_npz(
        reference_path, ["observations", "draws", "observation_index", "n_drawn", "tolerance"]
    )
    observations = torch.from_numpy(data["observations"])
    n = len(observations)
    index = data["observation_index"]
    if len(index) % n or not np.array_equal(index, np.repeat(np.arange(n), len(index) // n)):
        raise ValueError(
            f"{reference_path}: observation_index does not hold the same number of draws for "
            "each observation in order; regenerate it (rule kinematics_reference)"
        )
    draws = torch.from_numpy(data["draws"]).reshape(n, -1, data["draws"].shape[1])
    held_out = None
    if held_out_path is not None:
        held_obs, held_out = read_samples(held_out_path)
        if not torch.equal(held_obs, observations):
            raise ValueError(f"{held_out_path} is for other observations than {reference_path}")
    return Reference(
        observations, draws, held_out, torch.from_numpy(data["n_drawn"]), float(data["tolerance"])
    )


def write_samples(path: str | os.PathLike, observations: Tensor, samples: Tensor) -> None:
    """Write posterior samples (N, S, 4) for observations (N, 2) as ``.npz`` (atomically)."""
    if samples.ndim != 3 or samples.shape[0] != observations.shape[0]:
        raise ValueError(
            f"samples must be (N, S, D) for N = {observations.shape[0]} observations, "
            f"got {tuple(samples.shape)}"
        )
    write_npz(
        path,
        observations=np.asarray(observations, dtype=np.float64),
        samples=np.asarray(samples, dtype=np.float64),
    )


def read_samples(path: str | os.PathLike) -> tuple[Tensor, Tensor]:
    """``(observations (N, 2), samples (N, S, 4))`` from a file of :func:`write_samples`."""
    data = read_npz(path, ["observations", "samples"])
    return torch.from_numpy(data["observations"]), torch.from_numpy(data["samples"])


# -- scores -----------------------------------------------------------------------------------
def posterior_scores(
    samples: Tensor,
    reference: Tensor,
    observations: Tensor,
    *,
    c2st_observations: int,
    seed: int = 0,
) -> dict[str, list[float] | list[list[float]]]:
    """Per observation, how far ``samples`` (N, S, 4) are from ``reference`` (N, R, 4).

    ``mmd``: :func:`~.metrics.posterior_mmd` (unbiased, inverse multiquadrics of widths
    :data:`~.metrics.MMD_WIDTHS` prior stds); ``c2st``: :func:`~.metrics.c2st` for the first
    ``c2st_observations`` observations (a classifier per observation is the slow part);
    ``resimulation_error``: :func:`~.metrics.resimulation_error`; ``coverage``: per parameter,
    the share of reference draws in the samples' central 90 % interval.
    """
    samples = torch.as_tensor(samples, dtype=torch.float64)
    if samples.ndim != 3 or samples.shape[0] != len(observations):
        raise ValueError(
            f"samples must be (N, S, 4) for N = {len(observations)}, got {tuple(samples.shape)}"
        )
    # A sample whose inverse overflowed (NaN/inf) is left out of the scores and counted.
    finite = torch.isfinite(samples).all(dim=2)
    kept = [s[f] for s, f in zip(samples, finite, strict=True)]
    short = [i for i, k in enumerate(kept) if len(k) < 2]
    if short:
        raise ValueError(
            f"observations {short[:10]} have fewer than 2 finite samples (NaN or inf): the "
            "model's inverse diverged there; nothing to score"
        )
    n_c2st = min(c2st_observations, len(observations))
    return {
        "mmd": [posterior_mmd(s, r) for s, r in zip(kept, reference, strict=True)],
        "c2st": [c2st(kept[i], reference[i], seed=seed) for i in range(n_c2st)],
        "resimulation_error": [
            resimulation_error(s, y) for s, y in zip(kept, observations, strict=True)
        ],
        "coverage": [
            central_interval_coverage(s, r, COVERAGE_LEVEL).tolist()
            for s, r in zip(kept, reference, strict=True)
        ],
        "non_finite": (~finite).sum(dim=1).tolist(),
    }


def score_summary(scores: Mapping[str, Any], n_samples: int) -> dict[str, float]:
    """The table's numbers of one run: each score averaged over observations, and the share of
    the ``n_samples`` samples per observation that were not finite."""
    return {
        "mmd": float(np.mean(scores["mmd"])),
        "c2st": float(np.mean(scores["c2st"])) if scores["c2st"] else float("nan"),
        "resimulation_error": float(np.mean(scores["resimulation_error"])),
        # Per observation the mean over samples, then the median over observations: robust to
        # the few observations whose samples explode, which the mean reports.
        "resimulation_error_median": float(np.median(scores["resimulation_error"])),
        "coverage_90": float(np.mean(scores["coverage"])),
        "non_finite_share": float(np.sum(scores["non_finite"]))
        / (len(scores["non_finite"]) * n_samples),
    }
