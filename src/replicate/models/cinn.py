"""The cINN baseline (Ardizzone et al. 2019): the condition feeds every coupling subnet.

The flow maps x to z alone, trained by the plain NLL ``0.5||z||^2 - log|det J|``. It has no
forward-pass classifier; :meth:`ConditionalINN.classify` uses Bayes' rule over candidate conditions
instead, which costs one forward pass per class.

Example:
    >>> import torch
    >>> cinn = ConditionalINN(data_dim=2, condition_dim=3, n_blocks=2, hidden=16)
    >>> x, c = torch.randn(4, 2), torch.eye(3)[[0, 1, 2, 0]]
    >>> cinn.nll(x, c).shape
    torch.Size([4])
    >>> cinn.classify(x, torch.eye(3)).shape
    torch.Size([4, 3])
"""

from __future__ import annotations

from typing import Unpack

import numpy as np
import torch
from torch import Tensor

from replicate.models.base import ConditionalModel, NetworkSettings, as_input
from replicate.models.flows import InvertibleNetwork, standard_normal_log_prob

__all__ = ["ConditionalINN"]


class ConditionalINN(ConditionalModel):
    """Conditional invertible network x <-> z given c, on the network ``network``
    (:class:`~replicate.models.base.NetworkSettings`).

    Inputs and conditions can be standardised inside the model
    (:meth:`~replicate.models.base.ConditionalModel.fit_standardization`), as for
    :class:`~replicate.models.conditional_flow.ConditionalFlow`; the map of x enters the density
    exactly.
    """

    def __init__(
        self,
        data_dim: int,
        condition_dim: int,
        **network: Unpack[NetworkSettings],
    ) -> None:
        super().__init__(data_dim, condition_dim, z_dim=data_dim)
        self.network = InvertibleNetwork(data_dim, condition_dim=condition_dim, **network)

    def _forward(
        self, x: Tensor | np.ndarray, condition: Tensor | np.ndarray
    ) -> tuple[Tensor, Tensor]:
        """``(z, log|det J|)`` of inputs x (B, D) and condition (B, M), the map of x included."""
        x = as_input(self, x, "x", self.data_dim)
        condition = as_input(self, condition, "condition", self.condition_dim)
        return self._forward_checked_inputs(x, condition)

    def _forward_checked_inputs(self, x: Tensor, condition: Tensor) -> tuple[Tensor, Tensor]:
        """``_forward`` of inputs already checked (the training step)."""
        z, log_det = self.network(self.x_standardization(x), self.c_standardization(condition))
        return z, log_det + self.x_standardization.log_det()

    def _nll(
        self, x: Tensor, condition: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """Per-row training loss ``0.5||z||^2 - log|det J|`` (constants dropped); draws no
        noise, ``generator`` is there so that every model's ``nll`` is called the same way."""
        z, log_det = self._forward_checked_inputs(x, condition)
        return 0.5 * (z**2).sum(dim=1) - log_det

    def log_prob(self, x: Tensor | np.ndarray, condition: Tensor | np.ndarray) -> Tensor:
        """Exact log p(x | c) per row, constants included."""
        z, log_det = self._forward(x, condition)
        return standard_normal_log_prob(z) + log_det

    def _sample(self, condition: Tensor, z: Tensor) -> Tensor:
        """The inverse from z (as wide as x) given the condition."""
        return self.network.inverse(z, condition)

    @torch.no_grad()
    def classify(self, x: Tensor, candidates: Tensor, log_prior: Tensor | None = None) -> Tensor:
        """Log posterior log p(c_k | x) over ``candidates`` (K, M) by Bayes' rule, shape (B, K)."""
        x = as_input(self, x, "x", self.data_dim)
        candidates = as_input(self, candidates, "candidates", self.condition_dim)
        scores = torch.stack(
            [self.log_prob(x, c.expand(x.shape[0], -1)) for c in candidates], dim=1
        )
        if log_prior is not None:
            scores = scores + log_prior.to(scores)
        return torch.log_softmax(scores, dim=1)
