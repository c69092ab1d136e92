"""Validation of the configuration before any job runs (the workflow calls :func:`validate_config`).

:func:`validate_config` checks each key's type and range against
``workflow/schemas/config.schema.yaml`` and reports every violation, one line per key with its
value and what is allowed; :func:`check_config` then checks what a JSON schema cannot express
(relations between keys). A wrong setting thus fails on ``snakemake --dry-run``, naming the key.

Example:
    >>> check_config({"gmm": {"ours": {"latent_dim": 2}}})
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import yaml

__all__ = [
    "DEVICE_RULES",
    "ConfigError",
    "check_config",
    "gpu_jobs",
    "gpu_present",
    "schema_problems",
    "stage_device",
    "uses_gpu",
    "validate_config",
]

# The rules whose stage runs a model on the configured device (their stage takes `device`); each
# declares one unit of the `gpu_jobs` resource when that device is a GPU, and `stage_devices` can
# move any of them to another device. tests/test_style.py checks this list against the workflow.
DEVICE_RULES = (
    "train_gmm",
    "evaluate_gmm",
    "benchmark_gmm_speed",
    "train_autoencoder",
    "encode_latents",
    "plot_reconstructions",
    "train_latent_flow",
    "evaluate_latent_flow",
    "sample_latent_flow",
    "plot_fig5_4",
    "train_latent_classifier",
    "train_latent_cinn",
    "sample_latent_cinn",
    "train_joint_latent",
    "train_kinematics",
    "evaluate_kinematics",
)


# The Gaussian mixture's one-hot label (8 modes), which every network's width must hold.
GMM_CONDITION_DIM = 8


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key and what is allowed."""


def stage_device(config: Mapping[str, Any], rule: str) -> str:
    """The device of ``rule``'s stage: its entry in ``stage_devices``, else ``device``.

    Example:
        >>> stage_device({"device": "auto", "stage_devices": {"train_gmm": "cpu"}}, "train_gmm")
        'cpu'
        >>> stage_device({"device": "auto"}, "train_kinematics")
        'auto'
    """
    return (config.get("stage_devices") or {}).get(rule, config["device"])


def gpu_present() -> bool:
    """Whether this machine shows an NVIDIA GPU, read without importing PyTorch (so that parsing
    the workflow stays fast): the driver's ``/proc`` entry or ``nvidia-smi`` on PATH, unless
    ``CUDA_VISIBLE_DEVICES`` hides every device."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    return (gpus.is_dir() and any(gpus.iterdir())) or shutil.which("nvidia-smi") is not None


def uses_gpu(device: str) -> bool:
    """Whether a stage on ``device`` (``auto``, ``cpu``, ``cuda[:N]``) runs on a GPU here.

    Example:
        >>> uses_gpu("cpu"), uses_gpu("cuda:1")
        (False, True)
    """
    return device.startswith("cuda") or (device == "auto" and gpu_present())


def gpu_jobs(config: Mapping[str, Any], rule: str) -> int:
    """Units of the workflow's ``gpu_jobs`` resource that ``rule`` takes: one if its stage runs on
    a GPU here, else none. ``--resources gpu_jobs=N`` (profiles/default) then caps the jobs that
    share the GPU, and on a machine without one limits nothing.

    Example:
        >>> gpu_jobs({"device": "cuda"}, "train_gmm"), gpu_jobs({"device": "cpu"}, "train_gmm")
        (1, 0)
    """
    return int(uses_gpu(stage_device(config, rule)))


def validate_config(config: Mapping[str, Any], schema_path: str | os.PathLike) -> None:
    """Raise :class:`ConfigError` unless ``config`` fits the schema and :func:`check_config`.

    The message lists every schema violation, one line each (``gmm.ours.eps = 0: must be > 0``);
    the relations between keys are checked only once every key is well-formed.
    """
    schema = yaml.safe_load(Path(schema_path).read_text())
    problems = schema_problems(config, schema)
    if problems:
        lines = "\n".join(f"  {p}" for p in problems)
        raise ConfigError(
            f"invalid configuration (config/config.yaml merged with any --configfile), "
            f"checked against {schema_path}; fix these keys:\n{lines}"
        )
    check_config(config)


def schema_problems(config: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """One line per violation of the JSON ``schema``: the dotted key, its value, what is allowed.

    Example:
        >>> schema = {"type": "object", "properties": {"eps": {"type": "number", "minimum": 1}}}
        >>> schema_problems({"eps": 0}, schema)
        ['eps = 0: must be >= 1']
    """
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    errors = sorted(validator_class(schema).iter_errors(config), key=lambda e: _key(e.path))
    # dict.fromkeys: one line per problem, in key order (jsonschema repeats "required" per key).
    return list(dict.fromkeys(line for e in errors for line in _describe(e)))


def _key(path: Iterable[str | int]) -> str:
    """``gmm.ours.eps``, ``seeds[0]``: a key path as a user would write it."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _show(value: Any) -> str:
    # JSON spelling is YAML's for scalars and flow lists: "big", null, [0, 1].
    return json.dumps(value, default=str)


# What a failed keyword means, as the rest of the sentence "<key> = <value>: must ...".
_BOUNDS = {
    "minimum": "be >= {}",
    "exclusiveMinimum": "be > {}",
    "maximum": "be <= {}",
    "exclusiveMaximum": "be < {}",
    "minItems": "have at least {} item(s)",
    "maxItems": "have at most {} item(s)",
    "minLength": "have at least {} character(s)",
    "minProperties": "have at least {} entry(ies)",
    "pattern": "match the pattern {}",
}


def _describe(error: jsonschema.ValidationError) -> Iterator[str]:
    """The line(s) for one schema violation: ``<key> = <value>: must ... (<its description>)``."""
    rule, allowed, path = error.validator, error.validator_value, list(error.absolute_path)
    if list(error.relative_schema_path)[-2:-1] == ["propertyNames"]:
        # The instance is the name of a key, not a value.
        if rule == "enum":
            yield f"{_key([*path, error.instance])}: unknown name; use one of {_show(allowed)}"
        else:
            requirement = _BOUNDS[rule].format(_show(allowed)) if rule in _BOUNDS else rule
            yield f"{_key([*path, error.instance])}: a name that must {requirement}"
        return
    if rule == "additionalProperties" and allowed is False:
        known = sorted(error.schema.get("properties", {}))
        for name in error.instance:
            if name not in known:
                yield f"{_key([*path, name])}: unknown key; allowed: {_show(known)}"
        return
    if rule == "required":
        for name in allowed:
            if name not in error.instance:
                yield f"{_key([*path, name])}: missing; it is required"
        return
    if rule == "enum":
        requirement = f"must be one of {_show(allowed)}"
    elif rule == "type":
        requirement = (
            f"must be of type {' or '.join(allowed if isinstance(allowed, list) else [allowed])}"
        )
    elif rule == "uniqueItems":
        requirement = "must not repeat an item"
    elif rule in _BOUNDS:
        requirement = f"must {_BOUNDS[rule].format(_show(allowed))}"
    else:  # a keyword the schema does not use yet: jsonschema's own words
        requirement = error.message
    where = f"{_key(path)} = {_show(error.instance)}" if path else "the configuration"
    note = error.schema.get("description") if isinstance(error.schema, Mapping) else None
    yield f"{where}: {requirement}" + (f" ({note})" if note else "")


def check_config(config: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` if keys that depend on each other disagree."""
    _check_gmm(config.get("gmm", {}))
    _check_latent(config.get("latent", {}))
    _check_kinematics(config.get("kinematics", {}))
    _check_linear_gaussian(config.get("linear_gaussian", {}))


def _check_gmm(gmm: Mapping[str, Any]) -> None:
    """Cross-key checks of the ``gmm:`` section (names and ranges are the schema's)."""
    weights = gmm.get("inn", {}).get("weights", {})
    for variant, settings in gmm.get("inn", {}).get("variants", {}).items():
        losses = settings.get("losses", [])
        if weights and not any(weights.get(loss, 0) > 0 for loss in losses):
            raise ConfigError(
                f"gmm.inn.variants.{variant}.losses {losses}: every one has weight 0 in "
                "gmm.inn.weights, so nothing would train"
            )
    n_train, batch = gmm.get("n_train"), gmm.get("batch_size")
    if n_train is not None and batch is not None and batch > n_train:
        raise ConfigError(f"gmm.batch_size ({batch}) must be <= gmm.n_train ({n_train})")
    networks, shown = gmm.get("networks", {}), gmm.get("figure_network")
    run = gmm.get("run_networks", list(networks))
    unknown = [name for name in run if networks and name not in networks]
    if unknown:
        raise ConfigError(f"gmm.run_networks {unknown} are not in gmm.networks {sorted(networks)}")
    if networks and shown is not None and shown not in run:
        raise ConfigError(f"gmm.figure_network '{shown}' is not one of gmm.run_networks {run}")
    # x (2) and the one-hot label (8) must fit: the INN needs z + y <= width, ours z >= 1.
    inn_latent = gmm.get("inn", {}).get("latent_dim", 1)
    for name, network in networks.items():
        width = network.get("total_dim")
        if width is not None and width < GMM_CONDITION_DIM + max(inn_latent, 1):
            raise ConfigError(
                f"gmm.networks.{name}.total_dim ({width}) must be >= the label's "
                f"{GMM_CONDITION_DIM} dims + gmm.inn.latent_dim ({inn_latent}), or null"
            )


def _check_latent(latent: Mapping[str, Any]) -> None:
    """Cross-key checks of the ``latent:`` section's auto-encoder and flow keys (issue 4)."""
    shown, evaluated = latent.get("n_samples_per_class"), latent.get("n_eval_samples_per_class")
    # Figure 5.3 shows the first rows of the evaluation samples, so they must be enough.
    if shown is not None and evaluated is not None and shown > evaluated:
        raise ConfigError(
            f"latent.n_samples_per_class ({shown}) must be <= latent.n_eval_samples_per_class "
            f"({evaluated}): Figure 5.3 shows the first samples of the evaluation set"
        )
    n_train = latent.get("n_train")
    for model in ("autoencoder", "flow", "joint"):
        batch = latent.get(model, {}).get("batch_size")
        if n_train is not None and batch is not None and batch > n_train:
            raise ConfigError(
                f"latent.{model}.batch_size ({batch}) must be <= latent.n_train ({n_train})"
            )
    # The auto-encoder's BatchNorm cannot train on batches of one image.
    if (latent.get("autoencoder", {}).get("batch_size") or 2) < 2:
        raise ConfigError("latent.autoencoder.batch_size must be >= 2 (BatchNorm needs 2 rows)")
    joint = latent.get("joint", {})
    unknown = sorted(set(joint.get("ablation_variants", [])) - set(joint.get("variants", {})))
    if unknown:
        raise ConfigError(
            f"latent.joint.ablation_variants {unknown} are not in latent.joint.variants "
            f"{sorted(joint.get('variants', {}))}: define them there or leave them out"
        )


def _check_kinematics(kin: Mapping[str, Any]) -> None:
    """Cross-key checks of the ``kinematics:`` section (E4)."""
    n_obs = kin.get("n_observations")
    if n_obs is not None:
        outside = [i for i in kin.get("figure_observations", []) if i >= n_obs]
        if outside:
            raise ConfigError(
                f"kinematics.figure_observations {outside} must be indices below "
                f"kinematics.n_observations ({n_obs})"
            )
        if kin.get("c2st_observations", 0) > n_obs:
            raise ConfigError(
                f"kinematics.c2st_observations ({kin['c2st_observations']}) must be <= "
                f"kinematics.n_observations ({n_obs})"
            )
    ours = kin.get("ours", {})
    for key, prefix in (
        ("eps", "ours_eps"),
        ("learned_eps_min", "ours_learned"),
        ("annealed_eps", "ours_annealed"),
    ):
        _check_distinct_names(
            f"kinematics.ours.{key}",
            ours.get(key, []),
            f"give two models one name ({prefix}<value>)",
        )
    if ours.get("annealed_eps") and "anneal" not in ours:
        raise ConfigError(
            "kinematics.ours.annealed_eps needs kinematics.ours.anneal {from, fraction}"
        )
    weights = kin.get("inn", {}).get("weights", {})
    if weights and not any(w > 0 for w in weights.values()):
        raise ConfigError("kinematics.inn.weights: every weight is 0, so the INN would not train")


def _check_distinct_names(key: str, values: Sequence[float], clash: str) -> None:
    """Values that name files and models (their ``:g`` form, 6 significant digits) must differ
    there: two that agree would ``clash``."""
    if len({f"{float(v):g}" for v in values}) < len(values):
        raise ConfigError(
            f"{key} {values}: values that agree to 6 significant digits would {clash}; drop one"
        )


def _check_linear_gaussian(lg: Mapping[str, Any]) -> None:
    """Cross-key checks of the ``linear_gaussian:`` section."""
    widths = {len(row) for row in lg.get("forward", [])}
    if len(widths) > 1:
        raise ConfigError(
            f"linear_gaussian.forward {lg['forward']}: rows of different lengths; it is the "
            "matrix A of y = A x + noise, one row per observation coordinate"
        )
    _check_distinct_names(
        "linear_gaussian.eps_over_noise",
        lg.get("eps_over_noise", []),
        "give two models one name (ours_eps<ratio>s)",
    )
    _check_distinct_names(
        "linear_gaussian.noise_std", lg.get("noise_std", []), "share one run's files"
    )
    training = lg.get("training", {})
    if training.get("batch_size", 0) > training.get("n_train", float("inf")):
        raise ConfigError(
            f"linear_gaussian.training.batch_size ({training['batch_size']}) must be <= "
            f"linear_gaussian.training.n_train ({training['n_train']})"
        )
