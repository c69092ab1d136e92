"""Training the models of the inverse-kinematics experiment (E4) on fresh simulator draws.

Three kinds share one network, batch, iteration budget and stream of training pairs:

- ours (:class:`~replicate.models.conditional_flow.ConditionalFlow`): [x (4)] <-> [z (2), y (2)],
  no padding, trained by its one NLL; ``eps`` (in y's units) sets how sharply it conditions on y;
- the INN (:class:`~replicate.models.inn.INN`) on the same layout, with its four losses,
  weights, ramp, optimiser and gradient clamp as in its authors' toy code;
- the cINN (:class:`~replicate.models.cinn.ConditionalINN`): x <-> z (4), y into every subnet.

Every model standardises x and y inside itself (fitted on prior draws before training, saved with
the weights). Iteration ``i`` draws its batch from the prior with a generator seeded by
``(seed, i)`` and simulates its observations: no fixed training set, so no over-fitting, and a
resumed run sees the pairs an uninterrupted one would.

Example:
    >>> net = {"n_blocks": 2, "hidden": 8, "subnet_layers": 2, "clamp": 2.0, "init_scale": None,
    ...        "permutations": "per_block"}
    >>> adam = {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0,
    ...         "grad_clip": None}
    >>> settings = {"training": {"iterations": 3, "batch_size": 32, "standardization_draws": 256,
    ...                          "checkpoint_every": 2},
    ...             "network": net, "ours": {"eps": 0.03, "optimizer": adam}}
    >>> setup = training_setup("ours_eps0.03", settings, 0, torch.device("cpu"))
    >>> sorted(setup.step.inputs(0))
    ['condition', 'x']
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from replicate.checkpoints import load_checkpoint
from replicate.experiments.kinematics.npe import load_npe
from replicate.experiments.kinematics.problem import simulated_batch
from replicate.experiments.kinematics.settings import model_kind
from replicate.models.base import ConditionalModel
from replicate.models.build import build_model, inn_settings
from replicate.runtime import resolve_device, seed_everything
from replicate.training import make_optimizer
from replicate.training_steps import TrainingSetup, TrainingStep

__all__ = [
    "checkpoint_metadata",
    "DATA_DIM",
    "OBSERVATION_DIM",
    "kinematics_model",
    "load_kinematics_model",
    "simulated_batch",
    "training_setup",
]

log = logging.getLogger("replicate")

DATA_DIM, OBSERVATION_DIM = 4, 2
# Offsets of the generators a run draws from besides its batches (one stream per purpose).
_STANDARDIZATION_STREAM = 7_919


def kinematics_model(name: str, settings: Mapping[str, Any], seed: int) -> ConditionalModel:
    """A freshly initialised model ``name`` (weights and permutations from ``seed``), its
    standardisation not yet fitted. The global random state is left as it was.

    Example:
        >>> net = {"n_blocks": 2, "hidden": 8, "subnet_layers": 2, "clamp": 2.0}
        >>> kinematics_model("cinn", {"network": net, "cinn": {}}, seed=0).network.dim
        4
    """
    kind = model_kind(name)
    latent_dim = DATA_DIM - OBSERVATION_DIM
    if kind == "cinn":
        own: dict[str, Any] = {}
    elif kind == "ours":
        own = {
            "latent_dim": latent_dim,
            "sigma": 0.0,  # no padding to put noise on
            **_eps_settings(settings["ours"], settings["training"]["iterations"]),
        }
    else:
        cfg = settings["inn"]
        own = {"latent_dim": latent_dim, **inn_settings(cfg, cfg["ramp"]["epochs"], pad_noise=0.0)}
    with warnings.catch_warnings():
        # Ours: latent_dim 2 < data_dim 4 on purpose: y = f(x) is a function of x, so the
        # posterior is a 2-d surface, thickened by eps (ConditionalFlow's warning).
        warnings.simplefilter("ignore", UserWarning)
        return build_model(kind, DATA_DIM, OBSERVATION_DIM, settings["network"], seed, **own)


def checkpoint_metadata(name: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """What a checkpoint must have been trained under to be loaded (the seed is in its name)."""
    return {"experiment": "kinematics", "model": name, **settings}


def _eps_settings(ours: Mapping[str, Any], iterations: int) -> dict[str, Any]:
    """ConditionalFlow's eps arguments from ours' training section: a fixed eps, a learned one
    (``eps_min``; started at the observations' std) or one annealed to ``eps`` from
    ``anneal.from`` over ``anneal.fraction`` of the run."""
    if ours.get("eps_min") is not None:
        return {"eps": None, "learn_eps": True, "eps_min": ours["eps_min"]}
    if "anneal" in ours:
        steps = max(1, round(ours["anneal"]["fraction"] * iterations))
        return {
            "eps": ours["eps"],
            "anneal_from": ours["anneal"]["from"],
            "anneal_iterations": steps,
        }
    return {"eps": ours["eps"]}


def training_setup(
    name: str, settings: Mapping[str, Any], seed: int, device: torch.device
) -> TrainingSetup:
    """Model ``name`` (its standardisation fitted on prior draws), its optimiser and its step:
    ``training.batch_size`` fresh simulator pairs per iteration, drawn on the host from a
    generator seeded by ``(seed, iteration)``."""
    kind, training = model_kind(name), settings["training"]
    seed_everything(seed)
    model = kinematics_model(name, settings, seed)
    n_fit = training["standardization_draws"]
    x_fit, y_fit = simulated_batch(n_fit, seed, -_STANDARDIZATION_STREAM)
    model.fit_standardization(x_fit.float(), y_fit.float())
    model = model.to(device)
    opt_cfg = settings[kind]["optimizer"]
    optimizer = make_optimizer(model.parameters(), **opt_cfg)
    batch_size = training["batch_size"]

    def inputs(i: int) -> dict[str, Tensor]:
        x, y = simulated_batch(batch_size, seed, i)
        return {"x": x.float(), "condition": y.float(), **model.schedule(i)}

    step = TrainingStep(inputs, model.loss_terms)
    return TrainingSetup(model, optimizer, step, opt_cfg.get("grad_clip"))


def load_kinematics_model(
    name: str,
    checkpoint_path: str | os.PathLike,
    settings: Mapping[str, Any],
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Load a checkpoint written by :func:`~.stages.train_kinematics_model`, in eval mode.

    Raises :class:`replicate.checkpoints.CheckpointMismatch` if it was trained under other settings.
    """
    if model_kind(name) == "npe":
        return load_npe(checkpoint_path, settings, device)
    dev = resolve_device(device)
    tensors = load_checkpoint(Path(checkpoint_path), checkpoint_metadata(name, settings), dev)
    module = kinematics_model(name, settings, seed=0).to(dev)
    # The permutations and standardisations are buffers: the stored ones replace seed 0's.
    module.load_state_dict(tensors)
    return module.eval()
