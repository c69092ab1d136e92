"""Joint training of the auto-encoder and the conditional flow (GLF's loss; issue 29).

The pipeline's default pretrains the auto-encoder alone, freezes it, and fits the flow on its
latents (:mod:`replicate.experiments.latent.training`). "Generative Latent Flow" (GLF, whose
training the paper says it "largely follow[s]") trains both at once, end to end: one step
encodes a batch, decodes it, and adds the flow's NLL of the codes to the reconstruction loss.
GLF's code (``train_glf.py`` in nalzok/flow-comparison at c25c1e1, a copy of the authors'
repository; docs/results.md sets its other settings beside ours, line by line):

- reconstruction: ``nn.MSELoss(reduction="sum")`` divided by the batch size, i.e. the squared
  error summed over an image's 784 pixels and averaged over the batch (lines 152, 244); here
  :func:`reconstruction_loss`;
- the NLL: ``modFlow(z.data)``, the gradient stopped at the code ("STOP THE GRADIENT OF NLL LOSS
  AT z", lines 225-226), added with weight 1: ``total_loss = loss_recon / batch + loss_ll``
  (line 244).

:class:`JointLatentFlow` has both: ``stop_gradient=True`` is GLF's published model;
``stop_gradient=False`` lets the NLL's gradient reach the encoder, weighted by ``nll_weight``
(GLF's "regularized" variant). In a *conditional* flow that gradient carries the condition's term
``0.5 ||(y_hat - y) / eps||^2``: the encoder is pushed towards codes that separate the classes,
which a frozen auto-encoder cannot do.

The flow is :class:`~replicate.experiments.latent.models.LatentFlow` unchanged but for its
standardisation, which stays the identity: the codes move while it trains (GLF standardises
nothing either). The auto-encoder is :class:`~replicate.experiments.latent.autoencoder.AutoEncoder`
unchanged. Everything else (one Adam at ``lr`` over both, batch size, epochs, the per-epoch
reseeding and checkpoint) is the pretrained pipeline's, so that the configurations differ in the
training alone; a variant with ``glf_optimizer`` takes GLF's optimisation instead
(:func:`joint_optimizer`: the flow's own Adam settings, both learning rates halved on a schedule).

Example:
    >>> import torch
    >>> model = JointLatentFlow(latent_dim=4, n_blocks=1, hidden=8, stop_gradient=False)
    >>> images, labels = torch.rand(6, 1, 28, 28), torch.arange(6) % 10
    >>> sorted(model.loss_terms(images, labels))
    ['loss', 'nll', 'reconstruction']
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim.swa_utils import update_bn

from replicate.checkpoints import load_checkpoint, save_checkpoint
from replicate.experiments.latent.autoencoder import AutoEncoder, to_unit_images
from replicate.experiments.latent.models import N_CLASSES, LatentFlow, _flow_kwargs
from replicate.training import EpochBatches, fit_epochs, make_optimizer
from replicate.training_steps import TrainingSetup, TrainingStep

__all__ = [
    "JointLatentFlow",
    "joint_optimizer",
    "joint_training_setup",
    "load_joint",
    "recalibrate_batch_norm",
    "reconstruction_loss",
    "save_joint",
    "train_joint",
]

log = logging.getLogger("replicate")


def reconstruction_loss(reconstructions: Tensor, images: Tensor) -> Tensor:
    """GLF's reconstruction loss: squared error summed over each image's pixels, mean over images.

    Example:
        >>> import torch
        >>> reconstruction_loss(torch.zeros(2, 1, 28, 28), torch.ones(2, 1, 28, 28)).item()
        784.0
    """
    return ((reconstructions - images) ** 2).flatten(1).sum(1).mean()


class JointLatentFlow(nn.Module):
    """An auto-encoder and a conditional flow on its code, trained as one model.

    Args:
        latent_dim: the code's size (the paper: 20).
        stop_gradient: stop the NLL's gradient at the code (GLF's published model); if False the
            encoder also descends ``nll_weight`` times the flow's NLL.
        nll_weight: the NLL's weight in the loss (GLF: 1).
        flow: the flow's keyword arguments (:class:`LatentFlow`'s), e.g. ``n_blocks``, ``eps``.
    """

    def __init__(
        self,
        latent_dim: int = 20,
        stop_gradient: bool = True,
        nll_weight: float = 1.0,
        **flow: Any,
    ) -> None:
        super().__init__()
        if not nll_weight > 0:
            raise ValueError(f"nll_weight must be > 0, got {nll_weight}")
        self.stop_gradient, self.nll_weight = bool(stop_gradient), float(nll_weight)
        self.autoencoder = AutoEncoder(latent_dim)
        self.flow = LatentFlow(latent_dim=latent_dim, **flow)

    def loss_terms(self, images: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """``{"loss", "reconstruction", "nll"}`` of a batch of images (N, 1, 28, 28) in [0, 1]
        and their integer labels, already checked (no host synchronisation)."""
        codes = self.autoencoder.encoder(images)
        reconstruction = reconstruction_loss(self.autoencoder.decoder(codes), images)
        nll = self.flow.loss_terms(codes.detach() if self.stop_gradient else codes, labels)["loss"]
        return {
            "loss": reconstruction + self.nll_weight * nll,
            "reconstruction": reconstruction,
            "nll": nll,
        }


def _model_kwargs(
    latent_config: Mapping[str, Any], variant: Mapping[str, Any], seed: int
) -> dict[str, Any]:
    """:class:`JointLatentFlow`'s arguments from the ``latent`` section and one variant."""
    latent_dim = int(latent_config["autoencoder"]["latent_dim"])
    flow = _flow_kwargs(latent_config["flow"], latent_dim)
    return {
        **flow,
        "stop_gradient": bool(variant["stop_gradient"]),
        "nll_weight": float(variant["nll_weight"]),
        "permutation_seed": seed,  # it picks the permutations: part of what the weights mean
    }


def _file_metadata(
    latent_config: Mapping[str, Any], variant: Mapping[str, Any], seed: int
) -> dict[str, Any]:
    return {"model": "joint_autoencoder_latent_flow", **_model_kwargs(latent_config, variant, seed)}


def _labelled_images(
    images: np.ndarray, labels: np.ndarray, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Images as float (N, 1, 28, 28) in [0, 1] and labels int64, checked once, on ``device``."""
    x = to_unit_images(images)
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"images and labels disagree: {len(x)} images, {len(y)} labels")
    if int(y.min()) < 0 or int(y.max()) >= N_CLASSES:
        raise ValueError(
            f"labels must lie in 0..{N_CLASSES - 1}, got {int(y.min())}..{int(y.max())}"
        )
    return x.to(device), y.to(device)


def halved_every(epochs: int, epoch: int) -> float:
    """The learning rate's factor in ``epoch`` (from 0) when it halves every ``epochs`` epochs,
    as GLF's ``StepLR(step_size=50, gamma=0.5)`` stepped once an epoch.

    Example:
        >>> [halved_every(50, k) for k in (0, 49, 50, 99, 100)]
        [1.0, 1.0, 0.5, 0.5, 0.25]
    """
    return 0.5 ** (epoch // epochs)


def joint_optimizer(
    model: JointLatentFlow, lr: float, glf: Mapping[str, Any] | None = None
) -> tuple[torch.optim.Adam, Callable[[int], float] | None]:
    """The joint model's Adam and its learning rate's schedule (a factor per epoch, or None).

    Without ``glf``: one Adam at ``lr`` with default settings over both parts, constant (the
    pretrained pipeline's). With ``glf`` (a variant's ``glf_optimizer``), GLF's optimisation
    (``train_glf.py``): the auto-encoder's Adam at ``lr`` with default settings (lines 96-97,
    190), the flow's at ``lr`` with ``flow_betas``, ``flow_eps`` and ``flow_weight_decay``
    (lines 103-111, 192-197), and both rates halved every ``lr_halving_epochs`` epochs (lines
    117-118, 202-205). GLF's two Adams are two parameter groups of one here: Adam updates each
    parameter from its own gradient and state alone, so the updates are the same.

    Example:
        >>> model = JointLatentFlow(latent_dim=4, n_blocks=1, hidden=8)
        >>> glf = {"flow_betas": [0.8, 0.9], "flow_eps": 1e-6, "flow_weight_decay": 2e-5,
        ...        "lr_halving_epochs": 50}
        >>> adam, schedule = joint_optimizer(model, 1e-3, glf)
        >>> [group["betas"] for group in adam.param_groups], schedule(50)
        ([(0.9, 0.999), (0.8, 0.9)], 0.5)
    """
    if not glf:
        return make_optimizer(model.parameters(), lr=lr), None
    flow = {
        "params": list(model.flow.parameters()),
        "betas": tuple(glf["flow_betas"]),
        "eps": float(glf["flow_eps"]),
        "weight_decay": float(glf["flow_weight_decay"]),
    }
    groups = [{"params": list(model.autoencoder.parameters())}, flow]
    schedule = functools.partial(halved_every, int(glf["lr_halving_epochs"]))
    return torch.optim.Adam(groups, lr=lr), schedule


def joint_training_setup(
    images: np.ndarray,
    labels: np.ndarray,
    latent_config: Mapping[str, Any],
    variant: Mapping[str, Any],
    seed: int,
    device: str | torch.device = "cpu",
) -> tuple[TrainingSetup, EpochBatches]:
    """The joint model (initialised from ``seed``), one Adam over it, its step on shuffled
    batches of the uint8 ``images`` (N, 28, 28) with their ``labels``, and the epochs' batches.

    ``latent_config`` is the ``latent`` section: the code size from ``autoencoder``, the flow's
    network and noise from ``flow``, batch size and lr from ``joint``; ``variant`` one entry of
    ``latent.joint.variants`` (``stop_gradient``, ``nll_weight``, optionally ``glf_optimizer``:
    :func:`joint_optimizer`).

    Example:
        >>> imgs, labels = np.zeros((10, 28, 28), np.uint8), np.arange(10)
        >>> cfg = {"autoencoder": {"latent_dim": 3}, "joint": {"batch_size": 4, "lr": 1e-3},
        ...        "flow": {"n_blocks": 1, "hidden": 8, "subnet_layers": 2, "clamp": 2.0,
        ...                 "eps": 0.1, "sigma": 0.05}}
        >>> setup, batches = joint_training_setup(
        ...     imgs, labels, cfg, {"stop_gradient": True, "nll_weight": 1.0}, seed=0)
        >>> type(setup.model).__name__, batches.per_epoch
        ('JointLatentFlow', 3)
    """
    device = torch.device(device)
    joint = latent_config["joint"]
    x, y = _labelled_images(images, labels, device)
    # BatchNorm cannot train on one row: a last batch of one is dropped (as the auto-encoder's).
    batches = EpochBatches(len(x), int(joint["batch_size"]), seed, min_last_batch=2, device=device)
    torch.manual_seed(seed)
    model = JointLatentFlow(**_model_kwargs(latent_config, variant, seed)).to(device)
    optimizer, lr_factor = joint_optimizer(model, float(joint["lr"]), variant.get("glf_optimizer"))

    def inputs(i: int) -> dict[str, Tensor]:
        rows = batches(i)
        return {"images": x[rows], "labels": y[rows]}

    step = TrainingStep(inputs, model.loss_terms)
    return TrainingSetup(model, optimizer, step, lr_factor=lr_factor), batches


def train_joint(
    images: np.ndarray,
    labels: np.ndarray,
    latent_config: Mapping[str, Any],
    variant: Mapping[str, Any],
    seed: int,
    checkpoint_path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    progress_every: int = 100,
) -> tuple[JointLatentFlow, dict[str, Any]]:
    """Train the auto-encoder and the flow together for ``latent.joint.epochs`` epochs.

    Resumable like every training here: the state is checkpointed after every epoch, each
    epoch's shuffling and noise come from ``(seed, epoch)``, so a killed run re-run gives the
    numbers of one that never stopped.

    Returns:
        The model (eval mode) and a summary: per-epoch means of the loss and of both terms,
        seconds, iterations.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> imgs, labels = rng.integers(0, 256, (16, 28, 28)).astype(np.uint8), np.arange(16) % 10
        >>> cfg = {"autoencoder": {"latent_dim": 3},
        ...        "joint": {"batch_size": 8, "lr": 1e-3, "epochs": 2},
        ...        "flow": {"n_blocks": 1, "hidden": 8, "subnet_layers": 2, "clamp": 2.0,
        ...                 "eps": 0.1, "sigma": 0.05}}
        >>> model, summary = train_joint(imgs, labels, cfg, {"stop_gradient": False,
        ...                              "nll_weight": 0.1}, seed=0, progress_every=0)
        >>> len(summary["epoch_reconstruction"])
        2
    """
    setup, batches = joint_training_setup(images, labels, latent_config, variant, seed, device)
    model, epochs = setup.model, int(latent_config["joint"]["epochs"])
    metadata = {
        **_file_metadata(latent_config, variant, seed),
        "epochs": epochs,
        "batch_size": batches.batch_size,
        "lr": float(latent_config["joint"]["lr"]),
        "n_train": len(images),
        # Only where set: the resume checkpoints of the other variants keep their metadata.
        **(
            {"glf_optimizer": dict(variant["glf_optimizer"])}
            if variant.get("glf_optimizer")
            else {}
        ),
    }
    begin = time.perf_counter()
    model.train()
    result = fit_epochs(
        setup,
        batches,
        epochs,
        seed=seed,
        name="joint",
        checkpoint_path=checkpoint_path,
        metadata=metadata,
        progress_every=progress_every,
    )
    recalibrate_batch_norm(model.autoencoder, images)
    summary = {
        **{
            f"epoch_{term}": result.segment_means(batches.per_epoch, term)
            for term in ("loss", "reconstruction", "nll")
        },
        "epochs": epochs,
        "resumed_after_epoch": result.resumed_at // batches.per_epoch,
        "iterations_run": result.iterations,
        "seconds": time.perf_counter() - begin,
        "seconds_per_iteration": result.seconds_per_iteration,
        "batches_per_epoch": batches.per_epoch,
    }
    return model.eval(), summary


def recalibrate_batch_norm(
    autoencoder: AutoEncoder, images: np.ndarray, batch_size: int = 1000
) -> None:
    """Set the auto-encoder's BatchNorm statistics to those of ``images`` (uint8, N x 28 x 28)
    under its final weights: each layer's running mean and variance become the mean over
    equal batches of the batch statistics (``torch.optim.swa_utils.update_bn``).

    Why: without the stop-gradient the encoder keeps shrinking the code while it trains (the
    flow's NLL falls with the code's scale, and the decoder's BatchNorm undoes the scale), so
    the running averages, which trail the weights, do not describe the final network: measured
    on Fashion-MNIST after 14 epochs of ``joint_nll1``, eval-mode reconstruction error 0.042 per
    pixel against 0.015 with the batches' own statistics; recalibrated, 0.014.

    Example:
        >>> ae = AutoEncoder(latent_dim=3)
        >>> images = np.random.default_rng(0).integers(0, 256, (8, 28, 28), dtype=np.uint8)
        >>> recalibrate_batch_norm(ae, images, batch_size=4)
        >>> int(ae.encoder[3].num_batches_tracked), ae.training
        (2, False)
    """
    x = to_unit_images(images).to(next(autoencoder.parameters()).device)
    # Equal batches (a last short one is dropped, as in training), in order: the mean of their
    # means is the data's mean, and nothing is drawn at random.
    usable = len(x) - len(x) % batch_size if len(x) >= batch_size else len(x)
    update_bn([x[i : i + batch_size] for i in range(0, usable, batch_size)], autoencoder)
    autoencoder.eval()


def save_joint(
    path: str | os.PathLike,
    model: JointLatentFlow,
    latent_config: Mapping[str, Any],
    variant: Mapping[str, Any],
    seed: int,
) -> None:
    """Save a joint model's weights (auto-encoder, flow, permutations) as safetensors, with the
    settings :func:`load_joint` checks."""
    save_checkpoint(path, dict(model.state_dict()), _file_metadata(latent_config, variant, seed))


def load_joint(
    path: str | os.PathLike,
    latent_config: Mapping[str, Any],
    variant: Mapping[str, Any],
    seed: int,
    device: str | torch.device = "cpu",
) -> JointLatentFlow:
    """Load what :func:`train_joint` trained and :func:`save_joint` wrote, in eval mode; the
    file's settings must be these (else :class:`replicate.checkpoints.CheckpointMismatch`)."""
    tensors = load_checkpoint(path, _file_metadata(latent_config, variant, seed), device)
    model = JointLatentFlow(**_model_kwargs(latent_config, variant, seed)).to(device)
    model.load_state_dict(tensors)
    return model.eval()
