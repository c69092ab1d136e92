"""One builder for every experiment: a model kind, its dimensions and config sections -> a fresh
model, initialised from a seed without touching the global random state.

Example:
    >>> network = {"n_blocks": 2, "hidden": 8, "subnet_layers": 2, "clamp": 2.0}
    >>> flow = build_model("ours", 2, 8, network, seed=0, latent_dim=2, eps=0.1, sigma=0.05)
    >>> cinn = build_model("cinn", 2, 8, network, seed=0)
    >>> type(flow).__name__, type(cinn).__name__, flow.has_log_prob
    ('ConditionalFlow', 'ConditionalINN', True)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from replicate.models.base import ConditionalModel
from replicate.models.cinn import ConditionalINN
from replicate.models.conditional_flow import ConditionalFlow
from replicate.models.flows import network_kwargs
from replicate.models.inn import INN

__all__ = ["MODEL_KINDS", "build_model", "inn_settings"]

MODEL_KINDS = ("ours", "inn", "cinn")


def inn_settings(
    section: Mapping[str, Any], ramp_epochs: float, **overrides: Any
) -> dict[str, Any]:
    """:class:`INN`'s own arguments from an experiment's ``inn`` config section (``y_noise``,
    ``sample_y_noise``, ``pad_noise``, ``weights``, ``mmd_widths``, ``ramp.start``,
    ``ramp.iterations_per_epoch``), the ramp's length in epochs, and any argument set by the
    experiment instead (``overrides``, e.g. a variant's ``losses``).

    Example:
        >>> section = {"y_noise": 0.1, "sample_y_noise": 0.1, "pad_noise": 0.05,
        ...            "weights": {"y": 1.0}, "mmd_widths": [0.2],
        ...            "ramp": {"start": 0.002, "iterations_per_epoch": 8}}
        >>> inn_settings(section, 50, losses=["y"])["ramp_epochs"]
        50
    """
    settings = {
        "y_noise": section["y_noise"],
        "sample_y_noise": section["sample_y_noise"],
        "weights": section["weights"],
        "mmd_widths": section["mmd_widths"],
        "ramp_start": section["ramp"]["start"],
        "ramp_epochs": ramp_epochs,
        "iterations_per_epoch": section["ramp"]["iterations_per_epoch"],
    }
    if "pad_noise" in section:
        settings["pad_noise"] = section["pad_noise"]
    return {**settings, **overrides}


def build_model(
    kind: str,
    data_dim: int,
    condition_dim: int,
    network: Mapping[str, Any],
    seed: int,
    **settings: Any,
) -> ConditionalModel:
    """A fresh model of ``kind`` (``ours``, ``inn`` or ``cinn``) on the network section
    ``network`` (:func:`~replicate.models.flows.network_kwargs`), its weights and permutations
    drawn from ``seed``; ``settings`` are the kind's own arguments (ours: ``latent_dim``, ``eps``,
    ``sigma``, ...; the INN: ``latent_dim`` and :func:`inn_settings`; the cINN: none). The global
    random state is left as it was, so building a model never changes what a caller samples next.
    """
    classes = {"ours": ConditionalFlow, "inn": INN, "cinn": ConditionalINN}
    if kind not in classes:
        raise ValueError(f"unknown model kind {kind!r}: use one of {MODEL_KINDS}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return classes[kind](data_dim, condition_dim, **settings, **network_kwargs(network, seed))
