"""The linear-Gaussian inverse problem and its exact posterior, and the scores of a model's
posterior samples against it.

x ~ N(0, I_d), y = A x + N(0, s^2 I_m). The posterior is Gaussian with covariance
``S = (I + A^T A / s^2)^-1`` and mean ``S A^T y / s^2``. :func:`posterior_errors` scores a
model's samples of p(x | y) against it: the Gaussian KL of the samples' moments to the exact
posterior, and the error of the posterior mean in posterior standard deviations.

Example:
    >>> problem = LinearGaussian(torch.tensor([[1.0, 0.5], [-0.3, 0.8]]), noise_std=0.2)
    >>> x, y = problem.simulate(5, torch.Generator().manual_seed(0))
    >>> mean, cov = problem.posterior(y)
    >>> tuple(mean.shape), tuple(cov.shape)
    ((5, 2), (2, 2))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["DEFAULT_FORWARD", "LinearGaussian", "gaussian_kl", "posterior_errors"]

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
