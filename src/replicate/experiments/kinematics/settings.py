"""The models of the inverse-kinematics experiment (E4) and the part of a ``kinematics:`` config
that each one's training depends on.

Ours runs once per configured ``eps`` (its one knob sets how sharply it conditions on a
continuous observation), named ``ours_eps<eps>``; once per ``learned_eps_min``, with eps learned
by maximum likelihood above that floor (``ours_learned<eps_min>``); once per ``annealed_eps``,
with eps annealed from ``anneal.from`` down to that value (``ours_annealed<eps>``); the INN and
the cINN once each; with an ``npe`` section, sbi's neural posterior estimation (``npe``, the
field's standard baseline, :mod:`~replicate.experiments.kinematics.npe`). Free of torch on
purpose, like :mod:`replicate.experiments.gmm.settings`: the workflow imports it while parsing.

Example:
    >>> cfg = {"ours": {"eps": [0.1, 0.03], "learned_eps_min": [0.01]}, "inn": {}, "cinn": {}}
    >>> model_names(cfg)
    ['ours_eps0.1', 'ours_eps0.03', 'ours_learned0.01', 'inn', 'cinn']
    >>> model_kind("ours_eps0.03"), ours_variant("ours_eps0.03"), ours_variant("ours_learned0.01")
    ('ours', ('fixed', 0.03), ('learned', 0.01))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "OURS_PREFIX",
    "VARIANT_KEYS",
    "model_kind",
    "model_names",
    "ours_eps",
    "ours_variant",
    "training_settings",
]

OURS_PREFIX = "ours_eps"
# Name prefix and `ours` config key of each way of setting eps.
_VARIANTS = {
    "fixed": ("ours_eps", "eps"),
    "learned": ("ours_learned", "learned_eps_min"),
    "annealed": ("ours_annealed", "annealed_eps"),
}
# The keys of `ours` that list models, and the annealing's own settings: no model trains under
# the lists (each takes its one value), and only annealed models under `anneal`.
VARIANT_KEYS = ("eps", "learned_eps_min", "annealed_eps", "anneal")


def model_names(config: Mapping[str, Any]) -> list[str]:
    """Ours once per ``ours.eps``, ``ours.learned_eps_min`` and ``ours.annealed_eps`` (in that
    order, each as configured), then the INN, the cINN and, with an ``npe`` section, sbi's NPE."""
    ours = config["ours"]
    names = [
        f"{prefix}{float(value):g}"
        for prefix, key in _VARIANTS.values()
        for value in ours.get(key, [])
    ]
    return names + ["inn", "cinn"] + (["npe"] if "npe" in config else [])


def ours_variant(name: str) -> tuple[str, float]:
    """How one of ours sets eps (``fixed``, ``learned`` or ``annealed``) and its value (the
    eps, the learned eps's floor, the annealing's target), read from its name.

    Example:
        >>> ours_variant("ours_annealed0.01")
        ('annealed', 0.01)
        >>> try:
        ...     ours_variant("nf")
        ... except ValueError as error:
        ...     print(str(error)[:38])
        unknown kinematics model 'nf': use our
    """
    for variant, (prefix, _) in _VARIANTS.items():
        if name.startswith(prefix):
            try:
                return variant, float(name[len(prefix) :])
            except ValueError:
                break
    raise ValueError(
        f"unknown kinematics model '{name}': use ours_eps<eps>, ours_learned<eps_min>, "
        "ours_annealed<eps>, inn or cinn"
    )


def model_kind(name: str) -> str:
    """``ours``, ``inn``, ``cinn`` or ``npe``: the config section that configures ``name``."""
    if name in ("inn", "cinn", "npe"):
        return name
    ours_variant(name)
    return "ours"


def ours_eps(name: str) -> float:
    """The eps of one of ours, read from its name: the fixed one, the learned one's floor or
    the annealed one's target."""
    return ours_variant(name)[1]


def training_settings(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    """What model ``name``'s training depends on: the training budget, the network and its own
    section (for ours, how it sets eps and the one value). Snakemake passes only this as the
    training rule's params, so an evaluation key or another model's setting retrains nothing.

    Example:
        >>> cfg = {"training": {"iterations": 2}, "network": {"hidden": 4},
        ...        "ours": {"eps": [0.1, 0.01], "sigma": 0.05}, "inn": {}, "cinn": {}}
        >>> training_settings(cfg, "ours_eps0.01")["ours"]
        {'sigma': 0.05, 'eps': 0.01}
    """
    kind = model_kind(name)
    section = dict(config[kind])
    if kind == "npe":  # the pairs it is given, and its own settings
        budget = {k: config["training"][k] for k in ("iterations", "batch_size")}
        return {"training": budget, "npe": section}
    if kind == "ours":
        variant, value = ours_variant(name)
        key = _VARIANTS[variant][1]
        listed = section.get(key, [])
        if not any(abs(float(e) - value) <= 1e-12 * value for e in listed):
            raise ValueError(f"model '{name}': {value:g} is not in kinematics.ours.{key} {listed}")
        section = {k: v for k, v in section.items() if k not in VARIANT_KEYS}
        section["eps"] = value if variant == "fixed" else None
        if variant == "learned":
            section["eps_min"] = value
        if variant == "annealed":
            section |= {"eps": value, "anneal": dict(config[kind]["anneal"])}
    return {"training": dict(config["training"]), "network": dict(config["network"]), kind: section}
