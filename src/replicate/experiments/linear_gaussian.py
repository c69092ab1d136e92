"""A linear-Gaussian inverse problem with a closed-form posterior: the check of the method on a
continuous, noisy condition, and of how to choose its ``eps``.

x ~ N(0, I_d), y = A x + N(0, s^2 I_m). The posterior is Gaussian with covariance
``S = (I + A^T A / s^2)^-1`` and mean ``S A^T y / s^2``. :func:`posterior_errors` scores a
model's samples of p(x | y) against it (Gaussian KL of the samples' moments to the analytic
posterior, and the error of the posterior mean in posterior standard deviations);
:func:`eps_sweep` trains the method at several ``eps`` against several noise levels ``s``;
:func:`npe_runs` trains ``sbi``'s NPE, the field's standard baseline, on the same simulations;
:func:`sbibm_npe_check` checks that NPE as trained here reaches what sbi's own benchmark
publishes for it on sbibm's linear-Gaussian task.

``python -m replicate.experiments.linear_gaussian`` prints the README's table (minutes on 2 cores).

Example:
    >>> problem = LinearGaussian(torch.tensor([[1.0, 0.5], [-0.3, 0.8]]), noise_std=0.2)
    >>> x, y = problem.simulate(5, torch.Generator().manual_seed(0))
    >>> mean, cov = problem.posterior(y)
    >>> tuple(mean.shape), tuple(cov.shape)
    ((5, 2), (2, 2))
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from replicate.files import write_table
from replicate.metrics import c2st, mean_std_cells, mean_std_table
from replicate.models.base import NetworkSettings
from replicate.models.conditional_flow import ConditionalFlow
from replicate.models.npe import NPEPosterior, fit_npe, gaussian_prior
from replicate.runtime import setup_logging
from replicate.training import fit_conditional

__all__ = [
    "DEFAULT_FORWARD",
    "TABLE_COLUMNS",
    "LinearGaussian",
    "eps_sweep",
    "gaussian_kl",
    "learned_eps_runs",
    "npe_runs",
    "posterior_errors",
    "SBIBM_DIM",
    "SBIBM_NPE_C2ST",
    "sbibm_npe_check",
    "summary_table",
    "train_flow",
    "train_npe",
]

log = logging.getLogger("replicate")

# The forward matrix of the README's table: 2 parameters, 2 observations, correlated and of
# different sensitivities, so the posterior is a tilted ellipse that differs from the prior.
DEFAULT_FORWARD = ((1.0, 0.5), (-0.3, 0.8))


@dataclass(frozen=True)
class LinearGaussian:
    """x ~ N(0, I_d), y = A x + N(0, noise_std^2 I_m); ``forward`` is A, (m, d)."""

    forward: Tensor
    noise_std: float

    def __post_init__(self) -> None:
        if self.forward.ndim != 2:
            raise ValueError(f"forward must be a matrix (m, d), got shape {self.forward.shape}")
        if not self.noise_std > 0:
            raise ValueError(f"noise_std must be > 0, got {self.noise_std}")

    @property
    def data_dim(self) -> int:
        return self.forward.shape[1]

    @property
    def observation_dim(self) -> int:
        return self.forward.shape[0]

    def simulate(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n`` pairs (x (n, d), y (n, m)) from the prior and the noisy forward process."""
        a = self.forward.double()
        x = torch.randn(n, self.data_dim, generator=generator, dtype=torch.float64)
        noise = torch.randn(n, self.observation_dim, generator=generator, dtype=torch.float64)
        return x, x @ a.T + self.noise_std * noise

    def posterior(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """The exact posterior of each row of ``y`` (B, m): means (B, d) and the covariance
        (d, d), the same for every y."""
        a = self.forward.double()
        precision = torch.eye(self.data_dim, dtype=torch.float64) + a.T @ a / self.noise_std**2
        cov = torch.linalg.inv(precision)
        return y.double() @ (cov @ a.T / self.noise_std**2).T, cov


def gaussian_kl(mean_q: Tensor, cov_q: Tensor, mean_p: Tensor, cov_p: Tensor) -> Tensor:
    """KL(N(mean_q, cov_q) || N(mean_p, cov_p)), batched over leading dimensions.

    Example:
        >>> eye = torch.eye(2, dtype=torch.float64)
        >>> float(gaussian_kl(torch.zeros(2), eye, torch.zeros(2), eye))
        0.0
        >>> round(float(gaussian_kl(torch.ones(2), eye, torch.zeros(2), eye)), 6)
        1.0
    """
    d = mean_q.shape[-1]
    mean_q, cov_q, mean_p, cov_p = (t.double() for t in (mean_q, cov_q, mean_p, cov_p))
    cov_p = cov_p.expand_as(cov_q) if cov_p.ndim < cov_q.ndim else cov_p
    solve = torch.linalg.solve(cov_p, cov_q)
    diff = (mean_p - mean_q).unsqueeze(-1)
    maha = (diff.transpose(-1, -2) @ torch.linalg.solve(cov_p, diff)).squeeze(-1).squeeze(-1)
    logdet = torch.linalg.slogdet(cov_p)[1] - torch.linalg.slogdet(cov_q)[1]
    return 0.5 * (solve.diagonal(dim1=-2, dim2=-1).sum(-1) + maha - d + logdet)


def posterior_errors(
    samples: Tensor, problem: LinearGaussian, observations: Tensor
) -> dict[str, float]:
    """Score posterior samples (B, n, d) of B observations (B, m) against the exact posterior.

    Returns the mean over observations of: ``kl``, the Gaussian KL of the samples' mean and
    covariance to the exact posterior (0 when they match; the sampling error of ``n`` samples
    alone gives about d(d+3)/(4n)); ``mean_error``, the distance of the samples' mean to the
    exact mean in exact posterior standard deviations (Mahalanobis); ``std_ratio``, the samples'
    total standard deviation over the exact one (below 1: overconfident).
    """
    samples = samples.double()
    mean, cov = problem.posterior(observations)
    sample_mean = samples.mean(dim=1)
    centred = samples - sample_mean[:, None]
    sample_cov = centred.transpose(1, 2) @ centred / (samples.shape[1] - 1)
    kl = gaussian_kl(sample_mean, sample_cov, mean, cov)
    diff = (sample_mean - mean).unsqueeze(-1)
    maha = (diff.transpose(1, 2) @ torch.linalg.solve(cov.expand_as(sample_cov), diff)).flatten()
    ratio = sample_cov.diagonal(dim1=1, dim2=2).sum(1).sqrt() / cov.diagonal().sum().sqrt()
    return {
        "kl": float(kl.mean()),
        "mean_error": float(maha.sqrt().mean()),
        "std_ratio": float(ratio.mean()),
    }


def train_flow(
    problem: LinearGaussian,
    eps: float | None,
    *,
    seed: int = 0,
    n_train: int = 4096,
    n_validation: int = 1024,
    epochs: int = 60,
    batch_size: int = 256,
    patience: int = 8,
    n_blocks: int = 4,
    hidden: int = 64,
    lr: float = 2e-3,
) -> tuple[ConditionalFlow, dict[str, float]]:
    """Train the method on simulated pairs, the observation as a continuous condition:
    [x (d), padding (m)] <-> [z (d), y_hat (m)] (:meth:`ConditionalFlow.for_observations` with
    ``noise_std=eps``; None: eps learned, started at the observations' std), x and y standardised
    inside the model, early stopping on a held-out set. Returns the flow (best epoch) and a
    summary: the training and held-out NLL of the best epoch (the loss, constants dropped, so not
    comparable across ``eps``), the held-out ``log_prob`` (constants included: comparable across
    ``eps``), the eps the model ends with (mean over coordinates), epochs run, seconds."""
    generator = torch.Generator().manual_seed(seed)
    x, y = problem.simulate(n_train + n_validation, generator)
    x, y = x.float(), y.float()
    torch.manual_seed(seed)
    flow = ConditionalFlow.for_observations(
        problem.data_dim,
        problem.observation_dim,
        noise_std=eps,
        **NetworkSettings(n_blocks=n_blocks, hidden=hidden),
    )
    flow.fit_standardization(x[:n_train], y[:n_train])
    result = fit_conditional(
        flow,
        x[:n_train],
        y[:n_train],
        validation_data=(x[n_train:], y[n_train:]),
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        patience=patience,
        seed=seed,
    )
    per_epoch = len(result.history) // len(result.validation)
    best = result.best_segment
    best_epoch_losses = result.history[(best - 1) * per_epoch : best * per_epoch]
    with torch.no_grad():
        validation_log_prob = float(flow.log_prob(x[n_train:], y[n_train:]).mean())
    return flow.eval(), {
        "eps_final": float(flow.eps_now().detach().mean()),
        "train_nll": float(np.mean([h["loss"] for h in best_epoch_losses])),
        "validation_nll": result.validation[best - 1],
        "validation_log_prob": validation_log_prob,
        "epochs": len(result.validation),
        "best_epoch": best,
        "seconds": result.seconds,
    }


def train_npe(
    problem: LinearGaussian, *, seed: int = 0, n_train: int = 4096, n_validation: int = 1024
) -> tuple[NPEPosterior, dict[str, float]]:
    """``sbi``'s NPE with its defaults (:func:`replicate.models.npe.fit_npe`) on the very
    simulations :func:`train_flow` draws for ``seed``, all ``n_train + n_validation`` of them
    (sbi holds out its own tenth for early stopping), under the problem's prior N(0, I).
    Returns the posterior and a summary: epochs run, seconds."""
    x, y = problem.simulate(n_train + n_validation, torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    prior = gaussian_prior(torch.ones(problem.data_dim))
    posterior, summary = fit_npe(x.float(), y.float(), prior)
    return posterior, {"epochs": summary["epochs"], "seconds": summary["seconds"]}


def _scores(
    flow: ConditionalFlow | NPEPosterior,
    problem: LinearGaussian,
    seed: int,
    n_observations: int,
    n_samples: int,
) -> dict[str, float]:
    """:func:`posterior_errors` of ``flow`` on ``n_observations`` fresh observations drawn for
    ``seed`` (the same ones for every eps), ``n_samples`` each."""
    _, y_test = problem.simulate(n_observations, torch.Generator().manual_seed(10_000 + seed))
    torch.manual_seed(seed)
    return posterior_errors(flow.sample(y_test.float(), n=n_samples), problem, y_test)


# A model fitted to one problem and seed: the model, the row's columns before its scores, and
# its training summary (the row's last columns); `Fit` makes one.
FitResult = tuple[ConditionalFlow | NPEPosterior, dict[str, Any], dict[str, Any]]
Fit = Callable[[LinearGaussian, int], FitResult]


def _scored_runs(
    noise_levels: Sequence[float],
    fits: Sequence[Fit],
    seeds: Sequence[int],
    n_observations: int,
    n_samples: int,
    forward: Sequence[Sequence[float]],
) -> pd.DataFrame:
    """Every fit at every noise level ``s`` and seed, each scored by :func:`_scores`. One row
    per (s, fit, seed), in that order."""
    rows = []
    for s in noise_levels:
        problem = LinearGaussian(torch.tensor(forward), s)
        for fit in fits:
            for seed in seeds:
                model, columns, summary = fit(problem, seed)
                errors = _scores(model, problem, seed, n_observations, n_samples)
                rows.append({"noise_std": s} | columns | errors | summary)
                log.info("run %d: s %g, %s -> %s", len(rows), s, columns, errors)
    return pd.DataFrame(rows)


def eps_sweep(
    noise_levels: Sequence[float],
    eps_ratios: Sequence[float],
    seeds: Sequence[int] = (0, 1, 2),
    *,
    n_observations: int = 200,
    n_samples: int = 1000,
    forward: Sequence[Sequence[float]] = DEFAULT_FORWARD,
    **train_kwargs: float,
) -> pd.DataFrame:
    """Train the method at ``eps = ratio * s`` for every noise level ``s`` and ratio; score its
    posteriors on ``n_observations`` fresh observations. One row per (s, ratio, seed)."""

    def at_ratio(ratio: float) -> Fit:
        def fit(problem: LinearGaussian, seed: int) -> FitResult:
            eps = ratio * problem.noise_std
            flow, summary = train_flow(problem, eps, seed=seed, **train_kwargs)
            return flow, {"eps_over_noise": ratio, "eps": eps, "seed": seed}, summary

        return fit

    fits = [at_ratio(ratio) for ratio in eps_ratios]
    return _scored_runs(noise_levels, fits, seeds, n_observations, n_samples, forward)


def learned_eps_runs(
    noise_levels: Sequence[float],
    seeds: Sequence[int] = (0, 1, 2),
    *,
    n_observations: int = 200,
    n_samples: int = 1000,
    forward: Sequence[Sequence[float]] = DEFAULT_FORWARD,
    **train_kwargs: float,
) -> pd.DataFrame:
    """The method with eps learned (no value given) at every noise level ``s``, scored as
    :func:`eps_sweep` scores a fixed eps; ``eps_over_noise`` is where the learned eps settled,
    over ``s``. One row per (s, seed)."""

    def fit(problem: LinearGaussian, seed: int) -> FitResult:
        flow, summary = train_flow(problem, None, seed=seed, **train_kwargs)
        eps = flow.eps_now().detach().tolist()
        columns = {"eps_over_noise": summary["eps_final"] / problem.noise_std, "seed": seed}
        return flow, columns | {f"eps_{k}": e for k, e in enumerate(eps)}, summary

    return _scored_runs(noise_levels, [fit], seeds, n_observations, n_samples, forward)


def npe_runs(
    noise_levels: Sequence[float],
    seeds: Sequence[int] = (0, 1, 2),
    *,
    n_observations: int = 200,
    n_samples: int = 1000,
    forward: Sequence[Sequence[float]] = DEFAULT_FORWARD,
    **train_kwargs: int,
) -> pd.DataFrame:
    """sbi's NPE (:func:`train_npe`) at every noise level ``s``, scored on the observations
    :func:`eps_sweep` scores the method on. One row per (s, seed)."""

    def fit(problem: LinearGaussian, seed: int) -> FitResult:
        posterior, summary = train_npe(problem, seed=seed, **train_kwargs)
        return posterior, {"seed": seed}, summary

    return _scored_runs(noise_levels, [fit], seeds, n_observations, n_samples, forward)


# sbibm's gaussian_linear task (Lueckmann et al. 2021): theta ~ N(0, 0.1 I_10), x ~ N(theta,
# 0.1 I_10). In units of the prior's std it is LinearGaussian(I_10, noise_std=1), and a C2ST
# does not see the unit (both sets are z-scored).
SBIBM_DIM = 10
# What sbibm publishes for NPE there, by simulation budget: C2ST mean and std over its 10
# observations (sbi-benchmark/results, benchmarking_sbi/results/main_paper.csv, rows
# task=gaussian_linear, algorithm=NPE, num_simulations=10^4; sbi's NSF of that time, training
# batches of 10,000, its C2ST classifier).
SBIBM_NPE_C2ST = {10_000: (0.552, 0.032)}


def sbibm_npe_check(
    seeds: Sequence[int] = (0,),
    *,
    n_observations: int = 3,
    n_simulations: int = 10_000,
    n_samples: int = 10_000,
) -> pd.DataFrame:
    """The baseline's fairness check: sbi's NPE as this library trains it (:func:`train_npe`,
    sbi's defaults) on sbibm's gaussian_linear task with ``n_simulations``, scored as sbibm
    scores it: C2ST of ``n_samples`` of its draws against as many exact posterior draws, for
    ``n_observations`` fresh observations per seed, by E4's classifier (``c2st``) and by sbibm's
    (``c2st_sbibm``; :func:`replicate.metrics.c2st`). Set ``c2st_sbibm`` beside
    :data:`SBIBM_NPE_C2ST` (published at 10,000 simulations). One row per (seed, observation).

    Example:
        >>> runs = sbibm_npe_check([0], n_observations=1, n_simulations=300, n_samples=100)
        >>> sorted(runs.columns)[:4]
        ['c2st', 'c2st_sbibm', 'epochs', 'n_simulations']
    """
    problem = LinearGaussian(torch.eye(SBIBM_DIM), noise_std=1.0)
    rows = []
    for seed in seeds:
        posterior, summary = train_npe(problem, seed=seed, n_train=n_simulations, n_validation=0)
        _, y = problem.simulate(n_observations, torch.Generator().manual_seed(10_000 + seed))
        mean, cov = problem.posterior(y)
        torch.manual_seed(seed)
        samples = posterior.sample(y.float(), n=n_samples).double()
        exact = torch.distributions.MultivariateNormal(mean, cov).sample((n_samples,))
        for i in range(n_observations):
            scores = {
                "c2st": c2st(samples[i], exact[:, i], seed),
                "c2st_sbibm": c2st(
                    samples[i], exact[:, i], seed, early_stopping=False, max_iter=10_000
                ),
            }
            rows.append(
                {"n_simulations": n_simulations, "seed": seed, "observation": i} | scores | summary
            )
            log.info("seed %d, observation %d of %d: %s", seed, i + 1, n_observations, scores)
    return pd.DataFrame(rows)


# Each kind of run's table: what its rows are grouped by and the metrics shown.
TABLE_COLUMNS = {
    "eps": (
        ["noise_std", "eps_over_noise"],
        ["kl", "mean_error", "std_ratio", "validation_log_prob", "train_nll", "epochs"],
    ),
    "learned_eps": (
        ["noise_std"],
        ["eps_over_noise", "kl", "mean_error", "std_ratio", "validation_log_prob", "epochs"],
    ),
    "npe": (["noise_std"], ["kl", "mean_error", "std_ratio", "epochs", "seconds"]),
    "sbibm": (["n_simulations"], ["c2st", "c2st_sbibm", "epochs", "seconds"]),
}


def summary_table(frame: pd.DataFrame, kind: str = "eps") -> pd.DataFrame:
    """Mean ± std over seeds of each metric (formatted cells) of the runs of one ``kind`` of
    :data:`TABLE_COLUMNS`: :func:`eps_sweep` (one row per (s, eps / s)),
    :func:`learned_eps_runs` or :func:`npe_runs` (one row per s), :func:`sbibm_npe_check` (one
    row per budget; ``seeds`` counts its (seed, observation) runs, and ``sbibm`` is the published
    C2ST at that budget, "n/a" where sbibm has none)."""
    by, metrics = TABLE_COLUMNS[kind]
    table = mean_std_table(frame, by, metrics, digits={"epochs": 1, "seconds": 1})
    if kind == "sbibm":
        table["sbibm"] = [
            mean_std_cells([SBIBM_NPE_C2ST[n][0]], [SBIBM_NPE_C2ST[n][1]])[0]
            if n in SBIBM_NPE_C2ST
            else "n/a"
            for n in table["n_simulations"]
        ]
    return table


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--noise", type=float, nargs="+", default=[0.1, 0.3])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.1, 0.3, 1.0, 3.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument(
        "--learned", action="store_true", help="eps learned instead of the --ratios sweep"
    )
    choice.add_argument(
        "--npe", action="store_true", help="sbi's NPE on the same simulations, instead of ours"
    )
    choice.add_argument(
        "--sbibm",
        action="store_true",
        help="NPE on sbibm's gaussian_linear at 10^4 simulations against sbibm's published C2ST "
        "(3 observations per seed; ~5 minutes of one core an observation)",
    )
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="also write results/tables/linear_gaussian_{eps,learned_eps,npe,sbibm}.{csv,md} below "
        "this folder "
        "(every run's numbers in the CSV, the mean ± std table in the Markdown)",
    )
    args = parser.parse_args(argv)
    setup_logging()  # a line per run on stderr: the runs take minutes
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    begin = time.perf_counter()
    if args.learned:
        frame, kind = learned_eps_runs(args.noise, args.seeds), "learned_eps"
    elif args.npe:
        frame, kind = npe_runs(args.noise, args.seeds), "npe"
    elif args.sbibm:
        frame, kind = sbibm_npe_check(args.seeds), "sbibm"
    else:
        frame, kind = eps_sweep(args.noise, args.ratios, args.seeds), "eps"
    table = summary_table(frame, kind)
    markdown = table.to_markdown(index=False, disable_numparse=True)
    print(markdown)
    print(f"\n{len(frame)} runs in {time.perf_counter() - begin:.0f} s")
    if args.run_dir is not None:
        tables = args.run_dir / "results" / "tables"
        tables.mkdir(parents=True, exist_ok=True)
        path = tables / f"linear_gaussian_{kind}"
        write_table(frame, path.with_suffix(".csv"), path.with_suffix(".md"), markdown)


if __name__ == "__main__":
    main()
