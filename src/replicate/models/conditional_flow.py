"""The paper's method: one flow ``f([x, x0]) = [z, c_hat]`` trained by an exact conditional NLL.

The condition enters only as an output of the flow: ``c_hat = c + v`` with ``v ~ N(0, eps^2 I)``.
Sampling p(x | c) runs the flow backwards from ``[z, c + eps * n]``; inferring the condition runs it
forwards and reads ``c_hat`` (SPEC section 1, paper eqs. 9-10).

Example:
    >>> import torch
    >>> flow = ConditionalFlow(data_dim=2, condition_dim=3, latent_dim=2, n_blocks=2, hidden=16)
    >>> x, c = torch.randn(5, 2), torch.eye(3)[[0, 1, 2, 0, 1]]
    >>> flow.nll(x, c).shape
    torch.Size([5])
    >>> flow.sample(torch.eye(3)[0], n=7).shape
    torch.Size([7, 2])
    >>> flow.predict(x).shape
    torch.Size([5, 3])
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, Unpack

import numpy as np
import torch
from torch import Tensor, nn

from replicate.models.base import ConditionalModel, NetworkSettings, as_input
from replicate.models.flows import InvertibleNetwork, standard_normal_log_prob

__all__ = ["ConditionalFlow"]

# A learned eps is exp(EPS_RATE * parameter): Adam moves a parameter by about its learning rate
# per step, and log eps must travel several e-folds (from the observations' std down to the
# noise) within one run, so it moves EPS_RATE times faster than a weight.
EPS_RATE = 10.0


def _per_coordinate(
    value: float | Sequence[float], dim: int, name: str, positive: bool = True
) -> Tensor:
    """``value`` as one float32 per coordinate (a scalar is repeated), checked > 0 (>= 0)."""
    values = torch.as_tensor(value, dtype=torch.float32).flatten()
    if values.numel() == 1:
        values = values.expand(dim).clone()
    ok = (values > 0) if positive else (values >= 0)
    if values.numel() != dim or not bool((ok & torch.isfinite(values)).all()):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(
            f"{name} must be {bound}, one value or one per condition coordinate ({dim}), "
            f"got {value}"
        )
    return values


class ConditionalFlow(ConditionalModel):
    """Model p(x | c) and infer c from x with one invertible network.

    Dimensions: ``data_dim`` (D) + padding (P) = ``latent_dim`` (K) + ``condition_dim`` (M); the
    padding is whatever makes the two sides equal (``pad_dim``), and must be >= 0. K >= 1; with
    K < D the samples for one value of ``c_hat`` lie on a K-dimensional surface of the
    D-dimensional data space and only the ``eps`` noise on the condition spreads them across it,
    which is warned about: right when x determines c (the inverse-kinematics arm, E4, where the
    posterior is that surface thickened by ``eps``), rarely meant when the observation is noisy.

    ``eps`` is the standard deviation of the noise the method puts on the condition output, in
    the condition's own units (a scalar, or one value per condition coordinate). For a label
    (one-hot) condition the paper uses 0.1. For a continuous, noisy observation set it to the
    observation's noise std where that is known: it is the width the model gives p(c | x). The
    linear-Gaussian check (README, :mod:`replicate.experiments.linear_gaussian`) recovers the exact
    posterior at that value and misses it far from it (a tenth of it, or three times it).

    Inputs and conditions can be standardised inside the model (:meth:`fit_standardization`):
    the affine maps are buffers saved with the weights, undone when sampling and predicting, and
    included exactly in :meth:`log_prob` and :meth:`nll` (the Jacobian of the map of x).

    ``eps`` need not be set by hand (issue 28, README "Choosing eps"): with ``learn_eps`` it is a
    per-coordinate parameter fitted by maximum likelihood with the rest (the loss then keeps the
    term ``sum(log eps)`` that the paper drops), started at ``eps`` (None: at the condition's std
    once :meth:`fit_standardization` sees it) and kept above ``eps_min``; with ``anneal_from`` it
    falls geometrically from that value to ``eps`` over the first ``anneal_iterations`` training
    iterations (:meth:`schedule`), then stays there.

    Args:
        data_dim: D, the size of x.
        condition_dim: M, the size of the condition (a one-hot label, an observation).
        latent_dim: K >= 1, the size of the dummy variable z.
        eps: std of the noise on the condition output, in the condition's units (paper: 0.1);
            with ``learn_eps`` its starting value, with ``anneal_from`` its final one.
        sigma: standard deviation of the noise on the zero padding (paper: 0.05).
        learn_eps: fit eps by maximum likelihood (one value per condition coordinate).
        eps_min: the learned eps's floor, in the condition's units (one value or one per
            coordinate; for a deterministic simulator it is the posterior's thickness).
        anneal_from: anneal eps from this value (condition's units) down to ``eps``.
        anneal_iterations: the iterations the annealing takes.
        network: the invertible network's :class:`~replicate.models.base.NetworkSettings`.
    """

    eps_per_dim: Tensor
    eps_floor: Tensor

    def __init__(
        self,
        data_dim: int,
        condition_dim: int,
        latent_dim: int,
        eps: float | Sequence[float] = 0.1,
        sigma: float = 0.05,
        learn_eps: bool = False,
        eps_min: float | Sequence[float] = 0.0,
        anneal_from: float | Sequence[float] | None = None,
        anneal_iterations: int = 0,
        **network: Unpack[NetworkSettings],
    ) -> None:
        for name, value in (("data_dim", data_dim), ("condition_dim", condition_dim)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if latent_dim < 1:
            raise ValueError(
                f"latent_dim must be >= 1, got {latent_dim}: with no dummy variable z the flow "
                "maps x to the condition alone and p(x | c) is a point (nothing to sample)"
            )
        pad_dim = latent_dim + condition_dim - data_dim
        if pad_dim < 0:
            raise ValueError(
                f"dimensions do not add up: data_dim ({data_dim}) must be <= latent_dim "
                f"({latent_dim}) + condition_dim ({condition_dim}); padding cannot be negative"
            )
        if latent_dim < data_dim:
            warnings.warn(
                f"latent_dim ({latent_dim}) < data_dim ({data_dim}): the samples for one value "
                f"of the condition output lie on a {latent_dim}-dimensional surface of the "
                f"{data_dim}-dimensional data space (padding {pad_dim}) and only the eps noise "
                "spreads them across it; meant when x determines the condition, otherwise use "
                "latent_dim >= data_dim for a posterior that can spread in every direction",
                stacklevel=2,
            )
        if eps is None and not learn_eps:
            raise ValueError("eps=None (start at the condition's std) needs learn_eps=True")
        eps_values = _per_coordinate(1.0 if eps is None else eps, condition_dim, "eps")
        floor = _per_coordinate(eps_min, condition_dim, "eps_min", positive=False)
        if learn_eps and not bool((eps_values > floor).all()):
            raise ValueError(
                f"the learned eps must start above eps_min: eps {eps}, eps_min {eps_min}"
            )
        if anneal_from is not None:
            if learn_eps:
                raise ValueError("choose one of learn_eps and anneal_from, not both")
            start = _per_coordinate(anneal_from, condition_dim, "anneal_from")
            if anneal_iterations < 1:
                raise ValueError(f"anneal_iterations must be >= 1, got {anneal_iterations}")
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        super().__init__(data_dim, condition_dim, z_dim=latent_dim)
        self.latent_dim, self.pad_dim = latent_dim, pad_dim
        self.eps = eps if eps is None or isinstance(eps, float | int) else tuple(map(float, eps))
        self.sigma = sigma
        self.register_buffer("eps_per_dim", eps_values)
        self.learn_eps = learn_eps
        self.anneal_iterations = anneal_iterations if anneal_from is not None else 0
        if learn_eps:
            self.register_buffer("eps_floor", floor)
            # eps = floor + exp(EPS_RATE * log_eps_excess): above the floor, free to approach it.
            self.log_eps_excess = nn.Parameter(torch.log(eps_values - floor) / EPS_RATE)
        if anneal_from is not None:
            self.register_buffer("eps_start", start)
        self.network = InvertibleNetwork(data_dim + pad_dim, **network)

    @classmethod
    def for_observations(
        cls,
        data_dim: int,
        observation_dim: int,
        noise_std: float | Sequence[float] | None = None,
        eps_min: float | Sequence[float] = 0.0,
        **settings: Any,
    ) -> ConditionalFlow:
        """The method for a continuous observation: ``latent_dim = data_dim`` so the posterior
        can spread in every direction (padding = ``observation_dim``), ``sigma`` 0.05, and
        ``eps`` = the observation's noise std where it is known (its units; one value or one per
        coordinate), else learned (``noise_std=None``: started at the observations' std once
        :meth:`fit_standardization` sees them, kept above ``eps_min``).

        Measured on the linear-Gaussian problem (docs/eps.md; ``snakemake linear_gaussian``,
        :mod:`replicate.experiments.linear_gaussian`): the posterior is recovered at
        ``eps = noise_std`` and clearly missed at a tenth of it or three times it; the learned eps
        needs no value at all.

        Example:
            >>> flow = ConditionalFlow.for_observations(4, 2, noise_std=0.05, n_blocks=2, hidden=8)
            >>> flow.latent_dim, flow.pad_dim, flow.eps
            (4, 2, 0.05)
            >>> learned = ConditionalFlow.for_observations(4, 2, n_blocks=2, hidden=8)
            >>> learned.fit_standardization(torch.randn(100, 4), 3 * torch.randn(100, 2)).learn_eps
            True
            >>> bool((learned.eps_now() - learned.c_standardization.scale).abs().max() < 1e-5)
            True
        """
        settings.setdefault("sigma", 0.05)
        learned = {"learn_eps": True, "eps_min": eps_min} if noise_std is None else {}
        return cls(
            data_dim, observation_dim, latent_dim=data_dim, eps=noise_std, **learned, **settings
        )

    def extra_repr(self) -> str:
        return (
            f"x ({self.data_dim}) + padding ({self.pad_dim}) <-> z ({self.latent_dim}) + "
            f"condition ({self.condition_dim}), eps={self.eps}, sigma={self.sigma}"
            + (", eps learned" if self.learn_eps else "")
            + (
                f", annealed over {self.anneal_iterations} iterations"
                if self.anneal_iterations
                else ""
            )
        )

    def fit_standardization(
        self, x: Tensor | np.ndarray | None = None, condition: Tensor | np.ndarray | None = None
    ) -> ConditionalFlow:
        """:meth:`StandardizedModel.fit_standardization`; a learned eps given no start then
        begins at the observations' std (per coordinate)."""
        super().fit_standardization(x, condition)
        if condition is not None and self.learn_eps and self.eps is None:
            with torch.no_grad():
                start = torch.maximum(self.c_standardization.scale, self.eps_floor * 2)
                self.log_eps_excess.copy_(torch.log(start - self.eps_floor) / EPS_RATE)
        return self

    def eps_now(self) -> Tensor:
        """eps in the condition's units, one value per coordinate: the fixed (or, after the
        annealing, final) one, or the learned one as it stands."""
        if self.learn_eps:
            return self.eps_floor + torch.exp(EPS_RATE * self.log_eps_excess)
        return self.eps_per_dim

    def _eps(self) -> Tensor:
        """eps in the standardised condition's units, one value per coordinate."""
        return self.eps_now() / self.c_standardization.scale

    def _pad(self, x: Tensor, noise: bool, generator: torch.Generator | None = None) -> Tensor:
        pad = x.new_zeros(x.shape[0], self.pad_dim)
        if noise and self.sigma > 0:
            pad = pad + self.sigma * torch.randn(
                pad.shape, generator=generator, dtype=pad.dtype, device=pad.device
            )
        return torch.cat([x, pad], dim=1)

    def _forward(
        self, x: Tensor, noise: bool, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(z, c_hat, log|det|)`` of checked x, in standardised units (log det of x's map in)."""
        y, log_det = self.network(self._pad(self.x_standardization(x), noise, generator))
        log_det = log_det + self.x_standardization.log_det()
        return y[:, : self.latent_dim], y[:, self.latent_dim :], log_det

    # -- the method ---------------------------------------------------------------------------
    def _nll(
        self,
        x: Tensor,
        condition: Tensor,
        generator: torch.Generator | None = None,
        eps: Tensor | None = None,
    ) -> Tensor:
        """Per-row training loss: ``0.5||z||^2 + 0.5||(c_hat - c) / eps||^2 - log|det J|``.

        The padding gets fresh noise of std ``sigma``, drawn from ``generator`` (a seeded one
        gives a validation loss that does not move training's randomness). Constants are dropped
        (paper eq. 10); with standardisation, ``J`` includes the map of x, so the loss is that of
        x in its own units.
        """
        z, c_hat, log_det = self._forward(x, noise=True, generator=generator)
        eps_std = self._eps() if eps is None else eps / self.c_standardization.scale
        residual = (c_hat - self.c_standardization(condition)) / eps_std
        nll = 0.5 * (z**2).sum(dim=1) + 0.5 * (residual**2).sum(dim=1) - log_det
        if self.learn_eps:  # the constant the paper drops is what fits eps
            nll = nll + torch.log(eps_std).sum()
        return nll

    def schedule(self, iteration: int) -> dict[str, Tensor]:
        """The annealed eps of training iteration ``iteration`` (condition's units), geometric
        from ``anneal_from`` to ``eps`` over ``anneal_iterations``; nothing for a fixed or
        learned eps.

        Example:
            >>> flow = ConditionalFlow(2, 1, 2, eps=0.01, anneal_from=1.0, anneal_iterations=4,
            ...                        n_blocks=1, hidden=4)
            >>> [round(float(flow.schedule(i)["eps"][0]), 4) for i in (0, 2, 4, 9)]
            [1.0, 0.1, 0.01, 0.01]
        """
        if not self.anneal_iterations:
            return {}
        done = min(1.0, iteration / self.anneal_iterations)
        start, end = self.eps_start.double(), self.eps_per_dim.double()
        return {"eps": (start * (end / start) ** done).float()}

    def loss_terms(
        self, x: Tensor, condition: Tensor, eps: Tensor | None = None
    ) -> dict[str, Tensor]:
        """The training loss of one batch, ``{"loss": mean NLL}`` (and ``"eps"``, its mean over
        coordinates, when eps is learned or annealed), with no input checks (no host
        synchronisation): the trainer checks the data set once, the public methods every call."""
        if not (self.learn_eps or self.anneal_iterations):
            return {"loss": self._nll(x, condition).mean()}
        loss = self._nll(x, condition, eps=eps).mean()
        return {"loss": loss, "eps": (self.eps_now() if eps is None else eps).detach().mean()}

    def log_prob(self, x: Tensor | np.ndarray, condition: Tensor | np.ndarray) -> Tensor:
        """Estimate of log p(x | c), one value per row, constants included.

        The flow models the padded vector ``[x, x0]``; at ``x0 = 0`` an ideal model's density is
        ``p(x | c) * N(0; 0, sigma^2 I)``, so that Gaussian's log density at zero is subtracted to
        make the number comparable with the true p(x | c). With ``sigma == 0`` the padding is a
        point mass and the density of ``[x, 0]`` is returned as it is. The standardisation of x
        enters through its Jacobian, so standardised and raw models of the same transform agree.
        """
        x = as_input(self, x, "x", self.data_dim)
        condition = as_input(self, condition, "condition", self.condition_dim)
        z, c_hat, log_det = self._forward(x, noise=False)
        eps = self._eps()
        log_p_c = standard_normal_log_prob((c_hat - self.c_standardization(condition)) / eps)
        log_p = standard_normal_log_prob(z) + log_p_c - torch.log(eps).sum() + log_det
        if self.sigma > 0 and self.pad_dim > 0:
            log_p = log_p + 0.5 * self.pad_dim * math.log(2 * math.pi * self.sigma**2)
        return log_p

    @torch.no_grad()
    def predict(self, x: Tensor | np.ndarray) -> Tensor:
        """The inferred condition ``c_hat`` (in the condition's units) from one forward pass
        (padding at zero). For a one-hot label, ``predict(x).argmax(1)`` is the predicted class.
        """
        x = as_input(self, x, "x", self.data_dim)
        return self.c_standardization.inverse(self._forward(x, noise=False)[1])

    @torch.no_grad()
    def encode(self, x: Tensor | np.ndarray) -> Tensor:
        """The dummy variable ``z`` of ``x`` (padding at zero)."""
        x = as_input(self, x, "x", self.data_dim)
        return self._forward(x, noise=False)[0]

    def _sample(self, condition: Tensor, z: Tensor) -> Tensor:
        """The inverse from ``[z, c + eps * n]``, the padding dropped."""
        c_hat = condition + self._eps() * torch.randn_like(condition)
        return self.network.inverse(torch.cat([z, c_hat], dim=1))[:, : self.data_dim]
