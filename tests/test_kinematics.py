"""E4's library parts on their own: the arm against hand-computed positions, the rejection
sampler against the reference it must produce (within tolerance; the analytic posterior of a
linear-Gaussian problem), and the posterior distances on samples of one and of two distributions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from replicate.experiments.kinematics.metrics import (
    central_interval_coverage,
    posterior_mmd,
    resimulation_error,
)
from replicate.experiments.kinematics.problem import (
    PRIOR_STD,
    forward,
    joint_positions,
    rejection_sample,
    sample_prior,
)
from replicate.experiments.linear_gaussian.problem import LinearGaussian
from replicate.models.inn import mmd_multiscale

torch.set_num_threads(1)


def test_arm_positions_by_hand() -> None:
    # Base at 0.3; first segment straight up, second bent back to horizontal, third down 45 deg.
    x = torch.tensor([[0.3, math.pi / 2, -math.pi / 2, -math.pi / 4]], dtype=torch.float64)
    want = [
        [0.0, 0.3],
        [0.0, 0.8],
        [0.5, 0.8],
        [0.5 + math.cos(math.pi / 4), 0.8 - math.sin(math.pi / 4)],
    ]
    torch.testing.assert_close(joint_positions(x)[0], torch.tensor(want, dtype=torch.float64))
    torch.testing.assert_close(forward(x)[0], torch.tensor(want[-1], dtype=torch.float64))
    # Segment lengths are 0.5, 0.5, 1.0 whatever the angles.
    pts = joint_positions(sample_prior(100, torch.Generator().manual_seed(0)))
    lengths = torch.linalg.vector_norm(pts[:, 1:] - pts[:, :-1], dim=2)
    torch.testing.assert_close(lengths, torch.tensor([0.5, 0.5, 1.0]).expand(100, 3).double())
    with pytest.raises(ValueError, match=r"shape \(n, 4\)"):
        forward(torch.zeros(3, 2))


def test_prior_has_the_benchmark_scales() -> None:
    x = sample_prior(200_000, torch.Generator().manual_seed(1))
    np.testing.assert_allclose(x.std(0), PRIOR_STD, rtol=0.01)
    np.testing.assert_allclose(x.mean(0), 0.0, atol=0.005)


def test_every_accepted_draw_resimulates_within_the_tolerance() -> None:
    gen = torch.Generator().manual_seed(2)
    observations = forward(sample_prior(5, gen))
    ref = rejection_sample(observations, 200, 0.05, gen, batch_size=100_000)
    assert ref.samples.shape == (5, 200, 4)
    for obs, samples in zip(observations, ref.samples, strict=True):
        assert float(torch.linalg.vector_norm(forward(samples) - obs, dim=1).max()) <= 0.05
    assert bool((ref.max_distance <= 0.05).all())
    assert bool((ref.acceptance_rate > 0).all() and (ref.acceptance_rate < 1).all())
    # The same seed gives the same reference.
    again = rejection_sample(
        observations, 200, 0.05, torch.Generator().manual_seed(2), batch_size=100_000
    )
    assert not torch.equal(again.samples, ref.samples)  # another stream: the generator moved on
    gen = torch.Generator().manual_seed(2)
    same_obs = forward(sample_prior(5, gen))
    assert torch.equal(
        rejection_sample(same_obs, 200, 0.05, gen, batch_size=100_000).samples, ref.samples
    )


def test_rejection_sampler_recovers_a_closed_form_posterior() -> None:
    """A linear forward process with the tolerance as the noise: y = A x is observed through a
    ball of radius tau, close to Gaussian noise for small tau; ABC's draws have the analytic
    posterior's mean and covariance of x ~ N(0, I), y = A x + N(0, s^2 I) with s^2 = tau^2 / 4
    (the variance of one coordinate of a uniform point in a disc of radius tau)."""
    a = torch.tensor([[1.0, 0.5], [-0.3, 0.8]], dtype=torch.float64)
    tau = 0.2
    problem = LinearGaussian(a, noise_std=tau / 2)
    y = torch.tensor([[0.4, -0.2]], dtype=torch.float64)
    ref = rejection_sample(
        y,
        4000,
        tau,
        torch.Generator().manual_seed(3),
        prior=lambda n, g: torch.randn(n, 2, generator=g, dtype=torch.float64),
        simulator=lambda x: x @ a.T,
        batch_size=200_000,
    )
    mean, cov = problem.posterior(y)
    samples = ref.samples[0]
    np.testing.assert_allclose(samples.mean(0), mean[0], atol=0.01)
    np.testing.assert_allclose(torch.cov(samples.T), cov, atol=0.004)


def _serial_rejection(observations, n_accept, tolerance, seed, batch_size):
    """The sampler's definition written as a plain loop: batch after batch from one generator,
    each observation keeping its first n_accept draws within the tolerance."""
    generator = torch.Generator().manual_seed(seed)
    kept = [[] for _ in observations]
    while any(len(k) < n_accept for k in kept):
        x = sample_prior(batch_size, generator)
        y = forward(x)
        for k, obs in zip(kept, observations, strict=True):
            close = torch.linalg.vector_norm(y - obs, dim=1) <= tolerance
            k.extend(x[close][: n_accept - len(k)])
    return torch.stack([torch.stack(k) for k in kept])


def test_rejection_sampler_is_one_stream_whatever_the_thread_count() -> None:
    observations = forward(sample_prior(6, torch.Generator().manual_seed(4)))
    expected = _serial_rejection(observations, 30, 0.1, seed=2, batch_size=20_000)
    previous = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            got = rejection_sample(
                observations, 30, 0.1, torch.Generator().manual_seed(2), batch_size=20_000
            )
            assert torch.equal(got.samples, expected), f"{threads} thread(s)"
    finally:
        torch.set_num_threads(previous)


def test_rejection_sampler_says_which_observations_it_could_not_serve() -> None:
    far = torch.tensor([[50.0, 50.0]], dtype=torch.float64)
    with pytest.raises(RuntimeError, match=r"observations \[0\] have fewer than 10 draws"):
        rejection_sample(far, 10, 0.01, torch.Generator(), batch_size=1000, max_draws=5000)


def test_unbiased_mmd_is_about_zero_for_one_distribution_the_biased_is_not() -> None:
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(400, 4, generator=g), torch.randn(400, 4, generator=g)
    assert abs(float(mmd_multiscale(a, b, unbiased=True))) < 0.005
    assert float(mmd_multiscale(a, b)) > 0.005  # the loss' biased estimate keeps the diagonal
    # Unbiased: the mean of K_xx over pairs i != j, checked by a loop on a small case.
    x, y = a[:5].double(), b[:6].double()
    k = lambda p, q: sum(w**2 / (w**2 + ((p - q) ** 2).sum()) for w in (0.05, 0.2, 0.9))  # noqa: E731
    kxx = sum(k(x[i], x[j]) for i in range(5) for j in range(5) if i != j) / 20
    kyy = sum(k(y[i], y[j]) for i in range(6) for j in range(6) if i != j) / 30
    kxy = sum(k(x[i], y[j]) for i in range(5) for j in range(6)) / 30
    torch.testing.assert_close(mmd_multiscale(x, y, unbiased=True), kxx + kyy - 2 * kxy)


def test_posterior_mmd_near_zero_for_one_distribution_and_clear_for_a_shift() -> None:
    g = torch.Generator().manual_seed(5)
    scale = torch.tensor(PRIOR_STD, dtype=torch.float64)
    a = torch.randn(600, 4, generator=g, dtype=torch.float64) * scale
    b = torch.randn(600, 4, generator=g, dtype=torch.float64) * scale
    shifted = b + 0.5 * scale  # half a prior sd in every coordinate
    assert abs(posterior_mmd(a, b)) < 0.005 and posterior_mmd(a, shifted) > 0.02


def test_resimulation_error_and_coverage() -> None:
    x = torch.zeros(3, 4, dtype=torch.float64)
    assert resimulation_error(x, torch.tensor([2.0, 0.0])) == 0.0
    assert resimulation_error(x, torch.tensor([2.0, 1.0])) == pytest.approx(1.0)
    g = torch.Generator().manual_seed(6)
    model = torch.randn(20_000, 2, generator=g, dtype=torch.float64)
    reference = torch.randn(20_000, 2, generator=g, dtype=torch.float64)
    np.testing.assert_allclose(central_interval_coverage(model, reference, 0.9), 0.9, atol=0.01)
    narrow = central_interval_coverage(0.5 * model, reference, 0.9)
    assert bool((narrow < 0.7).all())  # an overconfident model covers too little
