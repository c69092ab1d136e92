"""One run of the linear-Gaussian check (a model trained at one noise level and seed, scored
against the exact posterior on fresh observations), the mean ± std table over seeds, and the
baseline's fairness check against sbibm's published number for NPE.

Example:
    >>> settings = {"forward": [[1.0, 0.5], [-0.3, 0.8]], "n_observations": 5, "n_samples": 50,
    ...             "training": {"n_train": 128, "n_validation": 32, "epochs": 2},
    ...             "network": {"n_blocks": 2, "hidden": 16}}
    >>> row = run_model("ours_eps1s", 0.3, 0, settings)
    >>> row["model"], row["eps"], row["epochs"]
    ('ours_eps1s', 0.3, 2)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from replicate.experiments.linear_gaussian.problem import LinearGaussian, posterior_errors
from replicate.experiments.linear_gaussian.settings import model_variant
from replicate.experiments.linear_gaussian.training import train_flow, train_npe
from replicate.metrics import c2st, in_model_order, mean_std_cells, mean_std_table
from replicate.models.conditional_flow import ConditionalFlow
from replicate.models.npe import NPEPosterior

__all__ = [
    "METRICS",
    "RUN_ORDER",
    "SBIBM_DIM",
    "SBIBM_NPE_C2ST",
    "fresh_observations",
    "run_model",
    "sbibm_npe_check",
    "sbibm_table",
    "score_model",
    "summary_table",
]

log = logging.getLogger("replicate")

# The table's metrics, each a mean ± std over seeds: where eps ended over the noise std (the
# learned eps settles by itself), the scores against the exact posterior, the held-out log_prob
# (constants included, so comparable across eps; NPE has none here), and the cost.
METRICS = (
    "eps_over_noise",
    "kl",
    "mean_error",
    "std_ratio",
    "validation_log_prob",
    "epochs",
    "seconds",
)


# The table's rows: by noise std, then model (in the configured order), then seed.
RUN_ORDER = ("noise_std", "model", "seed")


def fresh_observations(problem: LinearGaussian, seed: int, n: int) -> Tensor:
    """The ``n`` observations every model of ``seed`` is scored on (drawn apart from its
    training simulations; the same for every eps and model)."""
    _, y = problem.simulate(n, torch.Generator().manual_seed(10_000 + seed))
    return y


def score_model(
    model: ConditionalFlow | NPEPosterior,
    problem: LinearGaussian,
    seed: int,
    n_observations: int,
    n_samples: int,
) -> dict[str, float]:
    """:func:`~replicate.experiments.linear_gaussian.problem.posterior_errors` of ``model`` on
    :func:`fresh_observations`, ``n_samples`` each."""
    y = fresh_observations(problem, seed, n_observations)
    torch.manual_seed(seed)
    return posterior_errors(model.sample(y.float(), n=n_samples), problem, y)


def run_model(
    name: str, noise_std: float, seed: int, settings: Mapping[str, Any]
) -> dict[str, Any]:
    """Train model ``name`` (:mod:`~replicate.experiments.linear_gaussian.settings`) on the
    problem with noise std ``noise_std`` for ``seed`` and score it: one row of the table, with
    the eps it used (``eps``, over the noise ``eps_over_noise``; per coordinate ``eps_<k>`` when
    learned; NaN for NPE), the scores, and its training summary. ``settings``: as
    :func:`~replicate.experiments.linear_gaussian.settings.run_settings` returns them."""
    variant, ratio = model_variant(name)
    problem = LinearGaussian(torch.tensor(settings["forward"]), noise_std)
    training = dict(settings["training"])
    if variant == "npe":
        model, summary = train_npe(problem, seed=seed, **training, **settings["npe"])
        # No eps, and no held-out log_prob computed here.
        nan = float("nan")
        eps_columns = {"eps": nan, "eps_over_noise": nan, "validation_log_prob": nan}
    elif variant == "fixed":
        model, summary = train_flow(
            problem, ratio * noise_std, seed=seed, **training, **settings["network"]
        )
        eps_columns = {"eps": ratio * noise_std, "eps_over_noise": ratio}
    else:
        model, summary = train_flow(problem, None, seed=seed, **training, **settings["network"])
        learned = model.eps_now().detach().tolist()
        eps_columns = {
            "eps": summary["eps_final"],
            "eps_over_noise": summary["eps_final"] / noise_std,
        }
        eps_columns |= {f"eps_{k}": e for k, e in enumerate(learned)}
    errors = score_model(model, problem, seed, settings["n_observations"], settings["n_samples"])
    log.info("%s, s %g, seed %d: %s", name, noise_std, seed, errors)
    return {"noise_std": noise_std, "model": name, "seed": seed} | eps_columns | errors | summary


def summary_table(runs: pd.DataFrame, model_order: Sequence[str]) -> pd.DataFrame:
    """Mean ± std over seeds of :data:`METRICS` (formatted cells; "n/a" where a model has no
    such number), one row per noise std and model, the models in ``model_order``.

    Example:
        >>> runs = pd.DataFrame({"noise_std": 0.1, "model": ["npe", "ours_eps1s", "npe"],
        ...                      "seed": [0, 0, 1], "kl": [0.1, 0.04, 0.3]})
        >>> table = summary_table(runs.assign(**{m: 1.0 for m in METRICS if m != "kl"}),
        ...                       ["ours_eps1s", "npe"])
        >>> table[["model", "kl", "seeds"]].values.tolist()
        [['ours_eps1s', '0.040', 1], ['npe', '0.200 ± 0.141', 2]]
    """
    digits = {"eps_over_noise": 2, "epochs": 1, "seconds": 1}
    ordered = in_model_order(runs, model_order, by=RUN_ORDER)
    return mean_std_table(ordered, ["noise_std", "model"], METRICS, digits)


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
        y = fresh_observations(problem, seed, n_observations)
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


def sbibm_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std of :func:`sbibm_npe_check`'s runs per simulation budget (``seeds`` counts its
    (seed, observation) runs), and ``sbibm``: the published C2ST at that budget, "n/a" where
    sbibm has none."""
    metrics = ["c2st", "c2st_sbibm", "epochs", "seconds"]
    table = mean_std_table(runs, ["n_simulations"], metrics, digits={"epochs": 1, "seconds": 1})
    table["sbibm"] = [
        mean_std_cells([SBIBM_NPE_C2ST[n][0]], [SBIBM_NPE_C2ST[n][1]])[0]
        if n in SBIBM_NPE_C2ST
        else "n/a"
        for n in table["n_simulations"]
    ]
    return table
