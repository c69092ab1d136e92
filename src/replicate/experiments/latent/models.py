"""The models of E3 on auto-encoder latents: the paper's flow (:class:`LatentFlow`) and the cINN
baseline (:class:`LatentCINN`), each with the latents' standardisation inside and integer labels
as one-hot conditions, saved and loaded as safetensors.

:class:`LatentFlow` wraps :class:`replicate.models.conditional_flow.ConditionalFlow` unchanged:
``[u (20), x0 (10)] <-> [z (20), y_hat (10)]`` with label noise ``eps`` and padding noise
``sigma``. The one addition is an exact affine standardisation of ``u`` (train-set mean and std per
coordinate) before the flow, stored with the flow: the auto-encoder's latents have arbitrary
scale, and the flow's soft-clamped couplings train better on unit-scale inputs. ``sample`` and
``predict`` take and return latents in the raw encoder space, so callers never see it.

Example:
    >>> import torch
    >>> flow = LatentFlow(latent_dim=4, n_classes=3, n_blocks=2, hidden=8)
    >>> u = torch.randn(5, 4)
    >>> flow.predict(u).shape, flow.sample(torch.tensor([0, 1, 2])).shape
    (torch.Size([5, 3]), torch.Size([3, 4]))
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Unpack

import torch
from torch import Tensor, nn

from replicate.checkpoints import load_checkpoint, save_checkpoint
from replicate.models.base import NetworkSettings, as_input
from replicate.models.cinn import ConditionalINN
from replicate.models.conditional_flow import ConditionalFlow
from replicate.models.flows import InvertibleNetwork
from replicate.models.standardization import Standardization

__all__ = [
    "bayes_log_posterior",
    "LatentCINN",
    "LatentFlow",
    "LatentModel",
    "load_latent_cinn",
    "load_latent_flow",
    "load_latent_model",
    "network_kwargs",
    "save_latent_cinn",
    "save_latent_flow",
    "save_latent_model",
]


N_CLASSES = 10
# GLF's flow on its 20-d code (SPEC E3): 4 coupling blocks, subnets of width 64; the network of
# every latent model where the caller sets none (the pipeline always passes latent.flow's).
GLF_NETWORK = NetworkSettings(n_blocks=4, hidden=64, subnet_layers=3, clamp=2.0)


class LatentModel(nn.Module):
    """What every model on auto-encoder latents shares: integer labels as one-hot conditions,
    and ``u`` standardised by the training latents' mean and std (buffers, saved with the weights).
    It follows :class:`~replicate.models.base.ConditionalModel`'s interface with ``x = u`` and
    the integer labels as the condition (tests/test_model_interface.py checks both together).

    Example:
        >>> import torch
        >>> model = LatentModel(latent_dim=3, n_classes=2)
        >>> model = model.fit_standardization(torch.tensor([[3.0, 3, 3], [7, 7, 7]]))
        >>> model.u_standardization(torch.full((1, 3), 7.0)).tolist()
        [[0.7071067690849304, 0.7071067690849304, 0.7071067690849304]]
        >>> model.one_hot(torch.tensor([1]))
        tensor([[0., 1.]])
    """

    has_log_prob: ClassVar[bool] = True

    def __init__(self, latent_dim: int, n_classes: int) -> None:
        super().__init__()
        self.latent_dim, self.n_classes = latent_dim, n_classes
        self.u_standardization = Standardization(latent_dim)

    def _standardised(self, u: Tensor) -> Tensor:
        """Raw latents checked (shape (N, latent_dim), finite, on the model's device: a clear
        error naming ``u`` otherwise) and standardised, for the public methods."""
        return self.u_standardization(as_input(self, u, "u", self.latent_dim))

    def schedule(self, iteration: int) -> dict[str, Tensor]:
        """Nothing changes with the iteration but the batch (the interface of
        :class:`~replicate.models.base.ConditionalModel`)."""
        return {}

    @property
    def u_mean(self) -> Tensor:
        """The training latents' per-coordinate mean (the standardisation's shift)."""
        return self.u_standardization.shift

    @property
    def u_std(self) -> Tensor:
        """The training latents' per-coordinate std (the standardisation's scale)."""
        return self.u_standardization.scale

    def fit_standardization(self, x: Tensor, condition: Tensor | None = None) -> LatentModel:
        """Standardise ``u`` by the per-coordinate mean and std of the training latents ``x``
        (N, latent_dim), as every model's ``fit_standardization``; returns ``self``. The labels
        (``condition``) are one-hot and left as they are."""
        self.u_standardization.fit(torch.as_tensor(x))
        return self

    def one_hot(self, labels: Tensor) -> Tensor:
        """Integer labels (N,) -> one-hot float (N, n_classes) on the model's device."""
        if labels.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.n_classes):
            raise ValueError(f"labels must lie in 0..{self.n_classes - 1}")
        return self._one_hot(labels.to(self.u_mean.device))

    def _one_hot(self, labels: Tensor) -> Tensor:
        """:meth:`one_hot` of labels already checked and on the model's device (no host
        synchronisation, for the training step)."""
        return torch.eye(self.n_classes, device=labels.device)[labels]


def save_latent_model(
    path: str | os.PathLike, model: LatentModel, metadata: Mapping[str, Any], seed: int
) -> None:
    """Save a latent model (weights, permutations, standardisation, seed) as safetensors."""
    save_checkpoint(path, {**model.state_dict(), "seed": torch.tensor(seed)}, metadata)


def load_latent_model(
    path: str | os.PathLike,
    build: Callable[[int, int], LatentModel],
    metadata: Callable[[int, int], Mapping[str, Any]],
    device: str | torch.device = "cpu",
) -> LatentModel:
    """Load what :func:`save_latent_model` wrote, in eval mode.

    The latent size and the seed (which picks the permutations) come from the file; ``build``
    and ``metadata`` turn them into the model and the configuration the file must match.
    """
    tensors = load_checkpoint(path, None, device)
    latent_dim = int(tensors["u_standardization.shift"].shape[0])
    seed = int(tensors["seed"])
    tensors = load_checkpoint(path, metadata(latent_dim, seed), device)
    model = build(latent_dim, seed)
    model.load_state_dict({k: v for k, v in tensors.items() if k != "seed"})
    return model.to(device).eval()


class LatentFlow(LatentModel):
    """The conditional flow on auto-encoder latents, with the latents' standardisation inside.

    Args:
        latent_dim: size of ``u`` (and of ``z``; the padding then has ``n_classes`` dims).
        n_classes: number of labels; the condition is the one-hot label.
        eps, sigma: passed to :class:`ConditionalFlow`.
        network: its :class:`~replicate.models.base.NetworkSettings` (GLF's flow where left out:
            :data:`GLF_NETWORK`).

    Example:
        >>> import torch
        >>> flow = LatentFlow(latent_dim=3, n_classes=2, n_blocks=1, hidden=4)
        >>> flow.predict(torch.randn(5, 3)).shape, flow.sample(torch.tensor([0, 1])).shape
        (torch.Size([5, 2]), torch.Size([2, 3]))
    """

    def __init__(
        self,
        latent_dim: int = 20,
        n_classes: int = N_CLASSES,
        eps: float = 0.1,
        sigma: float = 0.05,
        **network: Unpack[NetworkSettings],
    ) -> None:
        super().__init__(latent_dim, n_classes)
        # D = latent_dim, M = n_classes, K = latent_dim: the padding has n_classes dims.
        self.flow = ConditionalFlow(
            data_dim=latent_dim,
            condition_dim=n_classes,
            latent_dim=latent_dim,
            eps=eps,
            sigma=sigma,
            **{**GLF_NETWORK, **network},
        )

    @property
    def network(self) -> InvertibleNetwork:
        """The invertible network (that of the wrapped :class:`ConditionalFlow`)."""
        return self.flow.network

    def nll(self, x: Tensor, condition: Tensor) -> Tensor:
        """Per-row training loss of raw latents ``x`` with integer labels ``condition`` (paper
        eq. 10). The standardisation's constant log-Jacobian is left out; it does not change
        gradients.
        """
        return self.flow.nll(self._standardised(x), self.one_hot(condition))

    def loss_terms(self, x: Tensor, condition: Tensor) -> dict[str, Tensor]:
        """``{"loss": mean NLL}`` of a batch of latents and labels already checked (the trainer
        checks the data set once), with no host synchronisation."""
        return self.flow.loss_terms(self.u_standardization(x), self._one_hot(condition))

    def log_prob(self, x: Tensor, condition: Tensor) -> Tensor:
        """Estimate of ``log p(u | label)`` of raw latents (:meth:`ConditionalFlow.log_prob`),
        the standardisation's Jacobian included."""
        u = self._standardised(x)
        return self.flow.log_prob(u, self.one_hot(condition)) + self.u_standardization.log_det()

    @torch.no_grad()
    def predict(self, u: Tensor) -> Tensor:
        """Class scores ``y_hat`` (N, n_classes) from one forward pass; argmax is the class."""
        return self.flow.predict(self._standardised(u))

    @torch.no_grad()
    def encode(self, u: Tensor) -> Tensor:
        """The dummy variable ``z = f_z([u, 0])`` (N, latent_dim)."""
        return self.flow.encode(self._standardised(u))

    @torch.no_grad()
    def sample(self, labels: Tensor, z: Tensor | None = None) -> Tensor:
        """Raw latents ``u`` ~ p(u | label), one per entry of ``labels`` (LongTensor (N,)).

        Pass ``z`` (N, latent_dim) to fix the dummy variable (Figure 5.4); else z ~ N(0, I).
        """
        return self.u_standardization.inverse(self.flow.sample(self.one_hot(labels), z=z))


def network_kwargs(config: Mapping[str, Any], latent_dim: int) -> dict[str, Any]:
    """The network settings every latent model takes, from a ``latent.flow`` config section.

    Example:
        >>> cfg = {"n_blocks": 4, "hidden": 64, "subnet_layers": 3, "clamp": 2.0}
        >>> network_kwargs(cfg, 20)["n_classes"]
        10
    """
    return {
        "latent_dim": latent_dim,
        "n_classes": N_CLASSES,
        "n_blocks": int(config["n_blocks"]),
        "hidden": int(config["hidden"]),
        "subnet_layers": int(config["subnet_layers"]),
        "clamp": float(config["clamp"]),
    }


def _flow_kwargs(config: Mapping[str, Any], latent_dim: int) -> dict[str, Any]:
    eps, sigma = float(config["eps"]), float(config["sigma"])
    return {**network_kwargs(config, latent_dim), "eps": eps, "sigma": sigma}


def _flow_metadata(config: Mapping[str, Any], latent_dim: int, seed: int) -> dict[str, Any]:
    # The seed picks the permutations, so it is part of what the weights mean.
    return {"model": "latent_conditional_flow", **_flow_kwargs(config, latent_dim), "seed": seed}


def load_latent_flow(
    path: str | os.PathLike,
    config_section: Mapping[str, Any],
    device: str | torch.device = "cpu",
) -> LatentFlow:
    """Load a trained :class:`LatentFlow` (eval mode) from ``flow_seed{seed}.safetensors``.

    ``config_section`` is the ``latent.flow`` config; the network keys must match the file's
    (else :class:`replicate.checkpoints.CheckpointMismatch`). Latent size and seed come from the
    file.

    Example:
        >>> import tempfile, pathlib, torch
        >>> cfg = {"n_blocks": 1, "hidden": 4, "subnet_layers": 2, "clamp": 2.0, "eps": 0.1,
        ...        "sigma": 0.05}
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "flow.safetensors"
        >>> save_latent_flow(path, LatentFlow(3, **{k: v for k, v in cfg.items()}), cfg, 3, 0)
        >>> load_latent_flow(path, cfg).sample(torch.tensor([1])).shape
        torch.Size([1, 3])
    """
    return load_latent_model(
        path,
        lambda latent_dim, seed: LatentFlow(
            **_flow_kwargs(config_section, latent_dim), permutation_seed=seed
        ),
        lambda latent_dim, seed: _flow_metadata(config_section, latent_dim, seed),
        device,
    )


def save_latent_flow(
    path: str | os.PathLike,
    model: LatentFlow,
    config: Mapping[str, Any],
    latent_dim: int,
    seed: int,
) -> None:
    """Save a :class:`LatentFlow` (weights, permutations, standardisation) as safetensors."""
    save_latent_model(path, model, _flow_metadata(config, latent_dim, seed), seed)


# -- the cINN baseline on latents -------------------------------------------------------------
def bayes_log_posterior(
    log_likelihood: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    n_classes: int,
    log_prior: Tensor | None = None,
) -> Tensor:
    """``log p(k | x)`` (N, n_classes) by Bayes' rule from ``log_likelihood(x, labels) -> (N,)``.

    Example:
        >>> ll = lambda x, k: -0.5 * ((x[:, 0] - k.double()) ** 2)  # N(k, 1) per class
        >>> bayes_log_posterior(ll, torch.tensor([[0.1], [0.9]]), 2).argmax(1).tolist()
        [0, 1]
    """
    scores = torch.stack(
        [
            log_likelihood(x, torch.full((len(x),), k, dtype=torch.int64, device=x.device))
            for k in range(n_classes)
        ],
        dim=1,
    )
    if log_prior is not None:
        scores = scores + log_prior.to(scores)
    return torch.log_softmax(scores, dim=1)


class LatentCINN(LatentModel):
    """The cINN baseline on auto-encoder latents: ``u <-> z`` given the one-hot label.

    Same standardisation of ``u`` as :class:`LatentFlow` (train mean and std, stored with the
    model) and the same network size; the label enters every coupling subnet. The
    class prior for Bayes' rule is the training label frequency.

    Example:
        >>> cinn = LatentCINN(latent_dim=3, n_blocks=1, hidden=4)
        >>> u, y = torch.randn(5, 3), torch.tensor([0, 1, 2, 3, 4])
        >>> cinn.log_prob(u, y).shape, cinn.classify(u).shape, cinn.sample(y).shape
        (torch.Size([5]), torch.Size([5, 10]), torch.Size([5, 3]))
    """

    def __init__(
        self,
        latent_dim: int = 20,
        n_classes: int = N_CLASSES,
        **network: Unpack[NetworkSettings],
    ) -> None:
        super().__init__(latent_dim, n_classes)
        self.cinn = ConditionalINN(latent_dim, n_classes, **{**GLF_NETWORK, **network})
        self.register_buffer("log_prior", torch.full((n_classes,), -math.log(n_classes)))

    def fit_standardization(self, x: Tensor, condition: Tensor | None = None) -> LatentCINN:
        """Standardise ``u`` by the training latents ``x`` (as :class:`LatentModel`) and, given
        the training labels (``condition``), take their frequencies as the class prior."""
        super().fit_standardization(x)
        if condition is not None:
            counts = torch.bincount(condition.cpu(), minlength=self.n_classes).double()
            self.log_prior.copy_(torch.log(counts.clamp_min(1) / counts.sum()))
        return self

    @property
    def network(self) -> InvertibleNetwork:
        """The invertible network (that of the wrapped :class:`ConditionalINN`)."""
        return self.cinn.network

    def nll(self, x: Tensor, condition: Tensor) -> Tensor:
        """Per-row training loss ``0.5||z||^2 - log|det J|`` of raw latents and integer labels
        (standardisation constant left out)."""
        return self.cinn.nll(self._standardised(x), self.one_hot(condition))

    def loss_terms(self, x: Tensor, condition: Tensor) -> dict[str, Tensor]:
        """``{"loss": mean NLL}`` of a batch already checked, with no host synchronisation."""
        return self.cinn.loss_terms(self.u_standardization(x), self._one_hot(condition))

    def log_prob(self, x: Tensor, condition: Tensor) -> Tensor:
        """Exact ``log p(u | label)`` of raw latents, the standardisation's Jacobian included."""
        return (
            self.cinn.log_prob(self._standardised(x), self.one_hot(condition))
            - torch.log(self.u_std).sum()
        )

    @torch.no_grad()
    def classify(self, u: Tensor) -> Tensor:
        """Log posterior ``log p(k | u)`` (N, n_classes) by Bayes' rule: one pass per class."""
        return bayes_log_posterior(self.log_prob, u, self.n_classes, self.log_prior)

    @torch.no_grad()
    def encode(self, u: Tensor, labels: Tensor) -> Tensor:
        """The cINN's latent ``z = f(u; label)`` (it needs the label, unlike ours)."""
        return self.cinn.network(self._standardised(u), self.one_hot(labels))[0]

    @torch.no_grad()
    def sample(self, labels: Tensor, z: Tensor | None = None) -> Tensor:
        """Raw latents ``u ~ p(u | label)``, one per entry of ``labels``."""
        return self.u_standardization.inverse(self.cinn.sample(self.one_hot(labels), z=z))


def _cinn_metadata(flow_config: Mapping[str, Any], latent_dim: int, seed: int) -> dict[str, Any]:
    return {"model": "latent_cinn", **network_kwargs(flow_config, latent_dim), "seed": seed}


def save_latent_cinn(
    path: str | os.PathLike, model: LatentCINN, flow_config: Mapping[str, Any], seed: int
) -> None:
    """Save a :class:`LatentCINN` (weights, permutations, statistics) as safetensors."""
    save_latent_model(path, model, _cinn_metadata(flow_config, model.latent_dim, seed), seed)


def load_latent_cinn(
    path: str | os.PathLike,
    flow_config: Mapping[str, Any],
    device: str | torch.device = "cpu",
) -> LatentCINN:
    """Load a :class:`LatentCINN` saved by :func:`save_latent_cinn` (eval mode).

    ``flow_config`` is the ``latent.flow`` section: its network keys must match the file's.

    Example:
        >>> import tempfile, pathlib
        >>> cfg = {"n_blocks": 1, "hidden": 4, "subnet_layers": 2, "clamp": 2.0}
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "cinn.safetensors"
        >>> save_latent_cinn(path, LatentCINN(3, n_blocks=1, hidden=4, subnet_layers=2), cfg, 0)
        >>> load_latent_cinn(path, cfg).sample(torch.tensor([1, 2])).shape
        torch.Size([2, 3])
    """
    return load_latent_model(
        path,
        lambda latent_dim, seed: LatentCINN(
            **network_kwargs(flow_config, latent_dim), permutation_seed=seed
        ),
        lambda latent_dim, seed: _cinn_metadata(flow_config, latent_dim, seed),
        device,
    )
