"""The shared training loop: epoch batching, optimiser state in flat tensors, and a run killed
after a checkpoint that resumes to exactly the weights and loss history of an uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import killed_after_checkpoints

import replicate.training as training_module
from replicate.runtime import TrainingDiverged
from replicate.training import (
    EpochBatches,
    FitResult,
    Resume,
    epoch_permutation,
    fit,
    make_optimizer,
    optimizer_tensors,
    restore_optimizer,
)


def test_epoch_permutation_depends_on_seed_and_epoch_only() -> None:
    a = epoch_permutation(100, seed=3, epoch=7)
    assert sorted(a.tolist()) == list(range(100))
    assert torch.equal(a, epoch_permutation(100, seed=3, epoch=7))
    assert not torch.equal(a, epoch_permutation(100, seed=4, epoch=7))
    assert not torch.equal(a, epoch_permutation(100, seed=3, epoch=8))


@pytest.mark.parametrize(
    ("n", "batch_size", "min_last_batch", "sizes"),
    [(10, 4, 1, [4, 4, 2]), (9, 4, 2, [4, 4]), (10, 4, 2, [4, 4, 2]), (8, 4, 1, [4, 4])],
)
def test_epoch_batches_cover_every_row_once_per_epoch(
    n: int, batch_size: int, min_last_batch: int, sizes: list[int]
) -> None:
    batches = EpochBatches(n, batch_size, seed=5, min_last_batch=min_last_batch)
    assert batches.per_epoch == len(sizes)
    for epoch in range(2):
        rows = [batches(epoch * batches.per_epoch + b) for b in range(batches.per_epoch)]
        assert [len(r) for r in rows] == sizes
        flat = torch.cat(rows).tolist()
        assert len(set(flat)) == len(flat)  # no row twice in an epoch
        assert torch.equal(torch.cat(rows), epoch_permutation(n, 5, epoch)[: sum(sizes)])


def test_epoch_batches_reject_too_few_rows() -> None:
    with pytest.raises(ValueError, match="no batch"):
        EpochBatches(1, 4, seed=0, min_last_batch=2)


def test_optimizer_state_round_trips_through_flat_tensors() -> None:
    p = torch.nn.Parameter(torch.randn(3))
    q = torch.nn.Parameter(torch.randn(2, 2))
    opt = torch.optim.Adam([p, q], lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        ((p**2).sum() + (q**3).sum()).backward()
        opt.step()
    fresh = torch.optim.Adam([p, q], lr=0.1)
    restore_optimizer(fresh, optimizer_tensors(opt))
    for param in (p, q):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(fresh.state[param][key], opt.state[param][key])


def _noisy_regression(path: Path | None, iterations: int = 12):
    """A model whose steps draw noise from the global generator, as the flows' padding noise."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = make_optimizer(model.parameters(), lr=0.05)
    x = torch.randn(32, 3)

    def step(i: int) -> dict[str, torch.Tensor]:
        noise = 0.1 * torch.randn(32, 1)
        loss = ((model(x) - x.sum(1, keepdim=True) - noise) ** 2).mean()
        return {"loss": loss, "noise_mean": noise.mean()}

    resume = Resume(path, model, {"lr": 0.05}) if path else None
    result = fit(step, optimizer, iterations, segment=4, seed=7, resume=resume, progress_every=0)
    return model, result


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    reference, ref_result = _noisy_regression(None)
    path = tmp_path / "run.safetensors"
    with killed_after_checkpoints(2):  # right after the second segment's checkpoint
        _noisy_regression(path)
    assert path.exists()

    resumed, result = _noisy_regression(path)
    assert result.resumed_at == 8 and result.iterations == 4
    assert result.history == ref_result.history  # every term, including the noise drawn
    for a, b in zip(reference.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
    assert not path.exists(), "a finished run removes its resume checkpoint"


def test_checkpoint_of_another_configuration_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "run.safetensors"
    w = torch.nn.Parameter(torch.ones(1))
    optimizer = make_optimizer([w], lr=0.1)
    training_module._save(
        Resume(path, torch.nn.ParameterList([w]), {"lr": 0.2}), optimizer, [{"loss": 1.0}] * 4
    )
    result = fit(
        lambda i: {"loss": (w**2).sum()},
        optimizer,
        8,
        segment=4,
        resume=Resume(path, torch.nn.ParameterList([w]), {"lr": 0.1}),
        progress_every=0,
    )
    assert result.resumed_at == 0 and result.iterations == 8


def test_divergence_keeps_the_history_and_the_last_checkpoint(tmp_path: Path) -> None:
    w = torch.nn.Parameter(torch.ones(1))
    path = tmp_path / "run.safetensors"
    partial = FitResult()

    def step(i: int) -> dict[str, torch.Tensor]:
        return {"loss": (w**2).sum() * (float("nan") if i == 6 else 1.0)}

    with pytest.raises(TrainingDiverged, match="iteration 6"):
        fit(
            step,
            make_optimizer([w], lr=0.1),
            10,
            segment=4,
            resume=Resume(path, torch.nn.ParameterList([w]), {}),
            result=partial,
            progress_every=0,
        )
    assert len(partial.history) == 6
    assert path.exists(), "the last finite segment stays resumable"


def test_segment_means() -> None:
    result = FitResult(history=[{"loss": float(v)} for v in range(7)])
    assert result.segment_means(3) == [1.0, 4.0]


def test_checkpoint_ending_mid_segment_is_ignored_before_anything_is_loaded(
    tmp_path: Path,
) -> None:
    path = tmp_path / "run.safetensors"
    w = torch.nn.Parameter(torch.ones(1))
    saved = torch.nn.ParameterList([torch.nn.Parameter(torch.full((1,), 7.0))])
    # 3 iterations of history: not a whole number of this run's 4-iteration segments.
    training_module._save(
        Resume(path, saved, {}), make_optimizer(saved, lr=0.1), [{"loss": 1.0}] * 3
    )
    seen: list[float] = []

    def step(i: int) -> dict[str, torch.Tensor]:
        seen.append(float(w.detach()))
        return {"loss": (w**2).sum()}

    result = fit(
        step,
        make_optimizer([w], lr=0.1),
        8,
        segment=4,
        resume=Resume(path, torch.nn.ParameterList([w]), {}),
        progress_every=0,
    )
    assert result.resumed_at == 0 and seen[0] == 1.0, "the checkpoint's weights were loaded"
