"""replicate.training_steps: the terms read back in blocks give the numbers of the per-iteration
check, and a divergence found in a block is reported at its exact iteration with the block's
starting weights restored. (The CUDA graph itself: tests/test_gpu.py, on a GPU.)"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from helpers import small_gmm_settings
from safetensors.torch import load_file

from replicate.experiments.gmm.stages import train_gmm_model
from replicate.runtime import TrainingDiverged
from replicate.training import TrainingFiles, fit, make_optimizer
from replicate.training_steps import EXECUTION_ENV, StepRunner, TrainingStep, execution_mode


def test_cpu_runs_eagerly_unless_deferred_is_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    assert execution_mode(cpu) == "eager"
    monkeypatch.setenv(EXECUTION_ENV, "graph")  # nothing to capture on the CPU
    assert execution_mode(cpu) == "eager"
    monkeypatch.setenv(EXECUTION_ENV, "deferred")
    assert execution_mode(cpu) == "deferred"
    monkeypatch.setenv(EXECUTION_ENV, "fast")
    with pytest.raises(ValueError, match="REPLICATE_EXECUTION='fast'"):
        execution_mode(cpu)


@pytest.mark.parametrize("model", ["ours", "inn_full", "cinn"])
def test_terms_read_back_per_segment_give_the_per_iteration_numbers_bit_for_bit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: str
) -> None:
    settings = small_gmm_settings(model, "reference")
    settings["iterations"] = 12
    runs = {}
    for mode in ("eager", "deferred"):
        monkeypatch.setenv(EXECUTION_ENV, mode)
        out = tmp_path / mode
        out.mkdir()
        status = train_gmm_model(
            model,
            settings,
            "all",
            0,
            TrainingFiles(out / "m.safetensors", out / "m.json", history=out / "h.csv"),
            progress_every=0,
        )
        runs[mode] = (status, load_file(out / "m.safetensors"), (out / "h.csv").read_text())
    (eager_status, eager_weights, eager_history), (_, weights, history) = runs.values()
    assert eager_status["iterations_done"] == 12
    assert history == eager_history
    assert weights.keys() == eager_weights.keys()
    for name, value in weights.items():
        assert torch.equal(value, eager_weights[name]), name


def _diverging_step(w: torch.nn.Parameter, bad_iteration: int) -> TrainingStep:
    """Loss (w - 1)^2 * scale, the scale inf at ``bad_iteration``."""
    return TrainingStep(
        lambda i: {"scale": torch.tensor(float("inf") if i == bad_iteration else 1.0)},
        lambda scale: {"loss": ((w - 1.0) ** 2).sum() * scale, "w": w.sum()},
    )


@pytest.mark.parametrize("mode", ["eager", "deferred"])
def test_a_divergence_names_its_iteration_and_keeps_the_last_checked_weights(mode: str) -> None:
    w = torch.nn.Parameter(torch.tensor([3.0]))
    optimizer = make_optimizer([w], lr=0.1)
    reference = copy.deepcopy(w)
    ref_opt = make_optimizer([reference], lr=0.1)
    runner = StepRunner(_diverging_step(w, bad_iteration=7), optimizer, None, mode=mode)
    seen: list[int] = []
    with pytest.raises(TrainingDiverged) as raised:
        for i in range(10):
            runner.run(i)
            if mode == "eager" or (i + 1) % 5 == 0:  # blocks of 5: 0-4, 5-9
                seen.extend(j for j, _, _ in runner.flush())
    assert raised.value.iteration == 7
    assert seen == list(range(7))  # every finite iteration read, in order
    # eager: checked before its update, so the weights after iteration 6; deferred: the start of
    # the block holding iteration 7, i.e. after iteration 4 (the optimiser state with them).
    finite_updates = 7 if mode == "eager" else 5
    for _ in range(finite_updates):
        ref_opt.zero_grad()
        ((reference - 1.0) ** 2).sum().backward()
        ref_opt.step()
    assert torch.equal(w.detach(), reference.detach())
    assert optimizer.state_dict()["state"][0]["step"] == finite_updates


def test_fit_reports_a_deferred_divergence_with_its_history(monkeypatch) -> None:
    monkeypatch.setenv(EXECUTION_ENV, "deferred")
    w = torch.nn.Parameter(torch.tensor([3.0]))
    with pytest.raises(TrainingDiverged, match="iteration 7"):
        fit(_diverging_step(w, 7), make_optimizer([w], lr=0.1), 10, segment=5, progress_every=1)
