"""The E4 pipeline stages: one call per Snakemake rule (workflow/rules/kinematics.smk), each reading
the rule's inputs, calling the library (problem, training, evaluation, figures) and writing its
outputs; the thread pool and the device come from :func:`replicate.runtime.run_stage`.

The figure stages import their figure modules themselves: matplotlib and seaborn take about a
second to import, which every training and evaluation job would otherwise pay at its start.

Example:
    >>> import tempfile, pathlib
    >>> net = {"n_blocks": 2, "hidden": 8, "subnet_layers": 2, "clamp": 2.0, "init_scale": None,
    ...        "permutations": "per_block"}
    >>> adam = {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0,
    ...         "grad_clip": None}
    >>> settings = {"training": {"iterations": 3, "batch_size": 32, "standardization_draws": 256,
    ...                          "checkpoint_every": 2},
    ...             "network": net, "ours": {"eps": 0.03, "optimizer": adam}}
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> files = TrainingFiles(d / "m.safetensors", d / "m.json")
    >>> status = train_kinematics_model("ours_eps0.03", settings, 0, files, progress_every=0)
    >>> status["diverged"], status["iterations_done"]
    (False, 3)
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

from replicate.experiments.kinematics.evaluation import (
    DISPLAY_SCALE,
    METRICS,
    REFERENCE_MODEL,
    SCORES,
    load_reference,
    posterior_scores,
    read_samples,
    score_summary,
    write_samples,
)
from replicate.experiments.kinematics.metrics import MMD_WIDTHS, resimulation_error
from replicate.experiments.kinematics.npe import train_npe_model
from replicate.experiments.kinematics.problem import forward, rejection_sample, sample_prior
from replicate.experiments.kinematics.settings import model_kind
from replicate.experiments.kinematics.training import (
    checkpoint_metadata,
    load_kinematics_model,
    training_setup,
)
from replicate.files import read_json, write_json, write_npz, write_table
from replicate.metrics import in_model_order, mean_std_cells, summarise
from replicate.runtime import resolve_device
from replicate.training import TrainingFiles, fit_to_files

__all__ = [
    "evaluate_kinematics_model",
    "evaluate_reference_floor",
    "make_reference",
    "metrics_table",
    "plot_eps",
    "plot_posteriors",
    "train_kinematics_model",
]

log = logging.getLogger("replicate")


def train_kinematics_model(
    name: str,
    settings: Mapping[str, Any],
    seed: int,
    files: TrainingFiles,
    *,
    device: str | torch.device = "cpu",
    progress_every: int = 100,
) -> dict[str, Any]:
    """Train model ``name`` under ``settings`` (:func:`~.settings.training_settings`) with
    ``seed``; write ``files``: the checkpoint, the status JSON (returned) and the loss history.

    Same seed, same weights on the CPU, also across a kill and resume from ``files.resume``
    (saved every ``training.checkpoint_every`` iterations). A diverged run is reported in the
    status (``diverged: true``), its last finite weights saved (see
    :func:`replicate.training.fit_to_files`).
    """
    if model_kind(name) == "npe":  # sbi's own training loop
        return train_npe_model(name, settings, seed, files, device=device)
    dev = resolve_device(device)
    training = settings["training"]
    setup = training_setup(name, settings, seed, dev)
    model, batch_size = setup.model, training["batch_size"]

    log.info(
        "training %s, seed %d, device %s, %d iterations at batch %d of fresh simulator draws, "
        "%d parameters (%s: %s)",
        name,
        seed,
        dev,
        training["iterations"],
        batch_size,
        sum(p.numel() for p in model.parameters()),
        type(model).__name__,
        model.extra_repr() or f"x (4) <-> z, {settings['network']['n_blocks']} blocks",
    )
    model.train()
    return fit_to_files(
        setup.step,
        model,
        setup.optimizer,
        training["iterations"],
        files,
        metadata=checkpoint_metadata(name, settings),
        describe={"model": name, "seed": seed, "device": str(dev)},
        segment=training["checkpoint_every"],
        seed=seed,
        grad_clip=setup.grad_clip,
        progress_every=progress_every,
    )


def make_reference(
    config: Mapping[str, Any],
    reference_path: str | os.PathLike,
    held_out_path: str | os.PathLike,
    summary_path: str | os.PathLike,
) -> dict[str, Any]:
    """Draw the test observations and their reference posteriors (rule kinematics_reference).

    ``config`` is the ``kinematics:`` section: ``n_observations`` observations y* = f(x), x from
    the prior with ``observation_seed``; for each, rejection sampling (``reference.tolerance``,
    seeded by ``reference.seed``) keeps ``reference.n_accept`` draws for the reference and
    ``n_posterior_samples`` more, written as the samples of a perfect sampler. The summary JSON
    (returned) states the tolerance's own effect: the re-simulation error of the accepted draws
    and the acceptance rates.
    """
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
) -> dict[str, Any]:
    """Sample model ``name`` (seed ``seed``) for every test observation and score the samples.

    ``eval_config``: ``n_posterior_samples`` per observation, ``c2st_observations``. The
    samples (``samples_path``) and the scores JSON (``scores_path``, returned) are written
    atomically; sampling draws from a generator seeded by ``seed``. A diverged run gets NaN
    scores and no samples beyond NaN (the table counts it as diverged).
    """
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
    summary = score_summary(scores, n_samples)
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
) -> dict[str, Any]:
    """Score the held-out rejection draws as a model's samples: what a perfect sampler reaches
    with these sample sizes and this tolerance (the floor of each metric)."""
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
    out |= score_summary(scores, n_held_out)
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
    table = in_model_order(summarise(df, ["model"], keys), model_order)
    header = ["model", *(title for _, title, _ in METRICS), "seeds", "diverged"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in table.iterrows():
        cells = [str(row["model"])]
        for key, _, digits in METRICS:
            scale = DISPLAY_SCALE.get(key, 1.0)
            mean, std = row[f"{key}_mean"] * scale, row[f"{key}_std"] * scale
            cells += mean_std_cells([mean], [std], digits=digits)
        cells += [str(int(row["n_seeds"])), str(int(row["n_diverged"]))]
        lines.append("| " + " | ".join(cells) + " |")
    write_table(table, csv_path, md_path, "\n".join(lines))
    return table


def plot_posteriors(
    models: Sequence[str],
    sample_paths: Sequence[str | os.PathLike],
    reference_path: str | os.PathLike,
    observation_indices: Sequence[int],
    png_path: str | os.PathLike,
) -> None:
    """Rule plot_kinematics_posteriors: :func:`figure_posteriors` for the chosen observations,
    the reference first, then ``models`` (one seed's samples each, in ``sample_paths``)."""
    from replicate.experiments.kinematics.figures import figure_posteriors
    from replicate.plots import save_figure

    reference = load_reference(reference_path)
    n = len(reference.observations)
    bad = [i for i in observation_indices if not 0 <= i < n]
    if bad:
        raise ValueError(
            f"kinematics.figure_observations {bad} are not indices of the {n} test observations"
        )
    index = list(observation_indices)
    samples = {REFERENCE_MODEL: reference.draws[index]}
    for name, path in zip(models, sample_paths, strict=True):
        observations, model_samples = read_samples(path)
        if not torch.equal(observations, reference.observations):
            raise ValueError(f"{path} holds samples for other observations than the reference")
        samples[name] = model_samples[index]
    fig = figure_posteriors(reference.observations[index], samples, reference.tolerance)
    save_figure(fig, png_path)


def plot_eps(csv_path: str | os.PathLike, png_path: str | os.PathLike) -> None:
    """Rule plot_kinematics_eps: :func:`figure_eps` from the metrics table."""
    from replicate.experiments.kinematics.figures import figure_eps
    from replicate.plots import save_figure

    save_figure(figure_eps(pd.read_csv(csv_path)), png_path)
