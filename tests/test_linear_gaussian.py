"""The closed-form check of the method on a continuous condition: a linear-Gaussian inverse
problem, its analytic posterior (checked against a second derivation), the scores, and the eps
rule (eps = the observation's noise std) that ConditionalFlow.for_observations follows."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from helpers import PAPER_CONFIG, REPO, SMOKE_CONFIG, merged_config
from scipy.stats import multivariate_normal

from replicate.experiments.linear_gaussian.evaluation import (
    SBIBM_DIM,
    run_model,
    sbibm_npe_check,
    sbibm_table,
    summary_table,
)
from replicate.experiments.linear_gaussian.figures import figure_eps
from replicate.experiments.linear_gaussian.problem import (
    DEFAULT_FORWARD,
    LinearGaussian,
    gaussian_kl,
    posterior_errors,
)
from replicate.experiments.linear_gaussian.settings import model_names, run_settings
from replicate.experiments.linear_gaussian.training import train_flow
from replicate.files import read_json
from replicate.metrics import c2st

torch.set_num_threads(1)
A = torch.tensor(DEFAULT_FORWARD, dtype=torch.float64)


def test_posterior_equals_gaussian_conditioning_of_the_joint() -> None:
    """Second derivation: (x, y) is jointly Gaussian with Cov(x, y) = A^T and
    Cov(y) = A A^T + s^2 I, so E[x | y] = A^T Cov(y)^-1 y, Cov(x | y) = I - A^T Cov(y)^-1 A."""
    problem = LinearGaussian(A, noise_std=0.3)
    y = torch.randn(6, 2, dtype=torch.float64)
    mean, cov = problem.posterior(y)
    cov_y = A @ A.T + 0.09 * torch.eye(2, dtype=torch.float64)
    torch.testing.assert_close(mean, y @ torch.linalg.solve(cov_y, A))
    torch.testing.assert_close(
        cov, torch.eye(2, dtype=torch.float64) - A.T @ torch.linalg.solve(cov_y, A)
    )


def test_simulated_pairs_have_the_model_s_moments() -> None:
    problem = LinearGaussian(A, noise_std=0.3)
    x, y = problem.simulate(200_000, torch.Generator().manual_seed(0))
    joint = torch.cat([x, y], dim=1)
    want = torch.eye(4, dtype=torch.float64)
    want[:2, 2:], want[2:, :2] = A.T, A
    want[2:, 2:] = A @ A.T + 0.09 * torch.eye(2, dtype=torch.float64)
    np.testing.assert_allclose(torch.cov(joint.T), want, atol=0.01)


def test_gaussian_kl_equals_a_monte_carlo_estimate() -> None:
    rng = np.random.default_rng(0)
    mq, mp = np.array([0.3, -0.2]), np.array([-0.1, 0.4])
    cq, cp = np.array([[1.0, 0.3], [0.3, 0.5]]), np.array([[0.7, -0.2], [-0.2, 1.2]])
    draws = rng.multivariate_normal(mq, cq, size=400_000)
    mc = np.mean(
        multivariate_normal(mq, cq).logpdf(draws) - multivariate_normal(mp, cp).logpdf(draws)
    )
    kl = gaussian_kl(*(torch.as_tensor(a) for a in (mq, cq, mp, cp)))
    assert float(kl) == pytest.approx(mc, abs=0.01)


def test_scores_are_near_zero_for_exact_samples_and_large_for_wrong_ones() -> None:
    problem = LinearGaussian(A, noise_std=0.3)
    _, y = problem.simulate(50, torch.Generator().manual_seed(1))
    mean, cov = problem.posterior(y)
    z = torch.randn(50, 2000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    exact = mean[:, None] + z @ torch.linalg.cholesky(cov).T
    good = posterior_errors(exact, problem, y)
    assert good["kl"] < 0.01 and good["mean_error"] < 0.1 and abs(good["std_ratio"] - 1) < 0.03
    shifted = posterior_errors(exact + 2 * cov.diagonal().sqrt(), problem, y)
    assert shifted["kl"] > 1.0 and shifted["mean_error"] > 2.0
    narrow = posterior_errors(mean[:, None] + 0.3 * (exact - mean[:, None]), problem, y)
    assert narrow["std_ratio"] == pytest.approx(0.3, abs=0.02) and narrow["kl"] > 1.0


@functools.cache
def _trained(ratio: float) -> dict[str, float]:
    """The method at eps = ratio * s on the s = 0.3 problem (seed 0), scored on 100 fresh
    observations with 1000 samples each."""
    problem = LinearGaussian(A.float(), noise_std=0.3)
    flow, summary = train_flow(problem, ratio * 0.3, seed=0)
    _, y = problem.simulate(100, torch.Generator().manual_seed(10_000))
    torch.manual_seed(0)
    return posterior_errors(flow.sample(y.float(), n=1000), problem, y) | summary


def test_the_posterior_is_recovered_at_eps_equal_to_the_noise() -> None:
    """The rule of ConditionalFlow.for_observations: the analytic posterior within tolerance."""
    got = _trained(1.0)
    assert got["kl"] < 0.1, got
    assert got["mean_error"] < 0.35, got
    assert abs(got["std_ratio"] - 1.0) < 0.15, got


@pytest.mark.parametrize("ratio", [0.1, 3.0])
def test_the_posterior_is_clearly_missed_far_from_the_rule(ratio: float) -> None:
    """eps a tenth of the noise (the paper's 0.1 against noise 1, say) or three times it: the
    KL to the analytic posterior is at least ten times that at eps = s."""
    assert _trained(ratio)["kl"] > max(1.0, 10 * _trained(1.0)["kl"]), _trained(ratio)
    if ratio > 1:
        assert _trained(ratio)["std_ratio"] > 1.5  # too broad: the model thinks y noisier


def test_held_out_log_prob_picks_the_rule_when_the_noise_is_unknown() -> None:
    """log_prob (constants included) is comparable across eps and is highest at eps = s."""
    scores = {ratio: _trained(ratio)["validation_log_prob"] for ratio in (0.1, 1.0, 3.0)}
    assert max(scores, key=scores.get) == 1.0, scores


SMALL = {
    "forward": DEFAULT_FORWARD,
    "n_observations": 20,
    "n_samples": 200,
    "training": {"n_train": 4096, "n_validation": 1024, "epochs": 2},
    "network": {},
}


def test_the_table_holds_mean_and_std_over_seeds_in_the_models_order() -> None:
    runs = pd.DataFrame(
        [
            run_model(name, 0.3, seed, SMALL)
            for seed in (1, 0)
            for name in ("ours_learned", "ours_eps1s")
        ]
    )
    table = summary_table(runs, ["ours_eps1s", "ours_learned"])
    assert table["model"].tolist() == ["ours_eps1s", "ours_learned"]
    assert table["seeds"].tolist() == [2, 2] and " ± " in table.loc[0, "kl"]
    kl = runs.loc[runs["model"] == "ours_eps1s", "kl"]
    assert table.loc[0, "kl"] == f"{kl.mean():.3f} ± {kl.std():.3f}"
    assert table.loc[0, "eps_over_noise"] == "1.00 ± 0.00"
    with pytest.raises(ValueError, match="not in the table's order"):
        summary_table(runs, ["ours_eps1s"])


def test_a_run_reproduces_the_published_numbers_of_the_command_it_replaces() -> None:
    """The pipeline's run of ours at eps = s (s = 0.3, seed 0, the default settings) gives the
    very numbers the former command published (results/readme/linear_gaussian_npe, commit
    0dd2551): the same simulations, training and observations."""
    config = PAPER_CONFIG["linear_gaussian"]
    published = pd.read_csv(REPO / "results/readme/linear_gaussian_npe/linear_gaussian_eps.csv")
    expected = published.query("noise_std == 0.3 and eps_over_noise == 1.0 and seed == 0")
    row = run_model("ours_eps1s", 0.3, 0, run_settings(config, "ours_eps1s"))
    for key in ("kl", "mean_error", "std_ratio", "validation_log_prob", "epochs"):
        assert row[key] == pytest.approx(float(expected[key].iloc[0]), rel=1e-9), key


def test_the_models_are_named_for_their_eps_and_each_run_depends_on_its_own_keys() -> None:
    config = PAPER_CONFIG["linear_gaussian"]
    assert model_names(config) == [
        "ours_eps0.1s",
        "ours_eps0.3s",
        "ours_eps1s",
        "ours_eps3s",
        "ours_learned",
        "npe",
        "npe_batch10000",
    ]
    assert "npe" not in run_settings(config, "ours_eps1s")
    assert "network" not in run_settings(config, "npe")
    assert set(run_settings(config, "npe")["training"]) == {"n_train", "n_validation"}
    # sbi's default batch unless the model names one (sbibm's 10,000).
    assert "training_batch_size" not in run_settings(config, "npe")["npe"]
    assert run_settings(config, "npe_batch10000")["npe"]["training_batch_size"] == 10_000


def test_learned_eps_settles_at_the_noise_and_recovers_the_posterior() -> None:
    """With no eps given, eps is learned by maximum likelihood: it settles near the noise std
    (the RMS residual of an ideal flow) and the posterior comes out right. Without the sum(log
    eps) term that the paper drops, eps only grows (the loss falls as 1 / eps^2) and the
    posterior comes out far too broad."""
    problem = LinearGaussian(A.float(), noise_std=0.2)
    flow, summary = train_flow(problem, None, n_train=2048, epochs=30, n_blocks=2, hidden=32)
    assert 0.7 < summary["eps_final"] / 0.2 < 1.5, summary
    _, y = problem.simulate(100, torch.Generator().manual_seed(3))
    torch.manual_seed(0)
    errors = posterior_errors(flow.sample(y.float(), n=500), problem, y)
    assert errors["kl"] < 0.15 and 0.8 < errors["std_ratio"] < 1.25, errors


def test_npe_on_the_same_simulations_recovers_the_posterior() -> None:
    """sbi's NPE, given the simulations ours trains on, samples the exact posterior closely
    (an independent check of the baseline's wiring: prior, shapes, the (B, n, d) samples), and
    its table row leaves what NPE does not have (eps, a validation log-likelihood) n/a."""
    settings = {
        "forward": DEFAULT_FORWARD,
        "n_observations": 100,
        "n_samples": 500,
        "training": {"n_train": 4096, "n_validation": 1024},
        "npe": {},
    }
    # One seed: the table's mean and std over seeds are tested above on cheaper models.
    frame = pd.DataFrame([run_model("npe", 0.2, 0, settings)])
    assert (frame["epochs"] > 0).all()
    # Measured: KL 0.046, std ratio 1.04 (about 15 s).
    assert (frame["kl"] < 0.1).all() and frame["std_ratio"].between(0.85, 1.15).all(), frame
    table = summary_table(frame, ["npe"])
    assert table.loc[0, "seeds"] == 1 and table.loc[0, "kl"].startswith(f"{frame['kl'][0]:.3f}")
    assert table.loc[0, "eps_over_noise"] == "n/a" and table.loc[0, "validation_log_prob"] == "n/a"


def test_sbibm_check_scores_npe_against_exact_draws_for_its_own_observations() -> None:
    """The fairness check's wiring: NPE's draws are scored against exact posterior draws of the
    same observation, so on a small budget they are told apart less well than the prior's draws
    are (an independent C2ST); sbibm's published number sits beside it in the table."""
    frame = sbibm_npe_check([0], n_observations=1, n_simulations=500, n_samples=300)
    problem = LinearGaussian(torch.eye(SBIBM_DIM), noise_std=1.0)
    _, y = problem.simulate(1, torch.Generator().manual_seed(10_000))
    mean, cov = problem.posterior(y)
    g = torch.Generator().manual_seed(1)
    exact = (
        mean[0]
        + torch.randn(300, SBIBM_DIM, generator=g, dtype=torch.float64)
        @ torch.linalg.cholesky(cov).T
    )
    prior = torch.randn(300, SBIBM_DIM, generator=g, dtype=torch.float64)
    # Measured: NPE 0.58 by sbibm's classifier (0.60 by E4's); the prior 0.90.
    prior_c2st = c2st(prior, exact, early_stopping=False, max_iter=10_000)
    assert (frame["c2st_sbibm"] < prior_c2st - 0.1).all(), (frame, prior_c2st)
    table = sbibm_table(frame)
    assert table.loc[0, "sbibm"] == "n/a" and table.loc[0, "seeds"] == 1
    # At the budget sbibm published, its number (0.552 +- 0.032) sits in that row.
    table = sbibm_table(frame.assign(n_simulations=10_000))
    assert table.loc[0, "sbibm"].startswith("0.552"), table


def test_smoke_table_is_the_mean_and_std_of_runs_the_library_reproduces(smoke_run: Path) -> None:
    """The pipeline's table holds, per model in the configured order, the mean and std of its
    runs' files; and a run made by its rule (another process, one thread) equals the same run
    made here through the library."""
    config = merged_config(PAPER_CONFIG, yaml.safe_load(SMOKE_CONFIG.read_text()))
    lg = config["linear_gaussian"]
    runs = pd.DataFrame(
        [read_json(p) for p in (smoke_run / "results/linear_gaussian/runs").glob("*.json")]
    )
    stats = pd.read_csv(smoke_run / "results/tables/linear_gaussian.csv")
    assert stats["model"].tolist() == model_names(lg)
    assert model_names(lg) == ["ours_eps1s", "ours_learned", "npe", "npe_batch128"]
    for _, row in stats.iterrows():
        kl = runs.loc[runs["model"] == row["model"], "kl"].to_numpy()
        assert len(kl) == len(config["seeds"]) == row["n_seeds"]
        assert row["kl_mean"] == pytest.approx(kl.mean(), rel=1e-12)
        assert row["kl_std"] == pytest.approx(kl.std(ddof=1), rel=1e-12)
    made_by_rule = runs.query("model == 'ours_learned' and seed == 1").iloc[0]
    made_here = run_model("ours_learned", 0.3, 1, run_settings(lg, "ours_learned"))
    for key in ("kl", "mean_error", "std_ratio", "eps_0", "eps_1", "validation_log_prob"):
        assert made_by_rule[key] == made_here[key], key
    sbibm = (smoke_run / "results/tables/npe_sbibm_check.md").read_text()
    assert "c2st_sbibm" in sbibm and "n/a" in sbibm  # 300 simulations: sbibm published none


def test_figure_draws_the_table_s_numbers_where_they_belong() -> None:
    """Each noise level's fixed-eps line passes through its rows' means in eps order, the
    learned eps sits where it settled, NPE is a horizontal line at its mean, and the KL floor
    is d(d + 3) / (4 n) for n exact samples."""
    stats = pd.DataFrame(
        {
            "noise_std": [0.1] * 4 + [0.3] * 2,
            "model": ["ours_eps1s", "ours_eps0.3s", "ours_learned", "npe", "ours_eps1s", "npe"],
            "eps_over_noise_mean": [1.0, 0.3, 1.05, np.nan, 1.0, np.nan],
            "eps_over_noise_std": [0.0, 0.0, 0.02, np.nan, 0.0, np.nan],
            "kl_mean": [0.04, 1.4, 0.037, 0.1, 0.02, 0.05],
            "kl_std": [0.01, 0.6, 0.004, 0.05, 0.002, 0.03],
            "std_ratio_mean": [1.0, 0.8, 1.05, 1.06, 0.97, 1.04],
            "std_ratio_std": [0.01, 0.7, 0.02, 0.04, 0.01, 0.04],
        }
    )
    kl_ax, spread_ax = figure_eps(stats, n_samples=1000, data_dim=2).axes
    # An error bar's label is its container's; the container's first artist is its data line.
    lines = {line.get_label(): line for line in kl_ax.lines}
    lines |= {bars.get_label(): bars[0] for bars in kl_ax.containers}
    fixed = lines["ours, eps fixed (s = 0.1)"]
    assert list(fixed.get_xdata()) == [0.3, 1.0] and list(fixed.get_ydata()) == [1.4, 0.04]
    assert list(lines["ours, eps fixed (s = 0.3)"].get_ydata()) == [0.02]
    learned = lines["ours, eps learned (s = 0.1)"]
    assert list(learned.get_xdata()) == [1.05] and list(learned.get_ydata()) == [0.037]
    assert list(lines["sbi NPE (s = 0.3)"].get_ydata()) == [0.05, 0.05]
    floors = [line for line in kl_ax.lines if line.get_linestyle() == ":"]
    assert [list(line.get_ydata()) for line in floors] == [[2 * 5 / 4000] * 2]
    spread = {bars.get_label(): bars[0] for bars in spread_ax.containers}
    assert list(spread["ours, eps fixed (s = 0.1)"].get_ydata()) == [0.8, 1.0]
