"""replicate.runtime: device selection, divergence checks and progress lines."""

from __future__ import annotations

import logging

import pytest
import torch

from replicate.runtime import ProgressLog, TrainingDiverged, check_finite, resolve_device


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


def test_progress_rate_of_a_resumed_run_counts_from_where_it_resumed(caplog) -> None:
    progress = ProgressLog(total=100, every=10, start=40)
    with caplog.at_level(logging.INFO, logger="replicate"):
        progress.update(50, {"loss": 1.0}, now=progress.last + 2.0)  # 10 iterations in 2 s
        progress.update(60, {"loss": 0.5}, now=progress.last + 4.0)  # 10 more in 4 s
    rates = [r.getMessage().rsplit(" ", 2)[-2] for r in caplog.records]
    assert rates == ["5.00", "2.50"]
