"""Checks on the configuration that a JSON schema cannot express (relations between keys).

Snakemake's ``validate`` checks each key's type and range against
``workflow/schemas/config.schema.yaml``; :func:`check_config` then checks what ties keys together,
so a wrong setting fails before any training, naming the key.

Example:
    >>> check_config({"gmm": {"ours": {"latent_dim": 2}}})
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["ConfigError", "check_config"]


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key and what is allowed."""


def check_config(config: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` if keys that depend on each other disagree."""
    gmm = config.get("gmm", {})
    for model in ("ours", "inn"):
        latent = gmm.get(model, {}).get("latent_dim")
        # x is 2-D; the flow's width is x + padding = z + y, and padding cannot be negative.
        if latent is not None and latent < 1:
            raise ConfigError(f"gmm.{model}.latent_dim must be >= 1, got {latent}")
