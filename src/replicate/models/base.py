"""What every conditional model shares: the interface (:class:`ConditionalModel`), the network
settings they pass on (:class:`NetworkSettings`), and the input checks of their public methods
(:func:`as_input`, :func:`sampling_inputs`).

Example:
    >>> from replicate.models import ConditionalFlow, ConditionalINN
    >>> network = NetworkSettings(n_blocks=2, hidden=16)
    >>> models = [ConditionalFlow(2, 3, 2, **network), ConditionalINN(2, 3, **network)]
    >>> [tuple(m.sample(torch.eye(3)[0], n=4).shape) for m in models]
    [(4, 2), (4, 2)]
"""

from __future__ import annotations

from typing import ClassVar, TypedDict

import numpy as np
import torch
from torch import Tensor, nn

from replicate.models.standardization import Standardization

__all__ = ["ConditionalModel", "NetworkSettings", "as_input", "sampling_inputs"]


class NetworkSettings(TypedDict, total=False):
    """The invertible network's settings, the same keywords for every model, passed on to
    :class:`~replicate.models.flows.InvertibleNetwork` (whose defaults apply to those left out):
    ``n_blocks`` coupling blocks (8), subnets of ``subnet_layers`` linear layers (3) of width
    ``hidden`` (512), log-scales soft-clamped to ``clamp`` (2.0), permutations drawn from
    ``permutation_seed`` (0; ``None``: FrEIA's ``PermuteRandom(seed=k)`` per block), parameters
    drawn from N(0, ``init_scale``^2) (``None``: PyTorch's default).
    """

    n_blocks: int
    hidden: int
    subnet_layers: int
    clamp: float
    permutation_seed: int | None
    init_scale: float | None


def as_input(
    model: nn.Module, t: Tensor | np.ndarray, name: str, width: int, ndims: tuple[int, ...] = (2,)
) -> Tensor:
    """``t`` as a tensor that fits ``model``, or ``ValueError`` saying what was expected.

    ``t`` must have shape (batch, ``width``) (or (``width``,) when ``ndims`` allows 1) and be
    finite. A numpy array (or any array-like) becomes a tensor on the model's device; real numbers
    of another dtype (float64, integers, bool) are converted to the model's floating-point dtype.
    A tensor on another device is refused with the ``.to(...)`` to write: moving data between
    devices silently hides a slow copy. A wrong input fails here, naming the argument, instead of
    deep inside a matmul or as a NaN loss. Shared by every conditional model
    (:class:`ConditionalFlow`, the cINN, the INN).

    Example:
        >>> from replicate.models import ConditionalFlow
        >>> flow = ConditionalFlow(data_dim=2, condition_dim=3, latent_dim=2, n_blocks=1, hidden=4)
        >>> as_input(flow, np.zeros((5, 2)), "x", 2).dtype
        torch.float32
        >>> as_input(flow, torch.zeros(5, 3), "x", 2)
        Traceback (most recent call last):
        ...
        ValueError: x must have shape (batch, 2), got (5, 3)
    """
    param = next(model.parameters())
    if not isinstance(t, Tensor):
        try:
            t = torch.as_tensor(np.asarray(t), device=param.device)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(
                f"{name} must be a torch.Tensor or a numpy array of real numbers, "
                f"got {type(t).__name__}"
            ) from None
    if t.ndim not in ndims or t.ndim == 0 or t.shape[-1] != width:
        shapes = " or ".join(f"(batch, {width})" if n == 2 else f"({width},)" for n in ndims)
        raise ValueError(f"{name} must have shape {shapes}, got {tuple(t.shape)}")
    if t.is_complex():
        raise ValueError(f"{name} must hold real numbers, got {t.dtype}")
    if t.device != param.device:
        raise ValueError(
            f"{name} is on {t.device} but the model is on {param.device}; "
            f"move it with .to({str(param.device)!r})"
        )
    t = t.to(param.dtype)
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite, but contains NaN or inf values")
    return t


def sampling_inputs(
    model: nn.Module,
    condition: Tensor | np.ndarray,
    n: int | None,
    z: Tensor | np.ndarray | None,
    condition_dim: int,
    latent_dim: int,
) -> tuple[Tensor, Tensor, tuple[int, ...]]:
    """Checked ``(conditions, z, shape)`` for a model's ``sample``: one row per sample, and the
    leading shape the samples are returned in (``samples.reshape(*shape, D)``).

    - one condition (``condition_dim``,) with ``n`` samples: ``shape = (n,)``;
    - a batch (B, ``condition_dim``) with ``n=None``: one sample per row, ``shape = (B,)``;
    - a batch (B, ``condition_dim``) with ``n``: ``n`` samples of each, ``shape = (B, n)``
      (so a single observation of shape (1, M) gives (1, n, D)).

    ``z`` (of ``shape`` + (``latent_dim``,), or flat (rows, ``latent_dim``)) fixes the latent
    variable; None draws it from N(0, I). With one condition, a given ``z`` and no ``n``, ``n`` is
    the number of rows of ``z``. Every input passes :func:`as_input` (numpy arrays and other dtypes
    are converted).

    Example:
        >>> from replicate.models import ConditionalFlow
        >>> flow = ConditionalFlow(data_dim=2, condition_dim=3, latent_dim=2, n_blocks=1, hidden=4)
        >>> c, z, shape = sampling_inputs(flow, torch.eye(3)[:2], 5, None, 3, 2)
        >>> tuple(c.shape), tuple(z.shape), shape
        ((10, 3), (10, 2), (2, 5))
    """
    condition = as_input(model, condition, "condition", condition_dim, ndims=(1, 2))
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"sample: n must be a positive integer (samples per condition), got {n!r}")
    if condition.ndim == 1:
        if n is None and z is not None:
            n = len(z)
        if n is None:
            raise ValueError("sample(condition, n): one condition of shape (M,) needs n >= 1")
        shape: tuple[int, ...] = (n,)
        condition = condition.expand(n, -1)
    elif n is None:
        shape = (condition.shape[0],)
    else:
        shape = (condition.shape[0], n)
        condition = condition.repeat_interleave(n, dim=0)
    rows = condition.shape[0]
    if z is None:
        return (
            condition,
            torch.randn(rows, latent_dim, dtype=condition.dtype, device=condition.device),
            shape,
        )
    if isinstance(z, Tensor) and z.ndim == len(shape) + 1 and tuple(z.shape[:-1]) == shape:
        z = z.reshape(rows, z.shape[-1])
    z = as_input(model, z, "z", latent_dim)
    if z.shape[0] != rows:
        raise ValueError(f"z has {z.shape[0]} rows but {rows} samples are asked for")
    return condition, z, shape


class ConditionalModel(nn.Module):
    """The one interface of every conditional model here: ours (:class:`ConditionalFlow`), the
    INN and the cINN; the latent space's models follow it with labels as conditions.

    - training: ``loss_terms(x, condition, **schedule(i)) -> {"loss": ..., term: ...}``, the
      trainer's one entry (no input checks: the trainer checks a data set once), and
      ``schedule(i)``, what changes with the iteration besides the batch;
    - ``nll(x, condition)``: the per-row training loss, inputs checked;
    - ``sample(condition, n=None, z=None)``: x ~ p(x | c) (see :func:`sampling_inputs`);
    - ``log_prob(x, condition)``: log p(x | c) where the model has a density
      (``has_log_prob``; the INN has none);
    - standardisation of x and of the condition
      (:class:`~replicate.models.standardization.Standardization`, identity until
      :meth:`fit_standardization`), stored with the weights, so saving is
      ``replicate.checkpoints.model_tensors(model)`` and loading ``restore_model``.

    Subclasses build their network from one :class:`NetworkSettings`, passed on to
    :class:`~replicate.models.flows.InvertibleNetwork` unchanged.
    """

    has_log_prob: ClassVar[bool] = True

    def __init__(self, data_dim: int, condition_dim: int, z_dim: int) -> None:
        super().__init__()
        self.data_dim, self.condition_dim = data_dim, condition_dim
        self.z_dim = z_dim  # the width of the variable drawn from N(0, I) to sample
        self.x_standardization = Standardization(data_dim)
        self.c_standardization = Standardization(condition_dim)

    def fit_standardization(
        self, x: Tensor | np.ndarray | None = None, condition: Tensor | np.ndarray | None = None
    ) -> ConditionalModel:
        """Standardise x and/or the condition by the per-coordinate mean and std of training data.

        Call once before training, with the training set (or a large part of it); returns
        ``self``. Leave a one-hot condition unstandardised (pass only ``x``).

        Example:
            >>> from replicate.models import ConditionalFlow
            >>> flow = ConditionalFlow(2, 2, 2, n_blocks=1, hidden=4)
            >>> x, c = 100 + 5 * torch.randn(500, 2), torch.randn(500, 2)
            >>> flow.fit_standardization(x, c).x_standardization.shift.round(decimals=-1).tolist()
            [100.0, 100.0]
        """
        if x is not None:
            self.x_standardization.fit(as_input(self, x, "x", self.data_dim))
        if condition is not None:
            self.c_standardization.fit(as_input(self, condition, "condition", self.condition_dim))
        return self

    # -- training: what the shared trainer calls (replicate.training.TrainingStep) ------------
    def schedule(self, iteration: int) -> dict[str, Tensor]:
        """Training inputs that change with the iteration besides the batch, as tensors (so that
        a CUDA graph of the step reads them anew on every replay): none here, the INN's ramp."""
        return {}

    def loss_terms(self, x: Tensor, condition: Tensor, **schedule: Tensor) -> dict[str, Tensor]:
        """The training loss of one batch, ``{"loss": mean NLL}``, with no input checks (no
        host synchronisation): the trainer checks the data set once, the public methods every
        call."""
        return {"loss": self._nll(x, condition).mean()}

    @torch.no_grad()
    def sample(
        self,
        condition: Tensor | np.ndarray,
        n: int | None = None,
        z: Tensor | np.ndarray | None = None,
    ) -> Tensor:
        """Draw x ~ p(x | c).

        - one condition of shape (M,) and ``n``: (n, D);
        - a batch (B, M) and ``n``: ``n`` samples of each, (B, n, D) (one observation held as
          (1, M) gives (1, n, D)); no Python loop over the batch;
        - a batch (B, M) without ``n``: one sample per row, (B, D).

        Numpy arrays and other dtypes are converted (see :func:`as_input`). Pass ``z`` (of the
        model's ``z_dim``) to fix the variable drawn from N(0, I) instead of drawing it (the
        paper's Figure 5.4); the model's own noise, if any, is still drawn.
        """
        condition, z, shape = sampling_inputs(self, condition, n, z, self.condition_dim, self.z_dim)
        x = self._sample(self.c_standardization(condition), z)
        return self.x_standardization.inverse(x).reshape(*shape, self.data_dim)

    def _sample(self, condition: Tensor, z: Tensor) -> Tensor:
        """x (rows, D), standardised, of checked standardised conditions and z, one per row."""
        raise NotImplementedError

    def nll(
        self,
        x: Tensor | np.ndarray,
        condition: Tensor | np.ndarray,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Per-row training loss of checked inputs (the subclass's ``_nll``); noise, where the
        model draws any, from ``generator`` (default: the global one)."""
        x = as_input(self, x, "x", self.data_dim)
        condition = as_input(self, condition, "condition", self.condition_dim)
        return self._nll(x, condition, generator)

    def _nll(
        self, x: Tensor, condition: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no likelihood to train by")
