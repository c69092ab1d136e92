"""The models of the Gaussian-mixture experiment (SPEC E1/E2), and the part of a ``gmm:`` config
that each one's training depends on.

Free of torch on purpose: the workflow imports it while parsing, and every Snakemake start (one
per job on a cluster) would otherwise pay for importing torch.

Example:
    >>> cfg = {"n_train": 8, "batch_size": 4, "iterations": 2, "networks": {"tiny": {}},
    ...        "n_test": 99, "ours": {"eps": 0.1}, "cinn": {}, "inn": {"variants": {"full": {}}}}
    >>> model_names(cfg), network_names(cfg)
    (['ours', 'inn_full', 'cinn'], ['tiny'])
    >>> model_section("inn_full")
    'inn'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "INN_PREFIX",
    "MODEL_NAMES",
    "model_names",
    "model_section",
    "network_names",
    "training_settings",
]

MODEL_NAMES: tuple[str, ...] = ("ours", "inn_full", "inn_forward_only", "inn_altered_ramp", "cinn")
# An INN model is named by its variant under gmm.inn.variants: inn_<variant>.
INN_PREFIX = "inn_"


def model_names(gmm_config: Mapping[str, Any]) -> list[str]:
    """The models a ``gmm:`` config trains: ours, one INN per configured variant, the cINN.

    Example:
        >>> model_names({"inn": {"variants": {"full": {}, "forward_only": {}}}})
        ['ours', 'inn_full', 'inn_forward_only', 'cinn']
    """
    variants = gmm_config.get("inn", {}).get("variants", {})
    return ["ours", *(f"{INN_PREFIX}{v}" for v in variants), "cinn"]


def network_names(gmm_config: Mapping[str, Any]) -> list[str]:
    """The networks the pipeline trains every model on: ``gmm.run_networks`` (names of
    ``gmm.networks``, in that order), or every one of ``gmm.networks`` where it is absent.

    Example:
        >>> network_names({"networks": {"reference": {}, "paper": {}}})
        ['reference', 'paper']
        >>> network_names({"networks": {"reference": {}, "paper": {}}, "run_networks": ["paper"]})
        ['paper']
    """
    names = list(gmm_config.get("run_networks", gmm_config["networks"]))
    unknown = [n for n in names if n not in gmm_config["networks"]]
    if unknown:
        raise ValueError(
            f"gmm.run_networks {unknown} are not in gmm.networks {list(gmm_config['networks'])}"
        )
    return names


def model_section(name: str) -> str:
    """The ``gmm:`` config section that configures model ``name`` (``ours``, ``inn`` or ``cinn``).

    Example:
        >>> model_section("inn_altered_ramp"), model_section("cinn")
        ('inn', 'cinn')
    """
    if name in ("ours", "cinn"):
        return name
    if name.startswith(INN_PREFIX):
        return "inn"
    raise ValueError(f"unknown GMM model '{name}': use one of {MODEL_NAMES}")


def training_settings(
    gmm_config: Mapping[str, Any], name: str, network: str | None = None
) -> dict[str, Any]:
    """The part of a ``gmm:`` config that determines how model ``name`` trains on ``network``.

    ``network`` names one of ``gmm.networks``; ``None`` takes the one ``network`` of a config
    that is already such a result (so the function is idempotent).

    Snakemake passes only this as the training rule's params, so changing an evaluation key (e.g.
    ``n_test``) or another network does not retrain anything. The result is itself a valid
    ``gmm_config`` for :func:`replicate.experiments.gmm.stages.train_gmm_model` and
    :func:`replicate.experiments.gmm.training.gmm_model`, with the one network under ``network``.

    Example:
        >>> cfg = {"n_train": 8, "batch_size": 4, "iterations": 2, "n_test": 99,
        ...        "networks": {"tiny": {"hidden": 4}}, "ours": {"eps": 0.1}, "cinn": {}}
        >>> settings = training_settings(cfg, "ours", "tiny")
        >>> sorted(settings), settings["network"]
        (['batch_size', 'iterations', 'n_train', 'network', 'ours'], {'hidden': 4})
    """
    section = model_section(name)
    if network is None:
        chosen = gmm_config["network"]
    elif network in gmm_config["networks"]:
        chosen = gmm_config["networks"][network]
    else:
        raise ValueError(
            f"gmm.networks has no network '{network}'; configured: {list(gmm_config['networks'])}"
        )
    out = {k: gmm_config[k] for k in ("n_train", "batch_size", "iterations")}
    out["network"] = dict(chosen)
    settings = dict(gmm_config[section])
    if section == "inn":
        variant = name[len(INN_PREFIX) :]
        variants = settings.pop("variants")
        if variant not in variants:
            raise ValueError(
                f"gmm.inn.variants has no variant '{variant}' (model '{name}'); configured: "
                f"{sorted(variants)}"
            )
        settings["variants"] = {variant: variants[variant]}
    out[section] = settings
    return out
