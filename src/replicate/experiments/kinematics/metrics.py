"""How close a model's posterior samples are to the reference ones, per observation.

- :func:`posterior_mmd`: the unbiased MMD^2 with the multiscale inverse-multiquadric kernel the
  INN's own losses use (:func:`replicate.models.inn.mmd_multiscale`; Kruse et al. 2021 report an
  MMD of this family), on parameters scaled by the prior's standard deviations;
- :func:`replicate.metrics.c2st` (shared): classifier two-sample test, the cross-validated
  accuracy of a small neural network telling the two sets apart; 0.5 when they cannot be told;
- :func:`resimulation_error`: mean squared distance between f(x) and the observation;
- :func:`central_interval_coverage`: for each parameter, how often the reference draws fall in
  the model's central credible interval (calibration).

Example:
    >>> g, s = torch.Generator().manual_seed(0), torch.tensor(PRIOR_STD)
    >>> a, b = torch.randn(500, 4, generator=g) * s, torch.randn(500, 4, generator=g) * s
    >>> abs(posterior_mmd(a, b)) < 0.005, posterior_mmd(a, b + s) > 0.05  # a shift of one sd
    (True, True)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from replicate.experiments.kinematics.problem import PRIOR_STD, forward
from replicate.models.inn import mmd_multiscale

__all__ = ["MMD_WIDTHS", "central_interval_coverage", "posterior_mmd", "resimulation_error"]

# Kernel widths in prior standard deviations: from a tenth of the prior's spread to its whole.
MMD_WIDTHS = (0.1, 0.3, 1.0)


def _scaled(samples: Tensor, scale: Sequence[float] | None) -> Tensor:
    samples = torch.as_tensor(samples, dtype=torch.float64)
    if scale is None:
        return samples
    return samples / torch.as_tensor(scale, dtype=torch.float64)


def posterior_mmd(
    samples: Tensor,
    reference: Tensor,
    widths: Sequence[float] = MMD_WIDTHS,
    scale: Sequence[float] | None = PRIOR_STD,
) -> float:
    """Unbiased MMD^2 between two sample sets (n, D) and (m, D), after dividing each coordinate by
    ``scale`` (the prior's standard deviations by default; None: as they are)."""
    a, b = _scaled(samples, scale), _scaled(reference, scale)
    return float(mmd_multiscale(a, b, widths, unbiased=True))


def resimulation_error(
    samples: Tensor, observation: Tensor, simulator: Callable[[Tensor], Tensor] = forward
) -> float:
    """Mean squared distance between the simulated observations of ``samples`` (n, D) and the
    ``observation`` (M,): how well the samples explain what was observed."""
    samples = torch.as_tensor(samples, dtype=torch.float64)
    observation = torch.as_tensor(observation, dtype=torch.float64)
    return float(((simulator(samples) - observation) ** 2).sum(dim=1).mean())


def central_interval_coverage(samples: Tensor, reference: Tensor, level: float = 0.9) -> Tensor:
    """Per parameter, the share of reference draws inside the model's central ``level`` interval
    (the samples' (1 - level) / 2 and (1 + level) / 2 quantiles); ``level`` when calibrated,
    below it when the model is overconfident."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    samples = torch.as_tensor(samples, dtype=torch.float64)
    reference = torch.as_tensor(reference, dtype=torch.float64)
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    low, high = torch.quantile(samples, q, dim=0)
    return ((reference >= low) & (reference <= high)).double().mean(dim=0)
