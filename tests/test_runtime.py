"""Atomic outputs, safe checkpoints, device selection, divergence and the training loop."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch
from safetensors.torch import save_file

from replicate.runtime import (
    CheckpointMismatch,
    TrainingDiverged,
    atomic_path,
    check_finite,
    load_checkpoint,
    resolve_device,
    save_checkpoint,
)
from replicate.training import fit, make_optimizer


def test_atomic_path_leaves_nothing_when_the_block_fails(tmp_path) -> None:
    target = tmp_path / "table.csv"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_replaces_an_old_file_only_on_success(tmp_path) -> None:
    target = tmp_path / "table.csv"
    target.write_text("old")
    with atomic_path(target) as tmp:
        tmp.write_text("new")
        assert target.read_text() == "old"
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


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


@pytest.mark.parametrize("cuda_available", [True, False])
def test_device_selection(monkeypatch, cuda_available: bool) -> None:
    # `auto` picks CUDA exactly when PyTorch sees a GPU, whatever machine runs the test.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda_available)
    assert resolve_device("auto") == torch.device("cuda" if cuda_available else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_missing_gpu_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="no CUDA GPU is visible"):
        resolve_device("cuda")


def test_check_finite_reports_iteration_and_terms() -> None:
    assert check_finite(3, {"a": torch.tensor(1.5)}) == {"a": 1.5}
    with pytest.raises(TrainingDiverged, match=r"iteration 7: .*z=nan") as err:
        check_finite(7, {"loss": torch.tensor(1.0), "z": torch.tensor(float("nan"))})
    assert err.value.iteration == 7


def test_fit_stops_at_the_first_non_finite_loss() -> None:
    w = torch.nn.Parameter(torch.ones(1))
    opt = make_optimizer([w], lr=0.1)

    def step(i: int) -> dict[str, torch.Tensor]:
        return {"loss": (w * (float("inf") if i == 4 else 1.0)).sum()}

    with pytest.raises(TrainingDiverged) as err:
        fit(step, opt, iterations=10, progress_every=0)
    assert err.value.iteration == 4


def test_fit_clamps_gradients_elementwise() -> None:
    w = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([w], lr=1.0)
    fit(
        lambda i: {"loss": (w * torch.tensor([100.0, -0.5])).sum()},
        opt,
        1,
        grad_clip=15.0,
        progress_every=0,
    )
    torch.testing.assert_close(w.detach(), torch.tensor([-15.0, 0.5]))


def test_atomic_path_gives_outputs_the_usual_permissions(tmp_path) -> None:
    target = tmp_path / "table.csv"
    with atomic_path(target) as tmp:
        tmp.write_text("a,b\n")
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
