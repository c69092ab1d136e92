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
    _check_gmm(config.get("gmm", {}))
    _check_latent(config.get("latent", {}))


# The Gaussian mixture: x is 2-D and the label one-hot of width 8 (replicate.gmm.GaussianMixture).
_GMM_DATA_DIM, _GMM_CONDITION_DIM = 2, 8
_INN_VARIANTS = ("full", "forward_only", "altered_ramp")
_INN_LOSSES = ("y", "z", "x_backward", "x_reconstruction")


def _check_gmm(gmm: Mapping[str, Any]) -> None:
    """Cross-key checks of the ``gmm:`` section."""
    for model in ("ours", "inn"):
        latent = gmm.get(model, {}).get("latent_dim")
        if latent is None:
            continue
        # The flow's width is x + padding = z + y, and padding cannot be negative.
        padding = latent + _GMM_CONDITION_DIM - _GMM_DATA_DIM
        if latent < 1 or padding < 0:
            raise ConfigError(
                f"gmm.{model}.latent_dim must be >= 1 and give padding = latent_dim + "
                f"{_GMM_CONDITION_DIM} - {_GMM_DATA_DIM} >= 0, got {latent}"
            )
    inn = gmm.get("inn", {})
    weights = inn.get("weights", {})
    for variant, settings in inn.get("variants", {}).items():
        if variant not in _INN_VARIANTS:
            raise ConfigError(
                f"gmm.inn.variants.{variant}: unknown variant; use one of {list(_INN_VARIANTS)}"
            )
        losses = settings.get("losses", [])
        unknown = [loss for loss in losses if loss not in _INN_LOSSES]
        if unknown or not losses:
            raise ConfigError(
                f"gmm.inn.variants.{variant}.losses must be a non-empty subset of "
                f"{list(_INN_LOSSES)}, got {losses}"
            )
        if weights and not any(weights.get(loss, 0) > 0 for loss in losses):
            raise ConfigError(
                f"gmm.inn.variants.{variant}.losses {losses}: every one has weight 0 in "
                "gmm.inn.weights, so nothing would train"
            )
    n_train, batch = gmm.get("n_train"), gmm.get("batch_size")
    if n_train is not None and batch is not None and batch > n_train:
        raise ConfigError(f"gmm.batch_size ({batch}) must be <= gmm.n_train ({n_train})")


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
    for model in ("autoencoder", "flow"):
        batch = latent.get(model, {}).get("batch_size")
        if n_train is not None and batch is not None and batch > n_train:
            raise ConfigError(
                f"latent.{model}.batch_size ({batch}) must be <= latent.n_train ({n_train})"
            )
    # The auto-encoder's BatchNorm cannot train on batches of one image.
    if (latent.get("autoencoder", {}).get("batch_size") or 2) < 2:
        raise ConfigError("latent.autoencoder.batch_size must be >= 2 (BatchNorm needs 2 rows)")
