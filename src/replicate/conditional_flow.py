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

import torch
from torch import Tensor, nn

from replicate.flows import InvertibleNetwork, standard_normal_log_prob

__all__ = ["ConditionalFlow", "check_input", "sampling_inputs"]


def check_input(
    model: nn.Module, t: Tensor, name: str, width: int, ndims: tuple[int, ...] = (2,)
) -> None:
    """Raise ``ValueError`` saying what was expected unless ``t`` fits ``model``.

    ``t`` must be a tensor of shape (batch, ``width``) (or (``width``,) when ``ndims`` allows 1),
    of the model's floating-point dtype, on the model's device, and finite: a wrong input fails
    here, naming the argument, instead of deep inside a matmul or as a NaN loss.
    Shared by every conditional model (:class:`ConditionalFlow`, the cINN, the INN).

    Example:
        >>> flow = ConditionalFlow(data_dim=2, condition_dim=3, latent_dim=2, n_blocks=1, hidden=4)
        >>> check_input(flow, torch.zeros(5, 3), "x", 2)
        Traceback (most recent call last):
        ...
        ValueError: x must have shape (batch, 2), got (5, 3)
    """
    if not isinstance(t, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.ndim not in ndims or t.shape[-1] != width:
        shapes = " or ".join(f"(batch, {width})" if n == 2 else f"({width},)" for n in ndims)
        raise ValueError(f"{name} must have shape {shapes}, got {tuple(t.shape)}")
    param = next(model.parameters())
    if t.dtype != param.dtype:
        raise ValueError(
            f"{name} must be a floating-point tensor of the model's dtype {param.dtype}, "
            f"got {t.dtype}"
        )
    if t.device != param.device:
        raise ValueError(
            f"{name} is on {t.device} but the model is on {param.device}; "
            f"move it with .to({str(param.device)!r})"
        )
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite, but contains NaN or inf values")


def sampling_inputs(
    model: nn.Module,
    condition: Tensor,
    n: int | None,
    z: Tensor | None,
    condition_dim: int,
    latent_dim: int,
) -> tuple[Tensor, Tensor]:
    """Checked ``(conditions, z)`` for a model's ``sample``, one row per sample.

    ``condition`` is one condition (``condition_dim``,) with ``n`` >= 1 samples wanted, or a batch
    (B, ``condition_dim``), one sample per row (``n`` then None or B). ``z`` (rows,
    ``latent_dim``) fixes the latent variable; None draws it from N(0, I). Every tensor passes
    :func:`check_input`.
    """
    check_input(model, condition, "condition", condition_dim, ndims=(1, 2))
    if condition.ndim == 1:
        if n is None or n < 1:
            raise ValueError("sample(condition, n): one condition of shape (M,) needs n >= 1")
        condition = condition.expand(n, -1)
    elif n is not None and n != condition.shape[0]:
        raise ValueError(
            f"sample: a batch of {condition.shape[0]} conditions gives one sample each; "
            f"got n={n} (pass one condition of shape (M,) to draw n samples of it)"
        )
    rows = condition.shape[0]
    if z is None:
        return condition, torch.randn(
            rows, latent_dim, dtype=condition.dtype, device=condition.device
        )
    check_input(model, z, "z", latent_dim)
    if z.shape[0] != rows:
        raise ValueError(f"z has {z.shape[0]} rows but there are {rows} conditions")
    return condition, z


class ConditionalFlow(nn.Module):
    """Model p(x | c) and infer c from x with one invertible network.

    Dimensions: ``data_dim`` (D) + padding (P) = ``latent_dim`` (K) + ``condition_dim`` (M); the
    padding is whatever makes the two sides equal, and must be >= 0.

    Args:
        data_dim: D, the size of x.
        condition_dim: M, the size of the condition (e.g. a one-hot label).
        latent_dim: K, the size of the dummy variable z.
        eps: standard deviation of the noise on the condition output (paper: 0.1).
        sigma: standard deviation of the noise on the zero padding (paper: 0.05).
        n_blocks, hidden, subnet_layers, clamp, permutation_seed, init_scale: the network, see
            :class:`replicate.flows.InvertibleNetwork`.
    """

    def __init__(
        self,
        data_dim: int,
        condition_dim: int,
        latent_dim: int,
        eps: float = 0.1,
        sigma: float = 0.05,
        n_blocks: int = 8,
        hidden: int = 512,
        subnet_layers: int = 3,
        clamp: float = 2.0,
        permutation_seed: int | None = 0,
        init_scale: float | None = None,
    ) -> None:
        super().__init__()
        pad_dim = latent_dim + condition_dim - data_dim
        if pad_dim < 0:
            raise ValueError(
                f"dimensions do not add up: data_dim ({data_dim}) must be <= latent_dim "
                f"({latent_dim}) + condition_dim ({condition_dim}); padding cannot be negative"
            )
        if eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        self.data_dim, self.condition_dim, self.latent_dim = data_dim, condition_dim, latent_dim
        self.pad_dim = pad_dim
        self.eps, self.sigma = eps, sigma
        self.network = InvertibleNetwork(
            data_dim + pad_dim,
            n_blocks,
            hidden,
            subnet_layers,
            clamp,
            permutation_seed=permutation_seed,
            init_scale=init_scale,
        )

    def _pad(self, x: Tensor, noise: bool) -> Tensor:
        pad = x.new_zeros(x.shape[0], self.pad_dim)
        if noise and self.sigma > 0:
            pad = pad + self.sigma * torch.randn_like(pad)
        return torch.cat([x, pad], dim=1)

    def _split(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return y[:, : self.latent_dim], y[:, self.latent_dim :]

    # -- the method ---------------------------------------------------------------------------
    def nll(self, x: Tensor, condition: Tensor) -> Tensor:
        """Per-row training loss: ``0.5||z||^2 + 0.5||c_hat - c||^2 / eps^2 - log|det J|``.

        The padding gets fresh noise of std ``sigma``; constants are dropped (paper eq. 10).
        """
        check_input(self, x, "x", self.data_dim)
        check_input(self, condition, "condition", self.condition_dim)
        y, log_det = self.network(self._pad(x, noise=True))
        z, c_hat = self._split(y)
        fit = ((c_hat - condition) ** 2).sum(dim=1) / self.eps**2
        return 0.5 * (z**2).sum(dim=1) + 0.5 * fit - log_det

    def log_prob(self, x: Tensor, condition: Tensor) -> Tensor:
        """Estimate of log p(x | c), one value per row, constants included.

        The flow models the padded vector ``[x, x0]``; at ``x0 = 0`` an ideal model's density is
        ``p(x | c) * N(0; 0, sigma^2 I)``, so that Gaussian's log density at zero is subtracted to
        make the number comparable with the true p(x | c). With ``sigma == 0`` the padding is a
        point mass and the density of ``[x, 0]`` is returned as it is.
        """
        check_input(self, x, "x", self.data_dim)
        check_input(self, condition, "condition", self.condition_dim)
        y, log_det = self.network(self._pad(x, noise=False))
        z, c_hat = self._split(y)
        log_p_c = standard_normal_log_prob((c_hat - condition) / self.eps)
        log_p_c = log_p_c - self.condition_dim * math.log(self.eps)
        log_p = standard_normal_log_prob(z) + log_p_c + log_det
        if self.sigma > 0 and self.pad_dim > 0:
            log_p = log_p + 0.5 * self.pad_dim * math.log(2 * math.pi * self.sigma**2)
        return log_p

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """The inferred condition ``c_hat`` from one forward pass (padding at zero).

        For a one-hot label, ``predict(x).argmax(1)`` is the predicted class.
        """
        check_input(self, x, "x", self.data_dim)
        return self._split(self.network(self._pad(x, noise=False))[0])[1]

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """The dummy variable ``z`` of ``x`` (padding at zero)."""
        check_input(self, x, "x", self.data_dim)
        return self._split(self.network(self._pad(x, noise=False))[0])[0]

    @torch.no_grad()
    def sample(self, condition: Tensor, n: int | None = None, z: Tensor | None = None) -> Tensor:
        """Draw x ~ p(x | c).

        ``condition`` is either one condition of shape (M,) with ``n`` samples wanted, giving
        (n, D), or a batch of shape (B, M), one sample per row, giving (B, D). Pass ``z`` of shape
        (rows, K) to fix the dummy variable instead of drawing it (the paper's Figure 5.4).
        """
        condition, z = sampling_inputs(self, condition, n, z, self.condition_dim, self.latent_dim)
        c_hat = condition + self.eps * torch.randn_like(condition)
        x_padded = self.network.inverse(torch.cat([z, c_hat], dim=1))
        return x_padded[:, : self.data_dim]
