"""Metric functions against closed forms and hand computations."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from replicate.experiments.gmm.problem import GaussianMixture
from replicate.metrics import (
    accuracy,
    c2st,
    gaussian_w2,
    in_mode_fraction,
    nll,
    summarise,
    wasserstein2,
)


def test_accuracy_counts_argmax_hits_and_accepts_tensors() -> None:
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.5, 0.1, 0.4], [0.0, 0.0, 1.0]])
    assert accuracy(scores, torch.tensor([0, 1, 2, 2])) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="need scores"):
        accuracy(np.zeros(3), np.zeros(3))


def test_w2_of_identical_samples_is_zero_even_when_permuted() -> None:
    x = np.random.default_rng(0).normal(size=(300, 2))
    assert wasserstein2(x, x) == pytest.approx(0.0, abs=1e-6)
    assert wasserstein2(x, x[::-1].copy()) == pytest.approx(0.0, abs=1e-6)


def test_w2_of_a_translation_is_the_shift_length() -> None:
    # For squared Euclidean cost W2^2 >= |mean difference|^2, and the identity coupling attains it.
    x = np.random.default_rng(1).normal(size=(200, 2))
    shift = np.array([0.3, -0.4])
    assert wasserstein2(x, x + shift) == pytest.approx(0.5, rel=1e-9)


def test_gaussian_w2_closed_form_by_hand() -> None:
    # Diagonal covariances: W2^2 = |dm|^2 + sum (sqrt(a_i) - sqrt(b_i))^2 = 1 + (1 - 2)^2 + 0.
    w = gaussian_w2(np.zeros(2), np.eye(2), np.array([1.0, 0.0]), np.diag([4.0, 1.0]))
    assert w == pytest.approx(math.sqrt(2.0))


def test_w2_on_large_gaussian_samples_matches_closed_form() -> None:
    rng = np.random.default_rng(2)
    n = 1500
    cov_b = np.array([[2.0, 0.6], [0.6, 0.5]])
    a = rng.normal(size=(n, 2))
    b = rng.multivariate_normal([1.0, -0.5], cov_b, size=n)
    exact = gaussian_w2(np.zeros(2), np.eye(2), np.array([1.0, -0.5]), cov_b)
    # Empirical W2 between finite samples fluctuates by about n^-1/2 in 2-d; 0.1 is ~5 sigma here.
    assert wasserstein2(a, b) == pytest.approx(exact, abs=0.1)
    # ...and the estimate clearly separates distributions that differ by less than that.
    assert abs(wasserstein2(a, rng.normal(size=(n, 2)))) < 0.5 * exact


def test_w2_with_unequal_sizes_and_non_finite_samples() -> None:
    a = np.zeros((3, 2))
    b = np.ones((5, 2))
    assert wasserstein2(a, b) == pytest.approx(math.sqrt(2.0))
    b[0, 0] = np.nan
    assert math.isnan(wasserstein2(a, b))


@pytest.mark.parametrize("label_map", ["all", "some"])
def test_in_mode_fraction_exact_samples_hit_shifted_samples_miss(label_map: str) -> None:
    gm = GaussianMixture(label_map)
    gen = torch.Generator().manual_seed(0)
    n = 4000
    ceiling = 1 - math.exp(-9 / 2)  # P(|x - mu| <= 3 std) for an isotropic 2-d Gaussian
    for label in range(gm.n_labels):
        x = gm.sample_conditional(label, n, gen)
        frac = in_mode_fraction(x, label, gm.means, gm.mode_labels, gm.std)
        assert frac == pytest.approx(ceiling, abs=0.01)
        # Half-way between neighbouring modes (1.0 apart along the octagon) is 2.5 std from each.
        shifted = x + torch.tensor([0.0, 1.2])
        assert in_mode_fraction(shifted, label, gm.means, gm.mode_labels, gm.std) < 0.15
    # Samples of the right place but requested for another label never count (label map "all").
    if label_map == "all":
        x = gm.sample_conditional(0, n, gen)
        assert in_mode_fraction(x, 1, gm.means, gm.mode_labels, gm.std) == 0.0


def test_in_mode_fraction_radius_matches_rayleigh_law() -> None:
    # |x - mu| / std of a 2-d standard Gaussian is Rayleigh: P(r <= k) = 1 - exp(-k^2 / 2).
    x = np.random.default_rng(3).normal(size=(20000, 2)) * 0.2
    centers, labels = np.zeros((1, 2)), np.zeros(1, dtype=int)
    for k in (1.0, 2.0):
        frac = in_mode_fraction(x, 0, centers, labels, std=0.2, radius=k)
        assert frac == pytest.approx(1 - math.exp(-(k**2) / 2), abs=0.01)


def test_nll_of_the_true_model_equals_the_exact_value() -> None:
    # One Gaussian mode: -log N(x; mu, s^2 I) = |x - mu|^2 / (2 s^2) + log(2 pi s^2), by hand.
    gm = GaussianMixture("all")
    x = gm.means[[3, 3]] + torch.tensor([[0.1, -0.2], [0.0, 0.0]])
    log_p = gm.log_likelihood(x)[:, 3]
    s2 = gm.std**2
    by_hand = [0.05 / (2 * s2) + math.log(2 * math.pi * s2), math.log(2 * math.pi * s2)]
    assert nll(log_p) == pytest.approx(np.mean(by_hand), rel=1e-6)  # means are float32
    # Expected value over p: E[-log p] = entropy of a 2-d Gaussian = 1 + log(2 pi s^2).
    sample = gm.sample_conditional(3, 20000, torch.Generator().manual_seed(0))
    entropy = 1 + math.log(2 * math.pi * s2)
    assert nll(gm.log_likelihood(sample)[:, 3]) == pytest.approx(entropy, abs=0.03)


def test_summarise_mean_std_counts_on_a_hand_made_table() -> None:
    df = pd.DataFrame(
        {
            "model": ["ours", "ours", "ours", "inn", "inn", "inn"],
            "labels": ["all"] * 6,
            "acc": [0.9, 0.8, 1.0, 0.5, np.nan, 0.7],
            "nll": [1.0, 2.0, 3.0, np.nan, np.nan, np.nan],
            "diverged": [False, False, False, False, True, False],
        }
    )
    out = summarise(df, ["model", "labels"], ["acc", "nll"]).set_index("model")
    assert out.loc["ours", "acc_mean"] == pytest.approx(0.9)
    assert out.loc["ours", "acc_std"] == pytest.approx(0.1)  # sample std (ddof=1)
    assert out.loc["ours", "nll_std"] == pytest.approx(1.0)
    assert out.loc["inn", "acc_mean"] == pytest.approx(0.6)  # the diverged NaN is left out
    assert out.loc["inn", "acc_std"] == pytest.approx(math.sqrt(0.02))
    assert math.isnan(out.loc["inn", "nll_mean"])
    assert out.loc["ours", "n_seeds"] == 3 and out.loc["inn", "n_seeds"] == 3
    assert out.loc["ours", "n_diverged"] == 0 and out.loc["inn", "n_diverged"] == 1
    assert list(out.index) == ["ours", "inn"]  # groups keep the table's order
    with pytest.raises(KeyError, match="missing|not in the table"):
        summarise(df, ["model"], ["nope"])


def test_c2st_near_chance_for_one_distribution_and_clear_for_a_shift() -> None:
    g = torch.Generator().manual_seed(5)
    a = torch.randn(600, 4, generator=g, dtype=torch.float64)
    b = torch.randn(600, 4, generator=g, dtype=torch.float64)
    assert abs(c2st(a, b) - 0.5) < 0.05
    assert c2st(a, b + 0.5) > 0.6  # half a std in every coordinate
