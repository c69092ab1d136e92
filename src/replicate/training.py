"""One training loop for every model: Adam, optional gradient clamp, divergence checks, progress
lines, timing and resumable checkpoints.

A model supplies ``step(iteration) -> {"loss": total, other terms...}``; the loop back-propagates
``"loss"``, logs every term, and stops with :class:`replicate.runtime.TrainingDiverged` (iteration
and terms in the message) the moment any term is NaN or inf.

Example:
    >>> import torch
    >>> w = torch.nn.Parameter(torch.tensor([3.0]))
    >>> opt = make_optimizer([w], lr=0.1)
    >>> result = fit(lambda i: {"loss": (w**2).sum()}, opt, iterations=50, progress_every=0)
    >>> abs(float(w)) < 1.0
    True
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from replicate.runtime import ProgressLog, check_finite

__all__ = ["FitResult", "fit", "make_optimizer"]


def make_optimizer(
    parameters: Iterable[torch.nn.Parameter],
    lr: float,
    betas: tuple[float, float] | list[float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    **_ignored: object,
) -> torch.optim.Adam:
    """Adam from an ``optimizer:`` config section (``grad_clip`` is the loop's, so ignored here).

    Example:
        >>> p = torch.nn.Parameter(torch.zeros(1))
        >>> make_optimizer([p], lr=1e-3, betas=[0.8, 0.9], grad_clip=15.0).defaults["betas"]
        (0.8, 0.9)
    """
    return torch.optim.Adam(
        list(parameters), lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay
    )


@dataclass
class FitResult:
    """What a run of :func:`fit` measured: per-iteration loss terms and wall-clock timing."""

    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    iterations: int = 0

    @property
    def seconds_per_iteration(self) -> float:
        return self.seconds / max(self.iterations, 1)


def fit(
    step: Callable[[int], Mapping[str, Tensor]],
    optimizer: torch.optim.Optimizer,
    iterations: int,
    *,
    start: int = 0,
    grad_clip: float | None = None,
    progress_every: int = 50,
    what: str = "iteration",
    checkpoint_every: int = 0,
    on_checkpoint: Callable[[int], None] | None = None,
) -> FitResult:
    """Run ``step`` for iterations ``start .. iterations-1`` and optimise its ``"loss"``.

    Args:
        step: called with the iteration index; returns the loss terms, ``"loss"`` being the total.
        optimizer: steps every parameter that ``"loss"`` depends on.
        iterations: total number of iterations of the whole run (not of this call).
        start: first iteration, > 0 when resuming from a checkpoint.
        grad_clip: clamp each gradient element to +-grad_clip (the INN reference code's 15).
        progress_every: log a progress line every this many iterations; 0 for silence.
        checkpoint_every, on_checkpoint: call ``on_checkpoint(i + 1)`` after every
            ``checkpoint_every`` iterations, so a killed run can resume at ``i + 1``.
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    progress = ProgressLog(iterations, progress_every, what) if progress_every else None
    result = FitResult()
    begin = time.perf_counter()
    for i in range(start, iterations):
        terms = step(i)
        values = check_finite(i, terms)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_value_(params, grad_clip)
        optimizer.step()
        result.history.append(values)
        if progress is not None:
            progress.update(i + 1, values)
        if on_checkpoint is not None and checkpoint_every and (i + 1) % checkpoint_every == 0:
            on_checkpoint(i + 1)
    result.seconds = time.perf_counter() - begin
    result.iterations = iterations - start
    return result
