"""The models of the inverse-kinematics experiment (E4) and the part of a ``kinematics:`` config
that each one's training depends on.

Ours runs once per configured ``eps`` (its one knob sets how sharply it conditions on a
continuous observation), named ``ours_eps<eps>``; the INN and the cINN once each. Free of torch
on purpose, like :mod:`replicate.experiments.gmm.settings`: the workflow imports it while parsing.

Example:
    >>> cfg = {"ours": {"eps": [0.1, 0.03]}, "inn": {}, "cinn": {}}
    >>> model_names(cfg)
    ['ours_eps0.1', 'ours_eps0.03', 'inn', 'cinn']
    >>> model_kind("ours_eps0.03"), ours_eps("ours_eps0.03")
    ('ours', 0.03)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["OURS_PREFIX", "model_kind", "model_names", "ours_eps", "training_settings"]

OURS_PREFIX = "ours_eps"


def model_names(config: Mapping[str, Any]) -> list[str]:
    """Ours once per ``ours.eps`` (in configured order), then the INN and the cINN."""
    return [f"{OURS_PREFIX}{float(eps):g}" for eps in config["ours"]["eps"]] + ["inn", "cinn"]


def model_kind(name: str) -> str:
    """``ours``, ``inn`` or ``cinn``: the config section that configures model ``name``.

    Example:
        >>> model_kind("nf")
        Traceback (most recent call last):
        ...
        ValueError: unknown kinematics model 'nf': use ours_eps<eps>, inn or cinn
    """
    if name in ("inn", "cinn"):
        return name
    if name.startswith(OURS_PREFIX):
        try:
            float(name[len(OURS_PREFIX) :])
        except ValueError:
            pass
        else:
            return "ours"
    raise ValueError(f"unknown kinematics model '{name}': use {OURS_PREFIX}<eps>, inn or cinn")


def ours_eps(name: str) -> float:
    """The ``eps`` of one of ours, read from its name."""
    if model_kind(name) != "ours":
        raise ValueError(f"'{name}' is not one of ours (named {OURS_PREFIX}<eps>)")
    return float(name[len(OURS_PREFIX) :])


def training_settings(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    """What model ``name``'s training depends on: the training budget, the network and its own
    section (for ours, with its one ``eps``). Snakemake passes only this as the training rule's
    params, so an evaluation key or another model's setting retrains nothing.

    Example:
        >>> cfg = {"training": {"iterations": 2}, "network": {"hidden": 4},
        ...        "ours": {"eps": [0.1, 0.01], "sigma": 0.05}, "inn": {}, "cinn": {}}
        >>> training_settings(cfg, "ours_eps0.01")["ours"]
        {'eps': 0.01, 'sigma': 0.05}
    """
    kind = model_kind(name)
    section = dict(config[kind])
    if kind == "ours":
        eps = ours_eps(name)
        if not any(abs(float(e) - eps) <= 1e-12 * eps for e in section["eps"]):
            raise ValueError(
                f"model '{name}': eps {eps:g} is not in kinematics.ours.eps {section['eps']}"
            )
        section["eps"] = eps
    return {"training": dict(config["training"]), "network": dict(config["network"]), kind: section}
