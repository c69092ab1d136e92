"""The invertible network: GLOW-style affine coupling blocks with fixed random permutations.

This is the one network shared by the method ("ours"), the INN baseline and the cINN baseline. It
follows the reference implementation (FrEIA's ``GLOWCouplingBlock`` + ``PermuteRandom``) exactly,
which ``tests/test_flows.py`` checks weight for weight.

Example:
    >>> import torch
    >>> net = InvertibleNetwork(dim=4, n_blocks=2, hidden=16)
    >>> x = torch.randn(8, 4)
    >>> y, log_det = net(x)
    >>> torch.allclose(net.inverse(y), x, atol=1e-5)
    True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "AffineCouplingBlock",
    "InvertibleNetwork",
    "mlp",
    "network_kwargs",
    "soft_clamp",
    "standard_normal_log_prob",
]

# The reference code's soft clamp: clamp * (2 / pi) * atan(s), with 2 / pi rounded as FrEIA does.
_ATAN_SCALE = 0.636


def soft_clamp(s: Tensor, clamp: float) -> Tensor:
    """Bound log-scales smoothly to (-clamp, clamp), as FrEIA's ``clamp_activation="ATAN"``.

    Example:
        >>> bool(soft_clamp(torch.tensor([1e6]), 2.0) < 2.0)
        True
    """
    return clamp * _ATAN_SCALE * torch.atan(s)


def network_kwargs(network: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """The network arguments every model takes, from a config's network section (``n_blocks``,
    ``hidden``, ``subnet_layers``, ``clamp``, optional ``init_scale`` and ``permutations``).

    ``permutations: per_block`` gives block k the permutation of FrEIA's ``PermuteRandom(seed=k)``,
    the same for every run (the INN authors' toy code); otherwise they are drawn from ``seed``.

    Example:
        >>> net = {"n_blocks": 2, "hidden": 8, "subnet_layers": 2, "clamp": 2.0,
        ...        "permutations": "per_block"}
        >>> network_kwargs(net, seed=3)["permutation_seed"] is None
        True
    """
    return {
        "n_blocks": network["n_blocks"],
        "hidden": network["hidden"],
        "subnet_layers": network["subnet_layers"],
        "clamp": network["clamp"],
        "init_scale": network.get("init_scale"),
        "permutation_seed": None if network.get("permutations") == "per_block" else seed,
    }


def mlp(in_dim: int, out_dim: int, hidden: int, layers: int = 3) -> nn.Sequential:
    """A fully connected subnet: ``layers`` Linear layers with ReLU between them.

    Example:
        >>> mlp(3, 4, hidden=8, layers=3)(torch.zeros(2, 3)).shape
        torch.Size([2, 4])
    """
    if layers < 1:
        raise ValueError(f"subnet needs at least one layer, got layers={layers}")
    widths = [in_dim] + [hidden] * (layers - 1) + [out_dim]
    modules: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        modules.append(nn.Linear(a, b))
        if i < layers - 1:
            modules.append(nn.ReLU())
    return nn.Sequential(*modules)


class AffineCouplingBlock(nn.Module):
    """GLOW-style coupling (paper eq. 4), both halves transformed in one block.

    ``y1 = x1 * exp(s2(x2, c)) + t2(x2, c)`` then ``y2 = x2 * exp(s1(y1, c)) + t1(y1, c)``, where
    the log-scales pass through :func:`soft_clamp`. ``c`` is an optional condition concatenated to
    every subnet input (the cINN); leave ``condition_dim=0`` for an unconditional block.

    Example:
        >>> block = AffineCouplingBlock(dim=5, hidden=8)
        >>> x = torch.randn(3, 5)
        >>> y, log_det = block(x)
        >>> torch.allclose(block.inverse(y), x, atol=1e-5)
        True
    """

    def __init__(
        self,
        dim: int,
        hidden: int,
        subnet_layers: int = 3,
        clamp: float = 2.0,
        condition_dim: int = 0,
    ) -> None:
        super().__init__()
        if dim < 2:
            raise ValueError(f"a coupling block needs dim >= 2, got {dim}")
        self.len1 = dim // 2
        self.len2 = dim - self.len1
        self.clamp = clamp
        self.condition_dim = condition_dim
        # Names as FrEIA: subnet1 reads the first half's output, subnet2 the second half.
        self.subnet1 = mlp(self.len1 + condition_dim, 2 * self.len2, hidden, subnet_layers)
        self.subnet2 = mlp(self.len2 + condition_dim, 2 * self.len1, hidden, subnet_layers)

    def _with_condition(self, h: Tensor, condition: Tensor | None) -> Tensor:
        if self.condition_dim == 0:
            return h
        if condition is None or condition.shape != (h.shape[0], self.condition_dim):
            got = None if condition is None else tuple(condition.shape)
            raise ValueError(
                f"conditional block expects a condition of shape ({h.shape[0]}, "
                f"{self.condition_dim}), got {got}"
            )
        return torch.cat([h, condition], dim=1)

    def _scale_shift(self, subnet: nn.Module, h: Tensor, n: int) -> tuple[Tensor, Tensor]:
        a = subnet(h)
        return soft_clamp(a[:, :n], self.clamp), a[:, n:]

    def forward(self, x: Tensor, condition: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map ``x`` to ``y``; returns ``(y, log|det dy/dx|)`` with one log-det per row."""
        x1, x2 = x[:, : self.len1], x[:, self.len1 :]
        s2, t2 = self._scale_shift(self.subnet2, self._with_condition(x2, condition), self.len1)
        y1 = x1 * torch.exp(s2) + t2
        s1, t1 = self._scale_shift(self.subnet1, self._with_condition(y1, condition), self.len2)
        y2 = x2 * torch.exp(s1) + t1
        return torch.cat([y1, y2], dim=1), s2.sum(dim=1) + s1.sum(dim=1)

    def inverse(self, y: Tensor, condition: Tensor | None = None) -> Tensor:
        """Map ``y`` back to ``x``."""
        y1, y2 = y[:, : self.len1], y[:, self.len1 :]
        s1, t1 = self._scale_shift(self.subnet1, self._with_condition(y1, condition), self.len2)
        x2 = (y2 - t1) * torch.exp(-s1)
        s2, t2 = self._scale_shift(self.subnet2, self._with_condition(x2, condition), self.len1)
        x1 = (y1 - t2) * torch.exp(-s2)
        return torch.cat([x1, x2], dim=1)


class InvertibleNetwork(nn.Module):
    """A stack of :class:`AffineCouplingBlock`, each followed by a fixed random permutation.

    The permutations are drawn from ``permutation_seed`` and stored as buffers, so they travel with
    the state dict. ``permutation_seed=None`` gives block k the permutation FrEIA's
    ``PermuteRandom(seed=k)`` draws (numpy's ``RandomState(k)``), the same whatever the run's
    seed, as the INN authors' toy notebook builds its network. ``init_scale`` reproduces that
    notebook's initialisation (every parameter drawn from N(0, init_scale^2)); ``None`` keeps
    PyTorch's default.

    Example:
        >>> net = InvertibleNetwork(dim=6, n_blocks=3, hidden=16, condition_dim=2)
        >>> x, c = torch.randn(4, 6), torch.randn(4, 2)
        >>> y, log_det = net(x, c)
        >>> torch.allclose(net.inverse(y, c), x, atol=1e-5)
        True
    """

    def __init__(
        self,
        dim: int,
        n_blocks: int = 8,
        hidden: int = 512,
        subnet_layers: int = 3,
        clamp: float = 2.0,
        condition_dim: int = 0,
        permutation_seed: int | None = 0,
        init_scale: float | None = None,
    ) -> None:
        super().__init__()
        if n_blocks < 1:
            raise ValueError(f"n_blocks must be >= 1, got {n_blocks}")
        self.dim = dim
        self.condition_dim = condition_dim
        self.blocks = nn.ModuleList(
            AffineCouplingBlock(dim, hidden, subnet_layers, clamp, condition_dim)
            for _ in range(n_blocks)
        )
        if permutation_seed is None:
            block_perms = [np.random.RandomState(k).permutation(dim) for k in range(n_blocks)]
            perms = torch.stack([torch.as_tensor(perm) for perm in block_perms])
        else:
            generator = torch.Generator().manual_seed(permutation_seed)
            perms = torch.stack([torch.randperm(dim, generator=generator) for _ in range(n_blocks)])
        self.register_buffer("permutations", perms)
        self.register_buffer("inverse_permutations", torch.argsort(perms, dim=1))
        if init_scale is not None:
            with torch.no_grad():
                for p in self.blocks.parameters():
                    p.normal_(0.0, init_scale)

    def _check_input(self, x: Tensor, name: str) -> None:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{name} must have shape (batch, {self.dim}), got {tuple(x.shape)}")

    def forward(self, x: Tensor, condition: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map ``x`` (batch, dim) to ``y``; returns ``(y, log|det dy/dx|)``."""
        self._check_input(x, "x")
        log_det = x.new_zeros(x.shape[0])
        for block, perm in zip(self.blocks, self.permutations, strict=True):
            x, block_log_det = block(x, condition)
            x = x[:, perm]
            log_det = log_det + block_log_det
        return x, log_det

    def inverse(self, y: Tensor, condition: Tensor | None = None) -> Tensor:
        """Map ``y`` (batch, dim) back to ``x``."""
        self._check_input(y, "y")
        for block, inv in zip(
            reversed(self.blocks), reversed(self.inverse_permutations), strict=True
        ):
            y = block.inverse(y[:, inv], condition)
        return y


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """Row-wise log density of N(0, I), constants included.

    Example:
        >>> round(float(standard_normal_log_prob(torch.zeros(1, 2))[0]), 4)
        -1.8379
    """
    return -0.5 * (z**2).sum(dim=1) - 0.5 * z.shape[1] * math.log(2 * math.pi)
