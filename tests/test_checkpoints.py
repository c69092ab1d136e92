"""replicate.checkpoints: safetensors checkpoints and the configuration a load must match."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from replicate.checkpoints import CheckpointMismatch, load_checkpoint, save_checkpoint


def test_checkpoint_round_trip_and_config_mismatch_names_both(tmp_path) -> None:
    path = tmp_path / "m.safetensors"
    stored = {"blocks": 8, "net": {"hidden": 512, "clamp": 2.0}, "seed": 0}
    save_checkpoint(path, {"w": torch.arange(3.0)}, stored)
    same = {"seed": 0, "net": {"clamp": 2.0, "hidden": 512}, "blocks": 8}  # key order is free
    assert load_checkpoint(path, same)["w"].tolist() == [0.0, 1.0, 2.0]
    expected = {"blocks": 4, "net": {"hidden": 512, "clamp": 2.5}, "lr": 0.1}
    with pytest.raises(CheckpointMismatch) as err:
        load_checkpoint(path, expected)
    message = str(err.value)
    assert str(path) in message
    # each differing key with both values, nested keys dotted; equal keys not listed
    for line in (
        "blocks: stored 8, expected 4",
        "net.clamp: stored 2.0, expected 2.5",
        "lr: stored (absent), expected 0.1",
        "seed: stored 0, expected (absent)",
    ):
        assert f"  {line}\n" in message
    assert "net.hidden" not in message
    # and both configurations whole
    assert json.dumps(stored, sort_keys=True) in message
    assert json.dumps(expected, sort_keys=True) in message


def test_checkpoint_without_configuration_is_a_mismatch(tmp_path) -> None:
    path = tmp_path / "bare.safetensors"
    save_file({"w": torch.zeros(1)}, str(path))  # not through save_checkpoint: no metadata
    with pytest.raises(CheckpointMismatch, match="bare.safetensors") as err:
        load_checkpoint(path, {"blocks": 8})
    assert 'stored no configuration (not written by save_checkpoint), expected {"blocks": 8}' in (
        str(err.value)
    )


def test_truncated_checkpoint_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, {"w": torch.randn(100)}, {"a": 1})
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match="unreadable or truncated"):
        load_checkpoint(path, {"a": 1})


def test_missing_checkpoint_names_the_path(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing.safetensors"):
        load_checkpoint(tmp_path / "nothing.safetensors")
