"""Training every model of the Gaussian-mixture experiment (SPEC E1/E2) and loading it back.

Five models share one data set, network, batch and iteration budget: the method (``ours``), the
three INN variants of Figure 5.2 and the cINN. :func:`load_gmm_model` wraps each in
:class:`GMMModel`, one interface for the evaluation: ``predict`` (scores whose argmax over the first
``n_labels`` columns is the predicted label), ``sample`` and ``log_prob`` (``None`` for the INN).

Training writes its files through :func:`~.stages.train_gmm_model` (the module's example there).

Example:
    >>> cfg = {"network": {"n_blocks": 2, "hidden": 8, "subnet_layers": 3, "clamp": 2.0},
    ...        "ours": {"latent_dim": 2, "eps": 0.1, "sigma": 0.05}}
    >>> model = GMMModel("ours", gmm_model("ours", cfg, "all", seed=0), "all")
    >>> model.predict(torch.zeros(5, 2)).shape, model.sample(torch.eye(8)[0], 4).shape
    (torch.Size([5, 8]), torch.Size([4, 2]))
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from replicate.checkpoints import load_checkpoint
from replicate.experiments.gmm.problem import GaussianMixture
from replicate.experiments.gmm.settings import INN_PREFIX, model_section, training_settings
from replicate.models.base import ConditionalModel, as_input
from replicate.models.build import build_model, inn_settings
from replicate.runtime import resolve_device, seed_everything
from replicate.training import make_optimizer
from replicate.training_steps import TrainingSetup, TrainingStep

__all__ = [
    "RESUME_EVERY",
    "checkpoint_metadata",
    "GMMModel",
    "gmm_model",
    "load_gmm_model",
    "training_setup",
]

log = logging.getLogger("replicate")

# Iterations between resume checkpoints: at the paper's size about a minute of CPU time.
RESUME_EVERY = 50


def gmm_model(
    name: str, gmm_config: Mapping[str, Any], label_map: str, seed: int
) -> ConditionalModel:
    """A freshly initialised model; weights and permutations drawn from ``seed``.

    The global random state is left as it was, so building a model never changes what a caller
    samples next.

    Example:
        >>> cfg = {"network": {"n_blocks": 2, "hidden": 8, "subnet_layers": 3, "clamp": 2.0},
        ...        "cinn": {}}
        >>> type(gmm_model("cinn", cfg, "all", seed=0)).__name__
        'ConditionalINN'
    """
    section = model_section(name)
    gm = GaussianMixture(label_map)
    net = gmm_config["network"]
    # The width of the padded models' network; None: the paper's z + y (no output padding).
    total_dim = net.get("total_dim")
    if section == "ours":
        cfg = gmm_config["ours"]
        # Ours has no output padding: all of the width past y is z.
        latent_dim = cfg["latent_dim"] if total_dim is None else total_dim - gm.condition_dim
        settings = {"latent_dim": latent_dim, "eps": cfg["eps"], "sigma": cfg["sigma"]}
    elif section == "cinn":
        settings = {}
    else:
        cfg = gmm_config["inn"]
        variant = cfg["variants"].get(name[len(INN_PREFIX) :])
        if variant is None:
            raise ValueError(f"gmm.inn.variants has no entry for model '{name}'")
        settings = {
            "latent_dim": cfg["latent_dim"],
            "total_dim": total_dim,
            **inn_settings(cfg, variant["ramp_epochs"], losses=variant["losses"]),
        }
    return build_model(section, gm.data_dim, gm.condition_dim, net, seed, **settings)


def checkpoint_metadata(name: str, gmm_config: Mapping[str, Any], label_map: str) -> dict[str, Any]:
    """What a checkpoint must have been trained under to be loaded (the seed is in its name)."""
    return {"model": name, "label_map": label_map, **training_settings(gmm_config, name)}


def training_setup(
    name: str,
    gmm_config: Mapping[str, Any],
    label_map: str,
    seed: int,
    device: torch.device,
) -> TrainingSetup:
    """Model ``name``, its optimiser and its training step on the mixture's fixed training set.

    The set of ``n_train`` points is drawn from ``seed`` and checked once; iteration ``i`` takes
    ``batch_size`` rows drawn by a generator seeded by ``(seed, i)`` (host side, so a CUDA graph
    of the step replays with each iteration's rows).
    """
    seed_everything(seed)
    gm = GaussianMixture(label_map)
    x_train, labels = gm.sample(gmm_config["n_train"], torch.Generator().manual_seed(seed))
    model = gmm_model(name, gmm_config, label_map, seed).to(device)
    # Checked once here, so the training step does not check (and synchronise) every batch.
    x_train = as_input(model, x_train.to(device), "x", gm.data_dim)
    c_train = as_input(model, gm.one_hot(labels).to(device), "condition", gm.condition_dim)
    opt_cfg = gmm_config[model_section(name)]["optimizer"]
    optimizer = make_optimizer(model.parameters(), **opt_cfg)
    batch_size, n_train = gmm_config["batch_size"], gmm_config["n_train"]

    def inputs(i: int) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(seed * 1_000_003 + i)
        return {"rows": torch.randint(n_train, (batch_size,), generator=g), **model.schedule(i)}

    def loss_terms(rows: Tensor, **schedule: Tensor) -> Mapping[str, Tensor]:
        return model.loss_terms(x_train[rows], c_train[rows], **schedule)

    return TrainingSetup(
        model, optimizer, TrainingStep(inputs, loss_terms), opt_cfg.get("grad_clip")
    )


class GMMModel:
    """The interface the evaluation uses for every trained GMM model.

    Attributes:
        name: the model name (see :data:`replicate.experiments.gmm.settings.MODEL_NAMES`).
        n_labels: number of labels of the label map.
        has_log_prob: whether :meth:`log_prob` gives densities (False for the INN variants).
        module: the underlying torch model.

    Example:
        >>> from replicate.models.inn import INN
        >>> m = GMMModel("inn_full", INN(2, 8, 2, n_blocks=1, hidden=8), "some")
        >>> m.n_labels, m.has_log_prob, m.log_prob(torch.zeros(3, 2), torch.eye(8)[0])
        (4, False, None)
    """

    def __init__(self, name: str, module: nn.Module, label_map: str) -> None:
        self.name, self.module = name, module.eval()
        self.mixture = GaussianMixture(label_map)
        self.n_labels = self.mixture.n_labels
        self.has_log_prob = module.has_log_prob

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Scores of shape (n, 8): ``argmax`` over the first ``n_labels`` columns is the label.

        Ours and the INN: the y-outputs of one forward pass. cINN: log p(y | x) by Bayes' rule
        with the label prior over the ``n_labels`` labels; the other columns are ``-inf``.
        """
        x = x.to(self.device)
        if not hasattr(self.module, "predict"):  # the cINN: no forward-pass classifier
            candidates = self.mixture.one_hot(torch.arange(self.n_labels)).to(x.device)
            log_post = self.module.classify(x, candidates, self.mixture.label_prior.log())
            scores = x.new_full((x.shape[0], self.mixture.condition_dim), float("-inf"))
            scores[:, : self.n_labels] = log_post
            return scores
        return self.module.predict(x)

    @torch.no_grad()
    def sample(self, condition: Tensor, n: int) -> Tensor:
        """``n`` samples of p(x | condition) for one condition of shape (8,): shape (n, 2)."""
        return self.module.sample(condition.to(self.device).float(), n=n)

    @torch.no_grad()
    def log_prob(self, x: Tensor, condition: Tensor) -> Tensor | None:
        """log p(x | condition) per row (conditions (n, 8) or one (8,)); ``None`` for the INN."""
        if not self.has_log_prob:
            return None
        x = x.to(self.device).float()
        condition = condition.to(self.device).float()
        if condition.ndim == 1:
            condition = condition.expand(x.shape[0], -1)
        return self.module.log_prob(x, condition)


def load_gmm_model(
    name: str,
    checkpoint_path: str | os.PathLike,
    gmm_config: Mapping[str, Any],
    label_map: str,
    device: str | torch.device = "cpu",
) -> GMMModel:
    """Load a checkpoint written by :func:`~.stages.train_gmm_model` as a :class:`GMMModel`.

    Raises :class:`replicate.checkpoints.CheckpointMismatch` if it was trained under other settings.
    See the module's example for a round trip.
    """
    dev = resolve_device(device)
    tensors = load_checkpoint(
        Path(checkpoint_path), checkpoint_metadata(name, gmm_config, label_map), dev
    )
    module = gmm_model(name, gmm_config, label_map, seed=0).to(dev)
    # The permutations are buffers, so the stored ones (drawn from the run's seed) replace seed 0.
    module.load_state_dict(tensors)
    return GMMModel(name, module, label_map)
