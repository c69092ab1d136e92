"""The models of the linear-Gaussian check and the part of a ``linear_gaussian:`` config each
one's run depends on.

Ours runs once per ``eps_over_noise`` ratio with the fixed ``eps = ratio * s`` (named
``ours_eps<ratio>s``), once with eps learned (``ours_learned``) when ``learned_eps`` is set, and
sbi's NPE (``npe``, sbi's defaults) when an ``npe`` section is given, once more per
``npe_batch_sizes`` entry with that training batch (``npe_batch<size>``: sbibm, the benchmark of
sbi's authors, trains with 10,000); each at every noise level ``s`` and seed.
Free of torch on purpose, like :mod:`replicate.experiments.kinematics.settings`: the workflow
imports it while parsing.

Example:
    >>> cfg = {"eps_over_noise": [0.3, 1.0], "learned_eps": True, "npe": {},
    ...        "npe_batch_sizes": [10000]}
    >>> model_names(cfg)
    ['ours_eps0.3s', 'ours_eps1s', 'ours_learned', 'npe', 'npe_batch10000']
    >>> model_variant("ours_eps0.3s"), model_variant("ours_learned"), model_variant("npe")
    (('fixed', 0.3), ('learned', None), ('npe', None))
    >>> model_variant("npe_batch10000")
    ('npe', 10000)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["model_names", "model_variant", "run_settings"]

_FIXED_PREFIX, _FIXED_SUFFIX = "ours_eps", "s"
_NPE_BATCH_PREFIX = "npe_batch"


def model_names(config: Mapping[str, Any]) -> list[str]:
    """Ours at every ``eps_over_noise`` (as configured), then ours with eps learned and sbi's
    NPE (with its default batch, then each of ``npe_batch_sizes``) where the config asks."""
    names = [f"{_FIXED_PREFIX}{float(r):g}{_FIXED_SUFFIX}" for r in config["eps_over_noise"]]
    names += ["ours_learned"] if config["learned_eps"] else []
    if "npe" in config:
        names += ["npe"]
        names += [f"{_NPE_BATCH_PREFIX}{int(b)}" for b in config.get("npe_batch_sizes", [])]
    return names


def model_variant(name: str) -> tuple[str, float | None]:
    """How a model sets eps, read from its name: ``("fixed", ratio)`` (eps = ratio * s),
    ``("learned", None)``; or for sbi's NPE, which has no eps, ``("npe", None)`` (sbi's default
    batch) or ``("npe", batch_size)``.

    Example:
        >>> try:
        ...     model_variant("ours_eps0.1")
        ... except ValueError as error:
        ...     print(str(error)[:44])
        unknown linear-Gaussian model 'ours_eps0.1':
    """
    if name in ("ours_learned", "npe"):
        return name.removeprefix("ours_"), None
    if name.startswith(_NPE_BATCH_PREFIX) and name[len(_NPE_BATCH_PREFIX) :].isdigit():
        return "npe", int(name[len(_NPE_BATCH_PREFIX) :])
    if name.startswith(_FIXED_PREFIX) and name.endswith(_FIXED_SUFFIX):
        try:
            return "fixed", float(name[len(_FIXED_PREFIX) : -len(_FIXED_SUFFIX)])
        except ValueError:
            pass
    raise ValueError(
        f"unknown linear-Gaussian model '{name}': use ours_eps<ratio>s (eps = ratio times the "
        "noise std), ours_learned, npe or npe_batch<size>"
    )


def run_settings(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    """What a run of model ``name`` depends on: the problem's forward matrix, the scoring, and
    that model's training (ours: ``training`` and ``network``; NPE: ``npe`` and the simulation
    counts of ``training``), so that changing one model's keys reruns that model only."""
    variant, value = model_variant(name)
    common = {k: config[k] for k in ("forward", "n_observations", "n_samples")}
    training = config["training"]
    if variant == "npe":
        counts = {k: training[k] for k in ("n_train", "n_validation")}
        npe = dict(config["npe"]) | ({"training_batch_size": value} if value else {})
        return common | {"training": counts, "npe": npe}
    return common | {"training": dict(training), "network": dict(config["network"])}
