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

import torch
from torch import Tensor, nn

from replicate.conditional_flow import check_input, sampling_inputs
from replicate.flows import InvertibleNetwork, standard_normal_log_prob

__all__ = ["ConditionalINN"]


class ConditionalINN(nn.Module):
    """Conditional invertible network x <-> z given c; see :class:`InvertibleNetwork` for args."""

    def __init__(
        self,
        data_dim: int,
        condition_dim: int,
        n_blocks: int = 8,
        hidden: int = 512,
        subnet_layers: int = 3,
        clamp: float = 2.0,
        permutation_seed: int | None = 0,
        init_scale: float | None = None,
    ) -> None:
        super().__init__()
        self.data_dim, self.condition_dim = data_dim, condition_dim
        self.network = InvertibleNetwork(
            data_dim,
            n_blocks,
            hidden,
            subnet_layers,
            clamp,
            condition_dim=condition_dim,
            permutation_seed=permutation_seed,
            init_scale=init_scale,
        )

    def _forward(self, x: Tensor, condition: Tensor) -> tuple[Tensor, Tensor]:
        """``(z, log|det J|)`` of checked inputs x (B, D) and condition (B, M)."""
        check_input(self, x, "x", self.data_dim)
        check_input(self, condition, "condition", self.condition_dim)
        return self.network(x, condition)

    def nll(self, x: Tensor, condition: Tensor) -> Tensor:
        """Per-row training loss ``0.5||z||^2 - log|det J|`` (constants dropped)."""
        z, log_det = self._forward(x, condition)
        return 0.5 * (z**2).sum(dim=1) - log_det

    def log_prob(self, x: Tensor, condition: Tensor) -> Tensor:
        """Exact log p(x | c) per row, constants included."""
        z, log_det = self._forward(x, condition)
        return standard_normal_log_prob(z) + log_det

    @torch.no_grad()
    def sample(self, condition: Tensor, n: int | None = None, z: Tensor | None = None) -> Tensor:
        """Draw x ~ p(x | c): one condition (M,) with ``n`` samples, or a batch (B, M), one each.

        Pass ``z`` of shape (rows, D) to fix the latent variable instead of drawing it.
        """
        condition, z = sampling_inputs(self, condition, n, z, self.condition_dim, self.data_dim)
        return self.network.inverse(z, condition)

    @torch.no_grad()
    def classify(self, x: Tensor, candidates: Tensor, log_prior: Tensor | None = None) -> Tensor:
        """Log posterior log p(c_k | x) over ``candidates`` (K, M) by Bayes' rule, shape (B, K)."""
        check_input(self, x, "x", self.data_dim)
        check_input(self, candidates, "candidates", self.condition_dim)
        scores = torch.stack(
            [self.log_prob(x, c.expand(x.shape[0], -1)) for c in candidates], dim=1
        )
        if log_prior is not None:
            scores = scores + log_prior.to(scores)
        return torch.log_softmax(scores, dim=1)
