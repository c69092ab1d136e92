"""A per-coordinate affine map ``u = (x - shift) / scale``, stored with a model's weights.

Every model here can standardise its inputs and conditions with one of these: fitted once from
training data (:meth:`Standardization.fit`), saved in the model's ``state_dict`` (so in its
safetensors checkpoint), undone on sampling, and included exactly in a density through
:meth:`Standardization.log_det`. Unfitted, it is the identity: ``(x - 0) / 1`` is ``x`` to the bit.

Example:
    >>> import torch
    >>> s = Standardization(2).fit(torch.tensor([[0.0, 10.0], [2.0, 30.0]]))
    >>> s(torch.tensor([[2.0, 30.0]])).tolist(), s.inverse(torch.zeros(1, 2)).tolist()
    ([[0.7071067690849304, 0.7071067690849304]], [[1.0, 20.0]])
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["Standardization"]


class Standardization(nn.Module):
    """``u = (x - shift) / scale`` per coordinate; buffers ``shift`` and ``scale`` of shape (dim,).

    Args:
        dim: the number of coordinates.
    """

    shift: Tensor
    scale: Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.register_buffer("shift", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))

    @torch.no_grad()
    def set(self, shift: Tensor, scale: Tensor) -> Standardization:
        """Store ``shift`` and ``scale`` (each (dim,), every scale > 0); returns ``self``.

        Example:
            >>> Standardization(1).set(torch.tensor([1.0]), torch.tensor([0.0]))
            Traceback (most recent call last):
            ...
            ValueError: every scale must be > 0 and finite, got [0.0] (a constant coordinate?)
        """
        shift, scale = torch.as_tensor(shift), torch.as_tensor(scale)
        if shift.shape != (self.dim,) or scale.shape != (self.dim,):
            raise ValueError(
                f"shift and scale must have shape ({self.dim},), "
                f"got {tuple(shift.shape)} and {tuple(scale.shape)}"
            )
        if not bool(torch.isfinite(shift).all()):
            raise ValueError(f"every shift must be finite, got {shift.tolist()}")
        if not bool(((scale > 0) & torch.isfinite(scale)).all()):
            raise ValueError(
                f"every scale must be > 0 and finite, got {scale.tolist()} (a constant coordinate?)"
            )
        self.shift.copy_(shift)
        self.scale.copy_(scale)
        return self

    def fit(self, data: Tensor) -> Standardization:
        """Set ``shift`` and ``scale`` to the per-coordinate mean and std of ``data`` (N, dim).

        A constant coordinate (std 0) cannot be standardised: it is refused, naming it.
        """
        if data.ndim != 2 or data.shape[1] != self.dim or data.shape[0] < 2:
            raise ValueError(
                f"fit needs data of shape (N >= 2, {self.dim}), got {tuple(data.shape)}"
            )
        data = data.detach().to(self.shift)
        std = data.std(dim=0)
        constant = (std == 0).nonzero().flatten().tolist()
        if constant:
            raise ValueError(f"coordinates {constant} are constant in the data: cannot standardise")
        return self.set(data.mean(dim=0), std)

    @property
    def is_identity(self) -> bool:
        """Whether the map is the identity (never fitted, or fitted to mean 0 and std 1)."""
        return bool((self.shift == 0).all() and (self.scale == 1).all())

    def forward(self, x: Tensor) -> Tensor:
        """Raw values (..., dim) -> standardised ones."""
        return (x - self.shift) / self.scale

    def inverse(self, u: Tensor) -> Tensor:
        """Standardised values (..., dim) -> raw ones (the inverse of :meth:`forward`)."""
        return u * self.scale + self.shift

    def log_det(self) -> Tensor:
        """``log |det du/dx| = -sum(log scale)``, the same for every row.

        Example:
            >>> s = Standardization(3).set(torch.zeros(3), torch.full((3,), 2.0))
            >>> round(float(s.log_det()), 4)
            -2.0794
        """
        return -torch.log(self.scale).sum()
