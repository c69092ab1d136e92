"""The inverse-kinematics problem (Kruse et al. 2021, after Ardizzone et al. 2019's robot arm).

Parameters x in R^4: x1 ~ N(0, 0.25^2), the height of the arm's base on a vertical rail, and
x2, x3, x4 ~ N(0, 0.5^2), three joint angles, independent. The arm starts at (0, x1) and has three
segments of lengths 0.5, 0.5 and 1.0 at the cumulative angles x2, x2 + x3, x2 + x3 + x4; the
observation y in R^2 is the end point. p(x | y*) is curved and often multimodal; its reference
samples come from rejection sampling (:func:`rejection_sample`): prior draws whose end point lies
within a tolerance of y*.

Example:
    >>> x = torch.tensor([[0.1, 0.0, 0.0, 0.0]], dtype=torch.float64)
    >>> forward(x).tolist()  # a straight arm, 2.0 long, from the base at height 0.1
    [[2.0, 0.1]]
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "LENGTHS",
    "PRIOR_STD",
    "RejectionSamples",
    "forward",
    "joint_positions",
    "rejection_sample",
    "sample_prior",
    "simulated_batch",
]

log = logging.getLogger("replicate")

PRIOR_STD = (0.25, 0.5, 0.5, 0.5)
# Batches of prior draws between two progress lines of the rejection sampler.
_PROGRESS_EVERY = 250
LENGTHS = (0.5, 0.5, 1.0)


def sample_prior(n: int, generator: torch.Generator) -> Tensor:
    """``n`` draws of x from the prior, (n, 4) float64."""
    std = torch.tensor(PRIOR_STD, dtype=torch.float64)
    return torch.randn(n, 4, generator=generator, dtype=torch.float64) * std


def joint_positions(x: Tensor) -> Tensor:
    """The arm's four points for each row of x (n, 4): the base (0, x1), the two joints and the
    end point, as (n, 4, 2).

    Example:
        >>> import math
        >>> x = torch.tensor([[0.0, math.pi / 2, -math.pi / 2, 0.0]], dtype=torch.float64)
        >>> joint_positions(x).round(decimals=6).tolist()
        [[[0.0, 0.0], [0.0, 0.5], [0.5, 0.5], [1.5, 0.5]]]
    """
    if x.ndim != 2 or x.shape[1] != 4:
        raise ValueError(f"x must have shape (n, 4), got {tuple(x.shape)}")
    angles = torch.cumsum(x[:, 1:], dim=1)
    lengths = torch.tensor(LENGTHS, dtype=x.dtype, device=x.device)
    steps = torch.stack([torch.cos(angles), torch.sin(angles)], dim=2) * lengths[None, :, None]
    base = torch.stack([torch.zeros_like(x[:, 0]), x[:, 0]], dim=1)
    return torch.cat([base[:, None], base[:, None] + torch.cumsum(steps, dim=1)], dim=1)


def forward(x: Tensor) -> Tensor:
    """The observation: the end point of the arm, (n, 2)."""
    return joint_positions(x)[:, -1]


@dataclass(frozen=True)
class RejectionSamples:
    """Accepted prior draws for each observation: ``samples`` (N_obs, n_accept, D); per
    observation, the prior draws it took to reach ``n_accept`` (``n_drawn``, (N_obs,)) and the
    largest distance it accepted (``max_distance``)."""

    samples: Tensor
    n_drawn: Tensor
    max_distance: Tensor

    @property
    def acceptance_rate(self) -> Tensor:
        """Accepted draws over prior draws, per observation (N_obs,)."""
        return self.samples.shape[1] / self.n_drawn.double()


def _accept(
    x: Tensor,
    observations: Tensor,
    counts: Tensor,
    n_drawn: Tensor,
    kept: list[list[Tensor]],
    n_accept: int,
    tolerance: float,
    drawn: int,
    simulator: Callable[[Tensor], Tensor],
) -> int:
    """Keep the draws of batch ``x`` within ``tolerance`` of each observation still short (in
    place: ``kept``, ``counts``, ``n_drawn``); return the number of prior draws made so far."""
    batch_size = len(x)
    # Only the observations still short: the rare ones run long after the rest are done.
    short = (counts < n_accept).nonzero().flatten()
    distance = torch.cdist(observations[short], simulator(x))  # (N_short, batch)
    for row, i in enumerate(short.tolist()):
        hits = (distance[row] <= tolerance).nonzero().flatten()[: n_accept - int(counts[i])]
        if len(hits):
            kept[i].append(x[hits])
            counts[i] += len(hits)
        n_drawn[i] = drawn + (int(hits[-1]) + 1 if counts[i] == n_accept else batch_size)
    return drawn + batch_size


def rejection_sample(
    observations: Tensor,
    n_accept: int,
    tolerance: float,
    generator: torch.Generator,
    *,
    prior: Callable[[int, torch.Generator], Tensor] = sample_prior,
    simulator: Callable[[Tensor], Tensor] = forward,
    batch_size: int = 200_000,
    max_draws: int = 200_000_000,
) -> RejectionSamples:
    """Reference posterior samples by rejection (ABC): prior draws whose simulated observation
    lies within ``tolerance`` (Euclidean) of each observation, the first ``n_accept`` of them.

    Vectorised over draws and observations, in batches of ``batch_size`` prior draws; every
    observation sees the same stream of draws, so the result is a function of the generator's
    seed alone. The simulation and the distances use PyTorch's thread pool (the rule's threads),
    while one background thread draws the next batch from the generator: the draws stay one
    sequential stream and every other operation is element-wise, so the result does not depend
    on the number of threads. Raises ``RuntimeError`` naming the observations still short after
    ``max_draws``.

    Example:
        >>> y = forward(torch.zeros(1, 4, dtype=torch.float64))
        >>> ref = rejection_sample(y, 5, 0.1, torch.Generator().manual_seed(0), batch_size=10_000)
        >>> ref.samples.shape, bool((ref.max_distance <= 0.1).all())
        (torch.Size([1, 5, 4]), True)
    """
    observations = torch.as_tensor(observations, dtype=torch.float64)
    if observations.ndim != 2:
        raise ValueError(f"observations must have shape (N, M), got {tuple(observations.shape)}")
    if n_accept < 1 or not tolerance > 0:
        raise ValueError(f"need n_accept >= 1 and tolerance > 0, got {n_accept} and {tolerance}")
    n_obs = observations.shape[0]
    kept: list[list[Tensor]] = [[] for _ in range(n_obs)]
    counts = torch.zeros(n_obs, dtype=torch.long)
    n_drawn = torch.zeros(n_obs, dtype=torch.long)
    drawn = 0
    with ThreadPoolExecutor(max_workers=1) as drawer:
        # The prior's draws are the one serial part: the next batch is drawn during this one.
        upcoming = drawer.submit(prior, batch_size, generator)
        while bool((counts < n_accept).any()):
            if drawn >= max_draws:
                upcoming.cancel()
                short = (counts < n_accept).nonzero().flatten().tolist()
                raise RuntimeError(
                    f"rejection sampling: observations {short[:10]} have fewer than {n_accept} "
                    f"draws within {tolerance} after {drawn} prior draws; raise the tolerance or "
                    "max_draws, or choose observations from the prior predictive"
                )
            x = upcoming.result()
            upcoming = drawer.submit(prior, batch_size, generator)
            drawn = _accept(
                x, observations, counts, n_drawn, kept, n_accept, tolerance, drawn, simulator
            )
            if (drawn // batch_size) % _PROGRESS_EVERY == 0:
                short = int((counts < n_accept).sum())
                log.info("rejection sampling: %d prior draws, %d observations short", drawn, short)
        upcoming.cancel()
    samples = torch.stack([torch.cat(k)[:n_accept] for k in kept])
    max_distance = torch.stack(
        [
            torch.linalg.vector_norm(simulator(s) - y, dim=1).max()
            for s, y in zip(samples, observations, strict=True)
        ]
    )
    return RejectionSamples(samples=samples, n_drawn=n_drawn, max_distance=max_distance)


def simulated_batch(n: int, seed: int, index: int) -> tuple[Tensor, Tensor]:
    """``n`` fresh training pairs (x, y = f(x)) in float64, drawn from a generator seeded by
    ``(seed, index)`` alone.

    Example:
        >>> a, b = simulated_batch(4, 0, 3), simulated_batch(4, 0, 3)
        >>> bool((a[0] == b[0]).all()), tuple(a[1].shape)
        (True, (4, 2))
    """
    x = sample_prior(n, torch.Generator().manual_seed(int(seed) * 1_000_003 + int(index)))
    return x, forward(x)
