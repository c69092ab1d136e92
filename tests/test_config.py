"""Bad configuration fails before any job, with one line per bad key naming its value and what is
allowed (replicate.config.validate_config, called by workflow/rules/common.smk)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import REPO, merged_config, snakemake

from replicate.config import ConfigError, validate_config

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
PAPER = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def _problems(edit: Callable[[dict[str, Any]], object]) -> str:
    config = copy.deepcopy(PAPER)
    edit(config)
    with pytest.raises(ConfigError) as err:
        validate_config(config, SCHEMA)
    return str(err.value)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """An edit setting the dotted key ``path`` to ``value``."""

    def edit(config: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for key in parents:
            config = config[key]
        config[last] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "line"),
    [
        (_set("gmm.ours.eps", 0), "gmm.ours.eps = 0: must be > 0"),
        (_set("gmm.ours.eps", -0.1), "gmm.ours.eps = -0.1: must be > 0"),
        (_set("latent.flow.eps", 0.0), "latent.flow.eps = 0.0: must be > 0"),
        (_set("gmm.ours.sigma", -0.05), "gmm.ours.sigma = -0.05: must be >= 0"),
        (_set("latent.flow.sigma", -1), "latent.flow.sigma = -1: must be >= 0"),
        # dimensions: x (2) + padding = z + y (8); z = 0 or a negative padding
        (
            _set("gmm.ours.latent_dim", 0),
            "gmm.ours.latent_dim = 0: must be >= 1 (z; the flow's width x (2) + padding = z + y",
        ),
        (_set("gmm.inn.latent_dim", -7), "gmm.inn.latent_dim = -7: must be >= 1"),
        (
            _set("latent.datasets", ["mnist", "cifar10"]),
            'latent.datasets[1] = "cifar10": must be one of ["mnist", "fashion_mnist"]',
        ),
        (
            _set("gmm.label_maps", ["most"]),
            'gmm.label_maps[0] = "most": must be one of ["all", "some"]',
        ),
        (_set("seeds", []), "seeds = []: must have at least 1 item"),
        (_set("seeds", [0, -1]), "seeds[1] = -1: must be >= 0"),
        (
            _set("gmm.inn.variants.slow", {"losses": ["y"], "ramp_epochs": 1}),
            'gmm.inn.variants.slow: unknown name; use one of ["full", "forward_only", '
            '"altered_ramp"]',
        ),
        (
            _set("gmm.inn.variants.full.losses", ["y", "mse"]),
            'gmm.inn.variants.full.losses[1] = "mse": must be one of ["y", "z", "x_backward", '
            '"x_reconstruction"]',
        ),
        (_set("gmm.batch_size", "big"), 'gmm.batch_size = "big": must be of type integer'),
        (_set("latent.n_train", 0.5), "latent.n_train = 0.5: must be of type integer or null"),
        (_set("gmm.batch_sise", 100), 'gmm.batch_sise: unknown key; allowed: ["batch_size", '),
        (
            _set("gmm.networks.reference.subnet_layer", 2),
            'gmm.networks.reference.subnet_layer: unknown key; allowed: ["clamp", "hidden", ',
        ),
        (
            _set("gmm.networks.Wide-1", PAPER["gmm"]["networks"]["paper"]),
            'gmm.networks.Wide-1: a name that must match the pattern "^[a-z][a-z0-9]*$"',
        ),
        (
            _set("gmm.networks.reference.total_dim", 1),
            "gmm.networks.reference.total_dim = 1: must be >= 2",
        ),
        (lambda c: c["latent"]["flow"].pop("eps"), "latent.flow.eps: missing; it is required"),
        (
            _set("device", "tpu"),
            'device = "tpu": must match the pattern "^(auto|cpu|cuda(:[0-9]+)?)$" '
            "(auto, cpu, cuda or cuda:N)",
        ),
    ],
)
def test_bad_key_is_named_with_its_value_and_what_is_allowed(edit, line: str) -> None:
    assert f"\n  {line}" in _problems(edit)


def test_every_bad_key_is_reported_at_once() -> None:
    def edit(config: dict[str, Any]) -> None:
        config["gmm"]["ours"]["eps"] = 0
        config["latent"]["datasets"] = ["svhn"]
        config["seeds"] = [-1]

    lines = _problems(edit).splitlines()[1:]
    assert lines == [
        "  gmm.ours.eps = 0: must be > 0",
        '  latent.datasets[0] = "svhn": must be one of ["mnist", "fashion_mnist"]',
        "  seeds[0] = -1: must be >= 0",
    ]


def test_relations_between_keys_are_checked_once_every_key_is_well_formed() -> None:
    message = _problems(_set("gmm.batch_size", PAPER["gmm"]["n_train"] + 1))
    assert "gmm.batch_size (1048577) must be <= gmm.n_train (1048576)" in message


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            _set("gmm.figure_network", "wide"),
            "gmm.figure_network 'wide' is not one of gmm.run_networks ['reference', 'paper']",
        ),
        (
            _set("gmm.run_networks", ["reference", "wide"]),
            "gmm.run_networks ['wide'] are not in gmm.networks ['paper', 'reference']",
        ),
        (
            _set("kinematics.figure_observations", [0, 100]),
            "kinematics.figure_observations [100] must be indices below "
            "kinematics.n_observations (100)",
        ),
        (
            _set("gmm.networks.reference.total_dim", 9),
            "gmm.networks.reference.total_dim (9) must be >= the label's 8 dims + "
            "gmm.inn.latent_dim (2), or null",
        ),
        (
            _set("linear_gaussian.forward", [[1.0, 0.5], [0.3]]),
            "linear_gaussian.forward [[1.0, 0.5], [0.3]]: rows of different lengths",
        ),
        (
            _set("linear_gaussian.eps_over_noise", [1.0, 1.0000001]),
            "linear_gaussian.eps_over_noise [1.0, 1.0000001]: values that agree to 6 significant "
            "digits would give two models one name (ours_eps<ratio>s)",
        ),
        (
            _set("linear_gaussian.noise_std", [0.3, 0.3000001]),
            "linear_gaussian.noise_std [0.3, 0.3000001]: values that agree to 6 significant "
            "digits would share one run's files; drop one",
        ),
        (
            _set("kinematics.ours.annealed_eps", [0.01, 0.0100000001]),
            "kinematics.ours.annealed_eps [0.01, 0.0100000001]: values that agree to 6 "
            "significant digits would give two models one name (ours_annealed<value>); drop one",
        ),
        (
            _set("linear_gaussian.training.batch_size", 5000),
            "linear_gaussian.training.batch_size (5000) must be <= "
            "linear_gaussian.training.n_train (4096)",
        ),
    ],
)
def test_networks_that_cannot_hold_the_problem_are_refused(edit, message: str) -> None:
    assert message in _problems(edit)


@pytest.mark.parametrize(
    "name", ["config.yaml", "smoke.yaml", "quick.yaml", "fashion_ablation.yaml"]
)
def test_shipped_configurations_are_valid(name: str) -> None:
    over = yaml.safe_load((REPO / "config" / name).read_text())
    validate_config(merged_config(PAPER, over), SCHEMA)


def test_schema_gives_every_key_a_type_and_every_number_a_lower_bound() -> None:
    """The audit: no key of config/config.yaml escapes the schema."""
    schema = yaml.safe_load(SCHEMA.read_text())
    loose: list[str] = []

    def visit(value: Any, rule: Mapping[str, Any], key: str) -> None:
        while "$ref" in rule:
            rule = schema["$defs"][rule["$ref"].rsplit("/", 1)[-1]]
        if isinstance(value, dict):
            for name, sub in value.items():
                child = rule.get("properties", {}).get(name, rule.get("additionalProperties"))
                if not isinstance(child, Mapping):
                    loose.append(f"{key}.{name}: no schema")
                else:
                    visit(sub, child, f"{key}.{name}")
            return
        if isinstance(value, list):
            for i, item in enumerate(value):
                visit(item, rule.get("items", {}), f"{key}[{i}]")
        types = rule.get("type", [])
        types = types if isinstance(types, list) else [types]
        if not types and "enum" not in rule:
            loose.append(f"{key}: no type")
        numeric = {"integer", "number"} & set(types)
        if numeric and not {"minimum", "exclusiveMinimum"} & set(rule):
            loose.append(f"{key}: no lower bound")

    visit(PAPER, schema, "config")
    assert not loose, loose


@pytest.mark.slow
def test_dry_run_fails_naming_the_key_before_any_job(tmp_path: Path) -> None:
    """The workflow wiring: common.smk validates on --dry-run, and nothing runs."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("gmm: {ours: {eps: 0}}\nlatent: {datasets: [mnist, cifar10]}\n")
    proc = snakemake(tmp_path, "--dry-run", "--configfile", str(bad), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "gmm.ours.eps = 0: must be > 0" in out
    assert 'latent.datasets[1] = "cifar10": must be one of ["mnist", "fashion_mnist"]' in out
    assert not (tmp_path / "results").exists()
