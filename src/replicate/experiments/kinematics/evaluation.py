"""The reference posteriors, every model's posterior samples and their scores (E4).

- :func:`make_reference`: the test observations y* (from the prior predictive) and, by rejection
  sampling, the reference draws of p(x | y*) plus a held-out set of the same method, which scores
  as a perfect sampler would (the floor of every metric at these sample sizes);
- :func:`posterior_scores`: one sample set per observation against the reference: MMD, C2ST,
  re-simulation error, central-interval coverage, each per observation;
- :func:`evaluate_kinematics_model`: a trained model's samples (written as ``.npz``) and scores;
- :func:`metrics_table`: mean +- std over seeds per model, as CSV and Markdown.

Files (so anyone can recompute a metric): ``reference.npz`` holds ``observations`` (N, 2),
``draws`` (N * R, 4) with ``observation_index`` (N * R,), ``n_drawn`` (N,) and ``tolerance``;
a samples file holds ``observations`` (N, 2) and ``samples`` (N, S, 4).

Example:
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
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from replicate.experiments.kinematics.metrics import (
    MMD_WIDTHS,
    c2st,
    central_interval_coverage,
    posterior_mmd,
    resimulation_error,
)
from replicate.experiments.kinematics.problem import forward, rejection_sample, sample_prior
from replicate.experiments.kinematics.training import load_kinematics_model
from replicate.files import read_json, read_npz, write_json, write_npz, write_table
from replicate.metrics import mean_std_cells, summarise
from replicate.runtime import resolve_device, use_threads

__all__ = [
    "METRICS",
    "Reference",
    "evaluate_kinematics_model",
    "load_reference",
    "make_reference",
    "metrics_table",
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
_DISPLAY_SCALE = {"mmd": 1e3, "resimulation_error": 1e4, "resimulation_error_median": 1e4}
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


def make_reference(
    config: Mapping[str, Any],
    reference_path: str | os.PathLike,
    held_out_path: str | os.PathLike,
    summary_path: str | os.PathLike,
    threads: int | None = None,
) -> dict[str, Any]:
    """Draw the test observations and their reference posteriors (rule kinematics_reference).

    ``config`` is the ``kinematics:`` section: ``n_observations`` observations y* = f(x), x from
    the prior with ``observation_seed``; for each, rejection sampling (``reference.tolerance``,
    seeded by ``reference.seed``) keeps ``reference.n_accept`` draws for the reference and
    ``n_posterior_samples`` more, written as the samples of a perfect sampler. The summary JSON
    (returned) states the tolerance's own effect: the re-simulation error of the accepted draws
    and the acceptance rates.
    """
    use_threads(threads)
    ref_cfg = config["reference"]
    n_accept, n_held_out = ref_cfg["n_accept"], config["n_posterior_samples"]
    x_true = sample_prior(
        config["n_observations"], torch.Generator().manual_seed(config["observation_seed"])
    )
    observations = forward(x_true)
    log.info(
        "rejection sampling %d + %d draws within %g for each of %d observations",
        n_accept,
        n_held_out,
        ref_cfg["tolerance"],
        len(observations),
    )
    begin = time.perf_counter()
    result = rejection_sample(
        observations,
        n_accept + n_held_out,
        ref_cfg["tolerance"],
        torch.Generator().manual_seed(ref_cfg["seed"]),
        batch_size=ref_cfg["batch_size"],
        max_draws=int(ref_cfg["max_draws"]),
    )
    seconds = time.perf_counter() - begin
    draws, held_out = result.samples[:, :n_accept], result.samples[:, n_accept:]
    n = len(observations)
    write_npz(
        reference_path,
        observations=observations.numpy(),
        draws=draws.reshape(-1, 4).numpy(),
        observation_index=np.repeat(np.arange(n), n_accept),
        n_drawn=result.n_drawn.numpy(),
        tolerance=np.float64(ref_cfg["tolerance"]),
        true_parameters=x_true.numpy(),
    )
    write_samples(held_out_path, observations, held_out)
    resim = [resimulation_error(d, y) for d, y in zip(draws, observations, strict=True)]
    rate = result.acceptance_rate
    summary = {
        "n_observations": n,
        "n_accept": n_accept,
        "n_held_out": n_held_out,
        "tolerance": ref_cfg["tolerance"],
        # Uniform acceptance in a disc of radius tau: E||f(x) - y*||^2 = tau^2 / 2.
        "resimulation_error_mean": float(np.mean(resim)),
        "resimulation_error_uniform_disc": ref_cfg["tolerance"] ** 2 / 2,
        "max_distance": float(result.max_distance.max()),
        "acceptance_rate_median": float(rate.median()),
        "acceptance_rate_min": float(rate.min()),
        "prior_draws_max": int(result.n_drawn.max()),
        "seconds": seconds,
    }
    write_json(summary_path, summary)
    log.info("reference done in %.0f s: %s", seconds, summary)
    return summary


def load_reference(
    reference_path: str | os.PathLike, held_out_path: str | os.PathLike | None = None
) -> Reference:
    """Read :func:`make_reference`'s files back (``ValueError`` for a damaged one)."""
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


def _summary(scores: Mapping[str, Any], n_samples: int) -> dict[str, float]:
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


def evaluate_kinematics_model(
    name: str,
    settings: Mapping[str, Any],
    seed: int,
    checkpoint_path: str | os.PathLike,
    status_path: str | os.PathLike,
    reference_path: str | os.PathLike,
    eval_config: Mapping[str, Any],
    samples_path: str | os.PathLike,
    scores_path: str | os.PathLike,
    device: str = "cpu",
    threads: int | None = None,
) -> dict[str, Any]:
    """Sample model ``name`` (seed ``seed``) for every test observation and score the samples.

    ``eval_config``: ``n_posterior_samples`` per observation, ``c2st_observations``. The
    samples (``samples_path``) and the scores JSON (``scores_path``, returned) are written
    atomically; sampling draws from a generator seeded by ``seed``. A diverged run gets NaN
    scores and no samples beyond NaN (the table counts it as diverged).
    """
    use_threads(threads)
    dev = resolve_device(device)
    status = read_json(status_path)
    reference = load_reference(reference_path)
    n_samples = eval_config["n_posterior_samples"]
    out: dict[str, Any] = {"model": name, "seed": seed, "diverged": bool(status["diverged"])}
    out |= {k: status[k] for k in ("seconds_per_iteration", "iterations_done")}
    out["train_seconds"] = status["seconds"]
    if status["diverged"]:
        nan = torch.full((len(reference.observations), n_samples, 4), float("nan"))
        write_samples(samples_path, reference.observations, nan)
        out |= dict.fromkeys(SCORES, float("nan"))
        write_json(scores_path, out)
        return out
    model = load_kinematics_model(name, checkpoint_path, settings, dev)
    observations = reference.observations.float().to(dev)
    begin = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        samples = model.sample(observations, n=n_samples).double().cpu()
    out["sampling_seconds"] = time.perf_counter() - begin
    write_samples(samples_path, reference.observations, samples)
    scores = posterior_scores(
        samples,
        reference.draws,
        reference.observations,
        c2st_observations=eval_config["c2st_observations"],
        seed=seed,
    )
    summary = _summary(scores, n_samples)
    out |= summary | {"per_observation": scores, "mmd_widths": list(MMD_WIDTHS)}
    write_json(scores_path, out)
    log.info("%s seed %d: %s", name, seed, summary)
    if summary["non_finite_share"] > 0:
        log.warning(
            "%s seed %d: %.2g of the samples are NaN or inf (left out of the scores)",
            name,
            seed,
            summary["non_finite_share"],
        )
    return out


def evaluate_reference_floor(
    reference_path: str | os.PathLike,
    held_out_path: str | os.PathLike,
    eval_config: Mapping[str, Any],
    scores_path: str | os.PathLike,
    threads: int | None = None,
) -> dict[str, Any]:
    """Score the held-out rejection draws as a model's samples: what a perfect sampler reaches
    with these sample sizes and this tolerance (the floor of each metric)."""
    use_threads(threads)
    reference = load_reference(reference_path, held_out_path)
    assert reference.held_out is not None
    scores = posterior_scores(
        reference.held_out,
        reference.draws,
        reference.observations,
        c2st_observations=eval_config["c2st_observations"],
    )
    n_held_out = reference.held_out.shape[1]
    out = {"model": REFERENCE_MODEL, "seed": None, "diverged": False}
    out |= _summary(scores, n_held_out)
    out |= {"per_observation": scores, "mmd_widths": list(MMD_WIDTHS)}
    write_json(scores_path, out)
    return out


# -- the table --------------------------------------------------------------------------------
def metrics_table(
    score_paths: Sequence[str | os.PathLike],
    model_order: Sequence[str],
    csv_path: str | os.PathLike,
    md_path: str | os.PathLike,
) -> pd.DataFrame:
    """Mean +- std over seeds of every metric, one row per model in ``model_order`` (the
    rejection floor first), as CSV (raw numbers) and Markdown (scaled as the headers say)."""
    keys = [key for key, _, _ in METRICS]
    records = [read_json(p) for p in score_paths]
    df = pd.DataFrame(
        [
            {"model": r["model"], "diverged": r["diverged"]} | {k: r.get(k) for k in keys}
            for r in records
        ]
    )
    df[keys] = df[keys].astype(float)  # None (the floor has no training time) -> NaN
    table = summarise(df, ["model"], keys)
    order = {m: i for i, m in enumerate(model_order)}
    unknown = sorted(set(table["model"]) - set(order))
    if unknown:
        raise ValueError(f"models {unknown} are not in the table's order {list(model_order)}")
    table = table.sort_values("model", key=lambda s: s.map(order)).reset_index(drop=True)
    header = ["model", *(title for _, title, _ in METRICS), "seeds", "diverged"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in table.iterrows():
        cells = [str(row["model"])]
        for key, _, digits in METRICS:
            scale = _DISPLAY_SCALE.get(key, 1.0)
            mean, std = row[f"{key}_mean"] * scale, row[f"{key}_std"] * scale
            cells += mean_std_cells([mean], [std], digits=digits)
        cells += [str(int(row["n_seeds"])), str(int(row["n_diverged"]))]
        lines.append("| " + " | ".join(cells) + " |")
    write_table(table, csv_path, md_path, "\n".join(lines))
    return table
