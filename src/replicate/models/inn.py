"""The INN baseline (Ardizzone et al. 2018), as in its reference toy code (SPEC section 2).

The same invertible network as the method maps the padded data ``[x, x0]`` to ``[z, (pad), y]``,
but it is trained by four weighted losses instead of one likelihood:

* ``y``: MSE of the y-outputs (and padding outputs) against the noisy label (and padding noise);
* ``z``: MMD between ``[z_out, y_out.detach()]`` and ``[N(0, I) samples, noisy y]``;
* ``x_backward``: MMD between the x-part of ``f^-1([N(0, I), pad noise, noisy y])`` and the true x,
  weighted by a ramp that grows from 0.004 to 1 over ``ramp_epochs`` "epochs";
* ``x_reconstruction``: MSE between ``f^-1([z_out.detach() + noise, pad noise, noisy y])`` and the
  padded input.

A variant switches losses on or off (Figure 5.2 of the paper). The INN has no density, so unlike
:class:`replicate.models.conditional_flow.ConditionalFlow` it offers no ``log_prob``. Like the
other models it can standardise x and y inside the model
(:meth:`~replicate.models.base.ConditionalModel.fit_standardization`): the four
losses then compare standardised values (the kernel widths are in those units) and the noise
scales stay in y's own units, as ``eps`` does for the method.

Example:
    >>> import torch
    >>> inn = INN(data_dim=2, condition_dim=3, latent_dim=2, n_blocks=2, hidden=16)
    >>> x, c = torch.randn(64, 2), torch.eye(3)[torch.randint(3, (64,))]
    >>> sorted(inn.loss_terms(x, c, **inn.schedule(0)))
    ['loss', 'ramp', 'x_backward', 'x_reconstruction', 'y', 'z']
    >>> inn.predict(x).shape, inn.sample(torch.eye(3)[0], n=5).shape
    (torch.Size([64, 3]), torch.Size([5, 2]))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Unpack

import numpy as np
import torch
from torch import Tensor

from replicate.models.base import ConditionalModel, NetworkSettings, as_input
from replicate.models.flows import InvertibleNetwork

__all__ = ["INN", "INN_LOSSES", "backward_ramp", "mmd_multiscale"]

INN_LOSSES: tuple[str, ...] = ("y", "z", "x_backward", "x_reconstruction")
# The reference toy code's weights (lambd_predict, lambd_latent, lambd_rev, lambd_predict).
DEFAULT_WEIGHTS: dict[str, float] = {
    "y": 3.0,
    "z": 300.0,
    "x_backward": 400.0,
    "x_reconstruction": 3.0,
}


def mmd_multiscale(
    x: Tensor, y: Tensor, widths: Sequence[float] = (0.05, 0.2, 0.9), unbiased: bool = False
) -> Tensor:
    """MMD^2 estimate with a sum of inverse-multiquadratic kernels.

    ``k(a, b) = sum_w w^2 / (w^2 + ||a - b||^2)``, and the estimate is
    ``mean(K_xx) + mean(K_yy) - 2 mean(K_xy)``: diagonals included (biased, > 0 even for two
    samples of one distribution) as the INN reference code's loss, or with ``unbiased`` the means
    of K_xx and K_yy over the off-diagonal pairs (about 0 for one distribution; used as a metric).

    Example:
        >>> a = torch.randn(100, 2)
        >>> float(mmd_multiscale(a, a)) == 0.0
        True
        >>> bool(mmd_multiscale(a, a + 3.0) > 0.1)
        True
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(
            f"mmd_multiscale needs two (n, d) tensors of equal d, got {tuple(x.shape)} and "
            f"{tuple(y.shape)}"
        )
    # Squared distances from the Gram matrices, clamped at 0 against rounding, as the reference.
    xx, yy, xy = x @ x.t(), y @ y.t(), x @ y.t()
    rx, ry = xx.diag(), yy.diag()
    dxx = (rx[:, None] + rx[None, :] - 2.0 * xx).clamp_min(0.0)
    dyy = (ry[:, None] + ry[None, :] - 2.0 * yy).clamp_min(0.0)
    dxy = (rx[:, None] + ry[None, :] - 2.0 * xy).clamp_min(0.0)
    k_xx = k_yy = k_xy = 0.0
    for w in widths:
        a2 = float(w) ** 2
        k_xx = k_xx + a2 / (a2 + dxx)
        k_yy = k_yy + a2 / (a2 + dyy)
        k_xy = k_xy + a2 / (a2 + dxy)
    if unbiased:
        n, m = len(x), len(y)
        if n < 2 or m < 2:
            raise ValueError("the unbiased MMD needs at least two points in each sample")
        k_xx = (k_xx.sum() - k_xx.diagonal().sum()) / (n * (n - 1))
        k_yy = (k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
        return k_xx + k_yy - 2.0 * k_xy.mean()
    return k_xx.mean() + k_yy.mean() - 2.0 * k_xy.mean()


def backward_ramp(epoch: int | float, ramp_epochs: float, start: float = 0.002) -> float:
    """Weight factor of the backward MMD: ``min(1, 2 * start ** (1 - epoch / ramp_epochs))``.

    The reference toy code evaluates it once per (integer) epoch; it starts at ``2 * start`` and
    reaches 1 at ``epoch = ramp_epochs * (1 - log 2 / log(1 / start))`` (44.4 of 50 for 0.002).

    Example:
        >>> backward_ramp(0, 50), backward_ramp(50, 50)
        (0.004, 1.0)
    """
    if ramp_epochs <= 0:
        raise ValueError(f"ramp_epochs must be > 0, got {ramp_epochs}")
    return min(1.0, 2.0 * start ** (1.0 - float(epoch) / ramp_epochs))


class INN(ConditionalModel):
    """Invertible network ``[x, pad] <-> [z, pad, y]`` trained with the INN's four losses.

    Args:
        data_dim: size of x (2 for the Gaussian mixture).
        condition_dim: size of y (the one-hot label, 8).
        latent_dim: size of z.
        total_dim: width of the network; ``None`` uses ``latent_dim + condition_dim`` (no padding
            on the output side, the layout shared with the method). The reference toy code used 16,
            which pads the output side too.
        y_noise: std of the noise added to y, in y's units (and, in the reconstruction loss, the
            std of the noise added to z).
        sample_y_noise: std of the noise added to y when sampling (the reference's 0.1), in y's
            units.
        pad_noise: std of the noise put in every padding slot.
        weights: loss weights keyed by :data:`INN_LOSSES`.
        mmd_widths: widths of the inverse-multiquadratic kernels.
        losses: which losses are on (a subset of :data:`INN_LOSSES`).
        ramp_start, ramp_epochs, iterations_per_epoch: the backward-MMD ramp, see
            :func:`backward_ramp`; the epoch is ``iteration // iterations_per_epoch``.
        network: the invertible network's :class:`~replicate.models.base.NetworkSettings`.
    """

    has_log_prob = False  # four losses, no likelihood: no density to evaluate

    def __init__(
        self,
        data_dim: int,
        condition_dim: int,
        latent_dim: int,
        total_dim: int | None = None,
        y_noise: float = 0.1,
        sample_y_noise: float = 0.1,
        pad_noise: float = 0.05,
        weights: Mapping[str, float] | None = None,
        mmd_widths: Sequence[float] = (0.05, 0.2, 0.9),
        losses: Sequence[str] = INN_LOSSES,
        ramp_start: float = 0.002,
        ramp_epochs: float = 50,
        iterations_per_epoch: int = 8,
        **network: Unpack[NetworkSettings],
    ) -> None:
        total = latent_dim + condition_dim if total_dim is None else total_dim
        if total < data_dim or total < latent_dim + condition_dim:
            raise ValueError(
                f"total_dim ({total}) must be >= data_dim ({data_dim}) and >= latent_dim "
                f"({latent_dim}) + condition_dim ({condition_dim}): padding cannot be negative"
            )
        unknown = sorted(set(losses) - set(INN_LOSSES))
        if unknown or not losses:
            raise ValueError(f"losses must be a non-empty subset of {INN_LOSSES}, got {losses}")
        weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
        missing = sorted(set(losses) - set(weights))
        if missing:
            raise ValueError(f"no weight given for losses {missing}")
        if iterations_per_epoch < 1:
            raise ValueError(f"iterations_per_epoch must be >= 1, got {iterations_per_epoch}")
        super().__init__(data_dim, condition_dim, z_dim=latent_dim)
        self.latent_dim = latent_dim
        self.total_dim = total
        self.pad_x = total - data_dim  # padding on the input side
        self.pad_yz = total - latent_dim - condition_dim  # padding on the output side
        self.y_noise, self.pad_noise, self.sample_y_noise = y_noise, pad_noise, sample_y_noise
        self.weights = {k: float(v) for k, v in weights.items()}
        self.mmd_widths = tuple(float(w) for w in mmd_widths)
        self.active = tuple(name for name in INN_LOSSES if name in losses)
        self.ramp_start, self.ramp_epochs = ramp_start, ramp_epochs
        self.iterations_per_epoch = iterations_per_epoch
        self.network = InvertibleNetwork(total, **network)

    # -- layout -------------------------------------------------------------------------------
    def _noise(self, x: Tensor, width: int, scale: float | Tensor) -> Tensor:
        # Drawn even at scale 0, as the reference does, so the random stream does not depend on it.
        return scale * torch.randn(x.shape[0], width, device=x.device, dtype=x.dtype)

    def _output(self, z: Tensor, pad: Tensor, y: Tensor) -> Tensor:
        """``[z, pad, y]``: the output side of the network."""
        return torch.cat([z, pad, y], dim=1)

    def _y_noise(self, std: float) -> Tensor:
        """A noise std in y's units as one value per standardised y coordinate."""
        return std / self.c_standardization.scale

    def ramp(self, iteration: int) -> float:
        """Backward-MMD weight factor at a training iteration (constant within an epoch)."""
        epoch = iteration // self.iterations_per_epoch
        return backward_ramp(epoch, self.ramp_epochs, self.ramp_start)

    # -- training -----------------------------------------------------------------------------
    def schedule(self, iteration: int) -> dict[str, Tensor]:
        """The iteration's ramp (history column ``ramp``) and the backward MMD's weight times it,
        as float32 tensors: inputs of a CUDA graph of the step, read anew at every replay.

        The product is formed in double precision, as ``weight * ramp * value`` with Python
        floats did, so the CPU's numbers are those of before (bit for bit).
        """
        ramp = self.ramp(iteration)
        return {
            "ramp": torch.tensor(ramp, dtype=torch.float32),
            "backward_weight": torch.tensor(
                self.weights.get("x_backward", 0.0) * ramp, dtype=torch.float32
            ),
        }

    def loss_terms(
        self, x: Tensor, condition: Tensor, ramp: Tensor, backward_weight: Tensor
    ) -> dict[str, Tensor]:
        """The active loss terms (unweighted), ``"ramp"``, and ``"loss"``, their weighted sum;
        ``ramp`` and ``backward_weight`` from :meth:`schedule`.

        Follows the reference toy code's ``train()`` step by step, random draws included and in
        its order (input padding, output padding, label noise, prior z; then for the backward
        pass fresh output padding shared by both inverse passes, fresh label noise, the
        reconstruction's z perturbation, prior z), so that one seeded step reproduces it:
        ``tests/test_inn_reference.py`` checks every term against that loop run on FrEIA. z and
        y outputs are detached where it detaches. Its two ``backward()`` calls add gradients, so
        one backward pass of the weighted sum gives the same update. No host synchronisation:
        the step can be captured as a CUDA graph.
        """
        if x.shape[1] != self.data_dim or condition.shape != (x.shape[0], self.condition_dim):
            raise ValueError(
                f"expected x (n, {self.data_dim}) and condition (n, {self.condition_dim}), got "
                f"{tuple(x.shape)} and {tuple(condition.shape)}"
            )
        k, m = self.latent_dim, self.condition_dim
        active = set(self.active)
        x, condition = self.x_standardization(x), self.c_standardization(condition)
        y_noise = self._y_noise(self.y_noise)
        terms: dict[str, Tensor] = {}
        x_padded = torch.cat([x, self._noise(x, self.pad_x, self.pad_noise)], dim=1)
        pad_target = self._noise(x, self.pad_yz, self.pad_noise)
        y_noisy = condition + self._noise(condition, m, y_noise)
        z_prior = self._noise(x, k, 1.0)
        if {"y", "z", "x_reconstruction"} & active:
            out, _ = self.network(x_padded)
        if "y" in active:
            # Fit of everything after z: padding outputs (vs padding noise) and y (vs noisy y).
            target = torch.cat([pad_target, y_noisy], dim=1)
            terms["y"] = ((out[:, k:] - target) ** 2).mean()
        if "z" in active:
            fake = torch.cat([out[:, :k], out[:, -m:].detach()], dim=1)
            real = torch.cat([z_prior, y_noisy], dim=1)
            terms["z"] = mmd_multiscale(fake, real, self.mmd_widths)
        if {"x_backward", "x_reconstruction"} & active:
            pad_back = self._noise(x, self.pad_yz, self.pad_noise)
            y_fresh = condition + self._noise(condition, m, y_noise)
            z_perturbation = self._noise(x, k, self.y_noise)
            z_rand = self._noise(x, k, 1.0)
        if "x_reconstruction" in active:
            z_near = out[:, :k].detach() + z_perturbation
            x_rec = self.network.inverse(self._output(z_near, pad_back, y_fresh))
            terms["x_reconstruction"] = ((x_rec - x_padded) ** 2).mean()
        if "x_backward" in active:
            x_rand = self.network.inverse(self._output(z_rand, pad_back, y_fresh))
            terms["x_backward"] = mmd_multiscale(x_rand[:, : self.data_dim], x, self.mmd_widths)
        total = sum(
            (backward_weight if name == "x_backward" else self.weights[name]) * value
            for name, value in terms.items()
        )
        return {"loss": total, **terms, "ramp": ramp}

    # -- use ----------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, x: Tensor | np.ndarray) -> Tensor:
        """The y-outputs of one forward pass with the padding at zero, shape (n, condition_dim),
        in y's units.

        For a one-hot label, ``predict(x).argmax(1)`` is the predicted class.
        """
        x = as_input(self, x, "x", self.data_dim)
        u = self.x_standardization(x)
        padded = torch.cat([u, u.new_zeros(u.shape[0], self.pad_x)], dim=1)
        return self.c_standardization.inverse(self.network(padded)[0][:, -self.condition_dim :])

    def _sample(self, condition: Tensor, z: Tensor) -> Tensor:
        """As the reference does: ``f^-1([z, 0, y + sample_y_noise * n])``. As in the reference
        notebook's sampling cell, the output padding (if any) is zero and y carries the training
        label noise (its 0.1): without it the samples squeeze towards the mode centres."""
        y = condition + self._y_noise(self.sample_y_noise) * torch.randn_like(condition)
        x = self.network.inverse(self._output(z, z.new_zeros(z.shape[0], self.pad_yz), y))
        return x[:, : self.data_dim]
