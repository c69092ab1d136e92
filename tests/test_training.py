"""The shared training loop: epoch batching, optimiser state in flat tensors, and a run killed
after a checkpoint, stopped by a signal, or left with a damaged checkpoint that resumes to exactly
the weights and loss history of an uninterrupted run."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import pytest
import torch
from helpers import killed_after_checkpoints

from replicate.checkpoints import (
    Resume,
    RunState,
    optimizer_tensors,
    restore_optimizer,
    save_run,
    stored_code,
)
from replicate.fingerprints import recording_code
from replicate.runtime import TrainingDiverged, TrainingInterrupted
from replicate.training import (
    EpochBatches,
    FitResult,
    Validation,
    epoch_permutation,
    fit,
    make_optimizer,
    segment_seed,
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


def _noisy_regression(
    path: Path | None, iterations: int = 12, signal_at: tuple[int, int] | None = None
):
    """A model whose steps draw noise from the global generator, as the flows' padding noise;
    ``signal_at=(iteration, signal)``: the process receives that signal during that iteration
    (as a job does from SLURM or Ctrl-C)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = make_optimizer(model.parameters(), lr=0.05)
    x = torch.randn(32, 3)

    def step(i: int) -> dict[str, torch.Tensor]:
        if signal_at is not None and i == signal_at[0]:
            os.kill(os.getpid(), signal_at[1])
        noise = 0.1 * torch.randn(32, 1)
        loss = ((model(x) - x.sum(1, keepdim=True) - noise) ** 2).mean()
        return {"loss": loss, "noise_mean": noise.mean()}

    resume = Resume(path, model, {"lr": 0.05}) if path else None
    result = fit(step, optimizer, iterations, segment=4, seed=7, resume=resume, progress_every=0)
    return model, result


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


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
    # The finished run stays resumable until its caller has written its outputs (and deletes
    # it): a failure in between resumes with nothing left to train, not from iteration 0.
    again, finished = _noisy_regression(path)
    assert finished.resumed_at == 12 and finished.iterations == 0
    assert finished.history == ref_result.history
    assert _same_weights(again, reference)


@pytest.mark.parametrize(
    ("iteration", "sig"), [(5, signal.SIGTERM), (6, signal.SIGINT), (7, signal.SIGTERM)]
)
def test_a_signal_saves_the_run_where_it_stopped_and_the_rerun_goes_on_from_there(
    tmp_path: Path, iteration: int, sig: int
) -> None:
    """SIGTERM (a cluster's preemption or time limit) or SIGINT mid-segment: the iteration in
    progress ends, the state is saved there (generator included), the run stops with
    TrainingInterrupted; the rerun resumes at that iteration, not at the segment's start, and
    ends with the numbers of a run never interrupted. Iteration 7 ends a segment of 4."""
    reference, ref_result = _noisy_regression(None)
    path = tmp_path / "run.safetensors"
    with pytest.raises(TrainingInterrupted, match=f"after iteration {iteration + 1}"):
        _noisy_regression(path, signal_at=(iteration, sig))
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, "the handler stays installed"
    resumed, result = _noisy_regression(path)
    assert result.resumed_at == iteration + 1
    assert result.history == ref_result.history
    assert _same_weights(resumed, reference)


def test_a_signal_after_a_learning_rate_change_resumes_at_the_changed_rate(
    tmp_path: Path,
) -> None:
    """Mid-segment resumption sets the segment's learning rate too (segment 2 runs at half)."""
    w, result = _halving_run(None)
    path = tmp_path / "run.safetensors"
    with pytest.raises(TrainingInterrupted):
        _halving_run(path, signal_at=7)
    resumed, resumed_result = _halving_run(path)
    assert resumed_result.resumed_at == 8
    assert torch.equal(resumed, w) and resumed_result.history == result.history


def test_a_damaged_latest_checkpoint_resumes_from_the_one_before(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A truncated latest checkpoint (a full disk, a lost write): the one before it is resumed,
    to the uninterrupted numbers; with both damaged the run fails naming the file and the fix
    instead of starting over silently."""
    reference, ref_result = _noisy_regression(None)
    path = tmp_path / "run.safetensors"
    with killed_after_checkpoints(2):  # the checkpoints of segments 1 and 2
        _noisy_regression(path)
    path.write_bytes(path.read_bytes()[:100])
    with caplog.at_level(logging.WARNING, logger="replicate"):
        resumed, result = _noisy_regression(path)
    assert result.resumed_at == 4, "segment 1's checkpoint"
    assert "the checkpoint before the damaged one" in caplog.text
    assert result.history == ref_result.history
    assert _same_weights(resumed, reference)
    for file in (path, path.with_name(path.name + ".previous")):
        file.write_bytes(b"damaged")
    with pytest.raises(ValueError, match=r"run.safetensors is damaged .* delete .*from the start"):
        _noisy_regression(path)


def test_a_resume_written_by_other_code_is_resumed_naming_the_modules_that_changed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = {"modules": {"replicate.training": "a", "replicate.models.flows": "b"}, "versions": {}}
    new = {"modules": {"replicate.training": "a", "replicate.models.flows": "c"}, "versions": {}}
    path = tmp_path / "run.safetensors"
    with recording_code(old), killed_after_checkpoints(1):
        _noisy_regression(path)
    assert stored_code(path) == old
    with recording_code(new), caplog.at_level(logging.WARNING, logger="replicate"):
        _, result = _noisy_regression(path)
    assert result.resumed_at == 4
    assert "other code wrote (replicate.models.flows (changed))" in caplog.text
    caplog.clear()
    with recording_code(new), caplog.at_level(logging.WARNING, logger="replicate"):
        _noisy_regression(path)  # now written by this code: no warning
    assert "other code" not in caplog.text


def _halving_run(
    path: Path | None, iterations: int = 12, signal_at: int | None = None
) -> tuple[torch.Tensor, FitResult]:
    """Adam on a noisy quadratic whose learning rate halves every second segment of 3; with
    ``signal_at``, SIGTERM arrives during that iteration."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.tensor([2.0, -1.0]))
    optimizer = make_optimizer([w], lr=0.1)

    def step(i: int) -> dict[str, torch.Tensor]:
        if i == signal_at:
            os.kill(os.getpid(), signal.SIGTERM)
        return {"loss": ((w - 0.1 * torch.randn(2)) ** 2).sum()}

    resume = Resume(path, torch.nn.ParameterList([w]), {"lr": 0.1}) if path else None
    result = fit(
        step,
        optimizer,
        iterations,
        segment=3,
        seed=4,
        resume=resume,
        progress_every=0,
        lr_factor=lambda k: 0.5 ** (k // 2),
    )
    return w.detach().clone(), result


def test_lr_schedule_is_adam_with_the_rate_set_by_hand_and_survives_a_resume(
    tmp_path: Path,
) -> None:
    """The schedule's rates reach the updates (checked against torch's Adam with its rate set
    by hand at each segment's start), and a run killed after the first halving resumes to the
    same weights."""
    w, result = _halving_run(None)
    torch.manual_seed(0)
    by_hand = torch.nn.Parameter(torch.tensor([2.0, -1.0]))
    adam = torch.optim.Adam([by_hand], lr=0.1)
    for i in range(12):
        if i % 3 == 0:
            torch.manual_seed(segment_seed(4, i // 3))
            adam.param_groups[0]["lr"] = 0.1 * 0.5 ** (i // 6)
        adam.zero_grad()
        ((by_hand - 0.1 * torch.randn(2)) ** 2).sum().backward()
        adam.step()
    assert torch.equal(w, by_hand.detach())
    path = tmp_path / "run.safetensors"
    with killed_after_checkpoints(3):  # after segment 3: its rate was halved
        _halving_run(path)
    resumed, resumed_result = _halving_run(path)
    assert resumed_result.resumed_at == 9
    assert torch.equal(resumed, w) and resumed_result.history == result.history


def test_checkpoint_of_another_configuration_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "run.safetensors"
    w = torch.nn.Parameter(torch.ones(1))
    optimizer = make_optimizer([w], lr=0.1)
    save_run(
        Resume(path, torch.nn.ParameterList([w]), {"lr": 0.2}),
        optimizer,
        RunState([{"loss": 1.0}] * 4),
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
    # Written at a segment's end, so without the generator state a signal's checkpoint holds.
    save_run(Resume(path, saved, {}), make_optimizer(saved, lr=0.1), RunState([{"loss": 1.0}] * 3))
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


# -- validation: held-out loss, early stopping, best weights ---------------------------------
def _overshooting_run(
    patience: int | None, path: Path | None = None, **kw
) -> tuple[FitResult, torch.nn.Parameter, list]:
    """w descends (w - 3)^2 from 0 in 10 segments of 2 steps; the held-out loss is (w - 1)^2, so
    it improves until w passes 1 and then worsens: the best weights are those nearest 1. With
    ``path``, resumable from there."""
    w = torch.nn.Parameter(torch.zeros(1))
    model = torch.nn.ParameterList([w])
    at_segment_end: list[float] = []
    if path is not None:
        kw["resume"] = Resume(path, model, {})

    def held_out(generator: torch.Generator) -> torch.Tensor:
        at_segment_end.append(float(w))
        return (w - 1.0) ** 2

    result = fit(
        lambda i: {"loss": ((w - 3.0) ** 2).sum()},
        torch.optim.SGD([w], lr=0.05),
        iterations=20,
        segment=2,
        progress_every=0,
        validation=Validation(model, held_out, patience=patience),
        **kw,
    )
    return result, w, at_segment_end


def test_early_stopping_restores_the_best_weights() -> None:
    result, w, seen = _overshooting_run(patience=2)
    best = min(range(len(seen)), key=lambda k: abs(seen[k] - 1.0))
    assert result.stopped_early and len(result.validation) == best + 1 + 2
    assert result.best_segment == best + 1
    assert float(w.detach()) == seen[best], "the model must end with the best segment's weights"
    assert len(result.history) == 2 * len(seen) < 20


def test_a_run_that_stopped_early_is_not_trained_further_when_rerun(tmp_path: Path) -> None:
    """Its outputs unwritten (a failure after the loop), a run that stopped early resumes as
    stopped: no further segment, the same best weights and validation losses."""
    path = tmp_path / "run.safetensors"
    first, w_first, _ = _overshooting_run(patience=2, path=path)
    again, w_again, seen = _overshooting_run(patience=2, path=path)
    assert first.stopped_early and again.stopped_early and not seen, "trained further"
    assert again.resumed_at == len(first.history) and again.iterations == 0
    assert again.validation == first.validation and again.best_segment == first.best_segment
    assert torch.equal(w_again.detach(), w_first.detach())


def test_without_patience_every_segment_runs_and_the_best_weights_come_back() -> None:
    result, w, seen = _overshooting_run(patience=None)
    assert not result.stopped_early and len(result.validation) == 10 and len(result.history) == 20
    best = min(range(10), key=lambda k: abs(seen[k] - 1.0))
    assert float(w.detach()) == seen[best] != seen[-1]


def test_validation_loss_gets_the_same_seeded_noise_and_leaves_training_noise_alone() -> None:
    """The held-out loss draws from its own generator (the same draws every time); training's
    global stream, reseeded per segment, is what it is without validation."""
    w = torch.nn.Parameter(torch.zeros(1))
    draws: list[float] = []

    def held_out(generator: torch.Generator) -> torch.Tensor:
        draws.append(float(torch.randn(1, generator=generator)))
        return (w - 1.0) ** 2

    def run(validation: Validation | None) -> list[float]:
        with torch.no_grad():
            w.zero_()
        result = fit(
            lambda i: {"loss": ((w - torch.randn(1)) ** 2).sum()},
            torch.optim.SGD([w], lr=0.05),
            iterations=8,
            segment=2,
            seed=5,
            progress_every=0,
            validation=validation,
        )
        return [h["loss"] for h in result.history]

    with_validation = run(Validation(torch.nn.ParameterList([w]), held_out, seed=11))
    assert with_validation == run(None)
    assert len(draws) == 4 and len(set(draws)) == 1


def test_a_killed_run_with_validation_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    def run(path: Path) -> tuple[FitResult, float]:
        w = torch.nn.Parameter(torch.zeros(1))
        model = torch.nn.ParameterList([w])
        result = fit(
            lambda i: {"loss": ((w - 3.0) ** 2).sum()},
            make_optimizer([w], lr=0.1),
            iterations=20,
            segment=2,
            progress_every=0,
            resume=Resume(path, model, {}),
            validation=Validation(model, lambda g: (w - 1.0) ** 2, patience=3),
        )
        return result, float(w.detach())

    whole, w_whole = run(tmp_path / "whole.safetensors")
    with killed_after_checkpoints(3):
        run(tmp_path / "killed.safetensors")
    resumed, w_resumed = run(tmp_path / "killed.safetensors")
    assert resumed.resumed_at == 6
    assert resumed.validation == whole.validation and resumed.best_segment == whole.best_segment
    assert resumed.stopped_early == whole.stopped_early and w_resumed == w_whole


def test_fit_conditional_stops_early_and_restores_the_best_flow() -> None:
    """A flow that can memorise 64 pairs overfits: early stopping fires and the model ends with
    the weights of its best held-out NLL (recomputed here with the same seeded generator)."""
    from replicate import ConditionalFlow
    from replicate.training import fit_conditional

    torch.manual_seed(0)
    flow = ConditionalFlow(2, 2, 2, eps=0.01, sigma=0.05, n_blocks=4, hidden=64)
    c = torch.randn(400, 2)
    x = c + 0.3 * torch.randn(400, 2)
    result = fit_conditional(
        flow,
        x[:64],
        c[:64],
        validation_data=(x[64:], c[64:]),
        epochs=300,
        batch_size=64,
        lr=3e-3,
        patience=5,
    )
    assert result.stopped_early and len(result.validation) < 300
    best = min(result.validation)
    assert result.validation[result.best_segment - 1] == best
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        again = float(flow.nll(x[64:], c[64:], generator=generator).mean())
    assert again == pytest.approx(best, rel=1e-6)


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
