"""One training loop for every model: Adam, optional gradient clamp, divergence checks, progress
lines, timing, and checkpoints from which a killed run resumes with the numbers of an
uninterrupted one.

A model supplies ``step(iteration) -> {"loss": total, other terms...}``; the loop back-propagates
``"loss"``, logs every term, and stops with :class:`replicate.runtime.TrainingDiverged` (iteration
and terms in the message) the moment any term is NaN or inf.

Example:
    >>> import torch
    >>> w = torch.nn.Parameter(torch.tensor([3.0]))
    >>> opt = make_optimizer([w], lr=0.1)
    >>> result = fit(lambda i: {"loss": (w**2).sum()}, opt, iterations=50, progress_every=0)
    >>> abs(float(w.detach())) < 1.0
    True
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from replicate.checkpoints import (
    Resume,
    RunState,
    config_hash,
    discard_resumable,
    restore_model,
    restore_run,
    save_checkpoint,
    save_run,
    snapshot,
)
from replicate.files import atomic_path, write_json
from replicate.fingerprints import current_code
from replicate.models.base import as_input
from replicate.runtime import (
    ProgressLog,
    TrainingDiverged,
    TrainingInterrupted,
    check_finite,
    stop_requests,
)
from replicate.training_steps import StepRunner, TrainingSetup, TrainingStep

__all__ = [
    "EpochBatches",
    "FitResult",
    "TrainingFiles",
    "Validation",
    "epoch_permutation",
    "fit",
    "fit_conditional",
    "fit_epochs",
    "fit_to_files",
    "make_optimizer",
    "segment_seed",
]

log = logging.getLogger("replicate")


def make_optimizer(
    parameters: Iterable[torch.nn.Parameter],
    lr: float,
    betas: tuple[float, float] | list[float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    **_ignored: object,
) -> torch.optim.Adam:
    """Adam from an ``optimizer:`` config section (``grad_clip`` is the loop's, so ignored here).

    Example:
        >>> p = torch.nn.Parameter(torch.zeros(1))
        >>> make_optimizer([p], lr=1e-3, betas=[0.8, 0.9], grad_clip=15.0).defaults["betas"]
        (0.8, 0.9)
    """
    return torch.optim.Adam(
        list(parameters), lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay
    )


def segment_seed(seed: int, segment: int) -> int:
    """The seed of one segment (epoch) of a run: a function of ``(seed, segment)`` alone.

    Drawing each segment's randomness from its own seed, not from one stream through the whole
    run, is what lets a resumed run see exactly the numbers an uninterrupted run would.

    Example:
        >>> segment_seed(0, 3) != segment_seed(1, 3) and segment_seed(0, 3) != segment_seed(0, 4)
        True
    """
    return int(seed) * 1_000_003 + int(segment)


def epoch_permutation(n: int, seed: int, epoch: int) -> Tensor:
    """The order of the ``n`` training rows in ``epoch``: a function of ``(seed, epoch)`` alone.

    Example:
        >>> bool((epoch_permutation(5, 0, 3) == epoch_permutation(5, 0, 3)).all())
        True
        >>> bool((epoch_permutation(50, 0, 3) == epoch_permutation(50, 0, 4)).all())
        False
    """
    return torch.randperm(n, generator=torch.Generator().manual_seed(segment_seed(seed, epoch)))


class EpochBatches:
    """The row indices of every iteration of an epoch-based run over ``n`` rows.

    Each epoch visits the rows in the order :func:`epoch_permutation` gives, in batches of
    ``batch_size``; a last, partial batch is kept only when it has at least ``min_last_batch``
    rows (BatchNorm cannot train on a batch of one).

    Example:
        >>> batches = EpochBatches(n=10, batch_size=4, seed=0)
        >>> batches.per_epoch, [len(batches(i)) for i in range(3)]
        (3, [4, 4, 2])
        >>> sorted(torch.cat([batches(i) for i in range(3)]).tolist()) == list(range(10))
        True
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        min_last_batch: int = 1,
        device: torch.device | str = "cpu",
    ) -> None:
        remainder = n % batch_size
        self.per_epoch = n // batch_size + (1 if remainder >= min_last_batch > 0 else 0)
        if self.per_epoch < 1:
            raise ValueError(f"{n} rows give no batch of {batch_size} (at least {min_last_batch})")
        self.n, self.batch_size, self.seed, self.device = n, batch_size, seed, device
        self._epoch, self._order = -1, torch.empty(0, dtype=torch.long)

    def __call__(self, iteration: int) -> Tensor:
        epoch, b = divmod(iteration, self.per_epoch)
        if epoch != self._epoch:
            self._epoch = epoch
            order = epoch_permutation(self.n, self.seed, epoch)
            if torch.device(self.device).type == "cuda":
                # From pinned memory without blocking: the host does not wait for the GPU.
                order = order.pin_memory().to(self.device, non_blocking=True)
            self._order = order
        return self._order[b * self.batch_size : (b + 1) * self.batch_size]


@dataclass(frozen=True)
class Validation:
    """A held-out loss evaluated after every segment (epoch): early stopping and the best weights.

    ``loss(generator)`` returns the held-out loss (lower is better); it gets a fresh
    ``torch.Generator`` seeded with ``seed`` every time, so the model's own noise (the padding of
    :meth:`replicate.ConditionalFlow.nll`) is the same at every evaluation and training's random
    stream is untouched. It runs under ``torch.no_grad()`` with ``model`` in eval mode.

    Args:
        model: the model whose weights are kept at the best evaluation and restored at the end.
        loss: the held-out loss, given the seeded generator.
        patience: stop after this many evaluations without an improvement of more than
            ``min_delta``; None: never stop early (the best weights are still restored).
        seed: the seed of the generator handed to ``loss``.
        min_delta: the improvement that counts as one.
    """

    model: nn.Module
    loss: Callable[[torch.Generator], Tensor | float]
    patience: int | None = None
    seed: int = 0
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be >= 1 (or None), got {self.patience}")
        if self.min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {self.min_delta}")

    def evaluate(self, iteration: int) -> float:
        """The held-out loss now (a non-finite one raises TrainingDiverged)."""
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                value = self.loss(torch.Generator(device=device).manual_seed(self.seed))
        finally:
            self.model.train(was_training)
        return check_finite(iteration, {"validation": value})["validation"]


@dataclass
class FitResult:
    """What a run of :func:`fit` measured: per-iteration loss terms and wall-clock timing.

    ``history`` covers the whole run, including iterations restored from a checkpoint;
    ``seconds`` and ``iterations`` only what this call ran. With a :class:`Validation`,
    ``validation`` holds the held-out loss after each segment, ``best_segment`` the (1-based)
    segment whose weights the model ends with, and ``stopped_early`` whether patience ran out.
    """

    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    iterations: int = 0
    resumed_at: int = 0
    validation: list[float] = field(default_factory=list)
    best_segment: int = 0
    stopped_early: bool = False

    @property
    def seconds_per_iteration(self) -> float:
        return self.seconds / max(self.iterations, 1)

    def segment_means(self, segment: int, term: str = "loss") -> list[float]:
        """Mean of ``term`` over each complete segment of ``segment`` iterations (per epoch).

        Example:
            >>> FitResult(history=[{"loss": v} for v in (1.0, 3.0, 5.0)]).segment_means(2)
            [2.0]
        """
        values = [h[term] for h in self.history]
        whole = len(values) // segment * segment
        return np.asarray(values[:whole]).reshape(-1, segment).mean(1).tolist() if whole else []


def fit(
    step: TrainingStep | Callable[[int], Mapping[str, Tensor]],
    optimizer: torch.optim.Optimizer,
    iterations: int,
    *,
    grad_clip: float | None = None,
    progress_every: int = 50,
    what: str = "iteration",
    segment: int = 0,
    segment_name: str = "epoch",
    seed: int | None = None,
    resume: Resume | None = None,
    result: FitResult | None = None,
    validation: Validation | None = None,
    lr_factor: Callable[[int], float] | None = None,
) -> FitResult:
    """Run ``step`` for ``iterations`` iterations and optimise its ``"loss"``.

    The iteration runs as :class:`replicate.training_steps.StepRunner` runs it: on the CPU every
    iteration's terms are checked before its update; on a GPU the terms are read back once per
    segment and a :class:`~replicate.training_steps.TrainingStep` is replayed as a CUDA graph (a
    divergence then restores the weights of the segment's start, the last checked ones).

    Args:
        step: a :class:`~replicate.training_steps.TrainingStep`, or a callable given the iteration
            index (run eagerly); either returns the loss terms, ``"loss"`` being the total.
        optimizer: steps every parameter that ``"loss"`` depends on.
        iterations: total number of iterations of the whole run.
        grad_clip: clamp each gradient element to +-grad_clip (the INN reference code's 15).
        progress_every: log a progress line every this many iterations; 0 for silence.
        what: the name of an iteration in the progress lines.
        segment: iterations per segment (an epoch, or a block of iterations); 0 for one segment.
            The mean loss of every segment is logged, and ``resume`` is saved after each.
        segment_name: the name of a segment in the log.
        seed: if given, the global generator is reseeded with :func:`segment_seed` at the start
            of every segment, so that the model's own noise does not depend on where a run
            resumed.
        resume: the run's resume checkpoint, or None for a run that starts over when killed.
            Saved after every segment and once more when the run ends (so a failure before
            the caller's outputs are written loses no training: the caller deletes it with
            :func:`replicate.checkpoints.discard_resumable` after writing them), resumed from
            at the start. While it runs, SIGTERM or SIGINT saves it at the end of the current
            iteration (on a GPU: of the current segment) and raises
            :class:`replicate.runtime.TrainingInterrupted`; the rerun resumes there with the
            numbers of an uninterrupted run.
        result: filled in place and returned, so that a caller catching
            :class:`replicate.runtime.TrainingDiverged` still sees the iterations done.
        validation: a held-out loss evaluated after every segment, with early stopping and the
            best weights restored at the end (:class:`Validation`); its state is part of the
            resume checkpoint, so a resumed run stops where an uninterrupted one would.
        lr_factor: during segment ``k`` (from 0) every group's learning rate is its initial one
            times ``lr_factor(k)``, so a resumed run follows the schedule too; None: constant.

    Example:
        >>> import tempfile, pathlib
        >>> w = torch.nn.Parameter(torch.tensor([3.0]))
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "run.safetensors"
        >>> ckpt = Resume(path, torch.nn.ParameterList([w]), metadata={})
        >>> r = fit(lambda i: {"loss": (w**2).sum()}, make_optimizer([w], lr=0.1), 20,
        ...         segment=5, seed=0, resume=ckpt, progress_every=0)
        >>> len(r.history), len(r.segment_means(5)), path.exists()
        (20, 4, True)
        >>> fit(lambda i: {"loss": (w**2).sum()}, make_optimizer([w], lr=0.1), 20, segment=5,
        ...     seed=0, resume=ckpt, progress_every=0).resumed_at  # nothing left to train
        20
    """
    result = result if result is not None else FitResult()
    segment = segment or iterations
    state = RunState()
    if resume is not None:
        state = restore_run(resume, optimizer, segment, iterations, validation is not None)
        result.history[:], result.validation[:] = state.history, state.validation
        if result.history:
            log.info(
                "resuming after %s %d (iteration %d/%d) from %s%s",
                segment_name,
                len(result.history) // segment,
                len(result.history),
                iterations,
                resume.path,
                " (stopped early there)" if state.stopped_early else "",
            )
    best = state.best
    result.stopped_early = state.stopped_early
    if result.validation:
        result.best_segment = int(np.argmin(result.validation)) + 1
    start = result.resumed_at = len(result.history)
    runner = StepRunner(step, optimizer, grad_clip)
    if state.rng is not None:  # written at a signal, between two segment starts
        torch.set_rng_state(state.rng)
        if lr_factor is not None:
            runner.scale_lr(lr_factor(start // segment))
    progress = ProgressLog(iterations, progress_every, what, start) if progress_every else None
    n_segments = -(-iterations // segment)
    end = start if state.stopped_early else iterations
    begin = time.perf_counter()
    with stop_requests() if resume is not None else contextlib.nullcontext() as stop:
        try:
            for i in range(start, end):
                if seed is not None and i % segment == 0:
                    torch.manual_seed(segment_seed(seed, i // segment))
                if lr_factor is not None and i % segment == 0:
                    runner.scale_lr(lr_factor(i // segment))
                runner.run(i)
                end_of_segment = (i + 1) % segment == 0 or i + 1 == iterations
                if runner.mode != "eager" and not end_of_segment:
                    continue  # a replayed graph's terms are read back per segment
                for j, values, queued in runner.flush():
                    result.history.append(values)
                    result.iterations = j + 1 - start
                    if progress is not None:
                        progress.update(j + 1, values, now=queued)
                signalled = stop is not None and stop.signal_number is not None
                if signalled and not end_of_segment:
                    # Eager on the CPU: the generator's state carries the run on from here.
                    here = (result.history, result.validation, best, False, torch.get_rng_state())
                    save_run(resume, optimizer, RunState(*here))
                    raise TrainingInterrupted(stop.signal_number, i + 1, resume.path)
                if not end_of_segment:
                    continue
                k = -(-(i + 1) // segment)
                if n_segments > 1 and (i + 1) % segment == 0:
                    mean = float(np.mean([h["loss"] for h in result.history[-segment:]]))
                    log.info("%s %d/%d mean loss %.5g", segment_name, k, n_segments, mean)
                if validation is not None and _validate(
                    validation, result, best, k, i, segment_name
                ):
                    break
                if resume is not None and i + 1 < iterations:
                    save_run(resume, optimizer, RunState(result.history, result.validation, best))
                    if signalled:
                        raise TrainingInterrupted(stop.signal_number, i + 1, resume.path)
        finally:  # also when a divergence stops the run: the caller reports its cost
            result.seconds = time.perf_counter() - begin
        if resume is not None and result.history and start < end:
            # The finished run, kept until the caller has written what it promised: a failure
            # between here and its last output resumes with nothing left to train.
            finished = RunState(result.history, result.validation, best, result.stopped_early)
            save_run(resume, optimizer, finished)
    if validation is not None and best:
        restore_model(validation.model, best)
        log.info(
            "restored the weights of %s %d (validation loss %.5g)",
            segment_name,
            result.best_segment,
            result.validation[result.best_segment - 1],
        )
    return result


def fit_epochs(
    setup: TrainingSetup,
    batches: EpochBatches,
    epochs: int,
    *,
    seed: int,
    name: str,
    checkpoint_path: str | os.PathLike | None = None,
    metadata: Mapping[str, Any] | None = None,
    progress_every: int = 100,
) -> FitResult:
    """:func:`fit` of an epoch-based trainer: ``epochs`` passes over ``batches``, one segment per
    epoch (its noise from ``(seed, epoch)``), progress lines named ``name``, and, with
    ``checkpoint_path``, a resume checkpoint of the configuration ``metadata`` after every epoch
    (resumed from, with the numbers of an uninterrupted run, when a killed job is rerun).

    Example:
        >>> w = torch.nn.Parameter(torch.zeros(1))
        >>> batches = EpochBatches(8, 4, seed=0)
        >>> step = TrainingStep(lambda i: {"rows": batches(i)},
        ...                     lambda rows: {"loss": ((w - rows.float().mean()) ** 2).sum()})
        >>> setup = TrainingSetup(w, make_optimizer([w], lr=0.1), step)
        >>> fit_epochs(setup, batches, 3, seed=0, name="toy", progress_every=0).iterations
        6
    """
    return fit(
        setup.step,
        setup.optimizer,
        epochs * batches.per_epoch,
        grad_clip=setup.grad_clip,
        progress_every=progress_every,
        what=f"{name} iteration",
        segment=batches.per_epoch,
        segment_name=f"{name} epoch",
        seed=seed,
        resume=Resume(checkpoint_path, setup.model, metadata or {}) if checkpoint_path else None,
        lr_factor=setup.lr_factor,
    )


def _validate(
    validation: Validation,
    result: FitResult,
    best: dict[str, Tensor],
    k: int,
    iteration: int,
    segment_name: str,
) -> bool:
    """Evaluate the held-out loss after segment ``k``; keep the best weights in ``best``; return
    whether patience has run out."""
    value = validation.evaluate(iteration)
    result.validation.append(value)
    previous = min(result.validation[:-1], default=float("inf"))
    if value < previous - validation.min_delta or not best:
        result.best_segment = k
        best.clear()
        best.update(snapshot(validation.model))
    log.info(
        "%s %d validation loss %.5g (best %.5g, %s %d)",
        segment_name,
        k,
        value,
        result.validation[result.best_segment - 1],
        segment_name,
        result.best_segment,
    )
    if validation.patience is not None and k - result.best_segment >= validation.patience:
        result.stopped_early = True
        log.info(
            "stopping early after %s %d: no improvement in %d %ss",
            segment_name,
            k,
            validation.patience,
            segment_name,
        )
        return True
    return False


def fit_conditional(
    model: nn.Module,
    x: Tensor | np.ndarray,
    condition: Tensor | np.ndarray,
    *,
    validation_data: tuple[Tensor | np.ndarray, Tensor | np.ndarray] | None = None,
    epochs: int = 100,
    batch_size: int = 256,
    lr: float = 1e-3,
    patience: int | None = 10,
    seed: int = 0,
    grad_clip: float | None = None,
    resume_path: str | os.PathLike | None = None,
    progress_every: int = 0,
) -> FitResult:
    """Train a conditional model (ours or the cINN: anything with ``nll(x, c, generator)`` and
    ``loss_terms(x, c)``) on pairs ``(x, condition)`` by its mean NLL, in epochs of shuffled
    mini-batches.

    With ``validation_data`` the held-out mean NLL is evaluated after every epoch with its own
    seeded generator, training stops after ``patience`` epochs without improvement (None: runs
    every epoch), and the model ends with the weights of its best epoch. ``resume_path`` names a
    checkpoint from which a killed run resumes with the numbers of an uninterrupted one. Same
    ``seed``, same numbers (on the CPU). Numpy arrays are converted to the model's dtype.

    Example:
        >>> from replicate import ConditionalFlow
        >>> flow = ConditionalFlow(1, 1, 1, eps=0.5, sigma=0.0, n_blocks=2, hidden=16)
        >>> c = torch.randn(512, 1); x = c + 0.5 * torch.randn(512, 1)
        >>> r = fit_conditional(flow, x[:400], c[:400], validation_data=(x[400:], c[400:]),
        ...                     epochs=5, batch_size=64, lr=1e-2)
        >>> len(r.validation), 1 <= r.best_segment <= 5
        (5, True)
    """

    x = as_input(model, x, "x", model.data_dim)
    condition = as_input(model, condition, "condition", model.condition_dim)
    if x.shape[0] != condition.shape[0]:
        raise ValueError(f"x has {x.shape[0]} rows but condition has {condition.shape[0]}")
    batches = EpochBatches(x.shape[0], batch_size, seed, device=x.device)
    validation = None
    if validation_data is not None:
        x_val = as_input(model, validation_data[0], "validation x", model.data_dim)
        c_val = as_input(model, validation_data[1], "validation condition", model.condition_dim)
        validation = Validation(
            model,
            lambda generator: model.nll(x_val, c_val, generator=generator).mean(),
            patience=patience,
            seed=seed,
        )

    def inputs(i: int) -> dict[str, Tensor]:
        rows = batches(i)
        return {"x": x[rows], "condition": condition[rows], **model.schedule(i)}

    settings = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed}
    result = fit(
        TrainingStep(inputs, model.loss_terms),
        make_optimizer(model.parameters(), lr=lr),
        epochs * batches.per_epoch,
        grad_clip=grad_clip,
        progress_every=progress_every,
        segment=batches.per_epoch,
        seed=seed,
        resume=None if resume_path is None else Resume(resume_path, model, settings),
        validation=validation,
    )
    # The trained model is the caller's now; a finished state left behind would be resumed by
    # the next call with the same path, whatever data it is given.
    discard_resumable(resume_path)
    return result


@dataclass(frozen=True)
class TrainingFiles:
    """What a pipeline's training rule writes: the trained weights (``checkpoint``, safetensors),
    the status JSON (``status``), optionally the per-iteration loss terms (``history``, CSV), and
    where its resume checkpoint lives (``resume``; not an output of the rule, so that Snakemake
    does not delete it when a killed job is rerun).

    Example:
        >>> TrainingFiles("m.safetensors", "m.json").history is None
        True
    """

    checkpoint: str | os.PathLike
    status: str | os.PathLike
    history: str | os.PathLike | None = None
    resume: str | os.PathLike | None = None

    @classmethod
    def of_rule(cls, rule: Any) -> TrainingFiles:
        """The files of a training rule (Snakemake's ``snakemake`` object in its script) that
        names its outputs ``model``, ``status`` and ``history`` and its resume checkpoint
        ``params.resume``, as ``train_gmm`` and ``train_kinematics`` do.

        Example:
            >>> from types import SimpleNamespace as NS
            >>> rule = NS(output=NS(model="m.safetensors", status="m.json", history="m.csv"),
            ...           params=NS(resume="m_last.safetensors"))
            >>> TrainingFiles.of_rule(rule).resume
            'm_last.safetensors'
        """
        return cls(rule.output.model, rule.output.status, rule.output.history, rule.params.resume)


def fit_to_files(
    step: TrainingStep | Callable[[int], Mapping[str, Tensor]],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    iterations: int,
    files: TrainingFiles,
    *,
    metadata: Mapping[str, Any],
    describe: Mapping[str, Any],
    segment: int,
    seed: int,
    grad_clip: float | None = None,
    progress_every: int = 25,
) -> dict[str, Any]:
    """:func:`fit` for a pipeline's training rule: run it, then write what the rule promises.

    Resumable from ``files.resume`` (saved every ``segment`` iterations), with the global
    generator reseeded from ``(seed, segment)``. A divergence (NaN/inf) does not raise: the
    status says ``diverged: true`` with the iteration and the terms, and the last finite weights
    are still saved, so the workflow goes on and the evaluation reports the run as diverged.

    Writes the checkpoint (safetensors, with ``metadata``, which a later load must match), the
    status JSON (``describe``'s entries first; returned as a dict) and, with ``files.history``,
    the per-iteration loss terms as CSV (:class:`TrainingFiles`). Every file is written
    atomically.
    """
    result = FitResult()
    diverged, message = False, "finished"
    name = describe.get("model", "model")
    try:
        fit(
            step,
            optimizer,
            iterations,
            grad_clip=grad_clip,
            progress_every=progress_every,
            segment=segment,
            segment_name="iterations block",
            seed=seed,
            resume=Resume(files.resume, model, metadata) if files.resume else None,
            result=result,
        )
    except TrainingDiverged as exc:
        diverged, message = True, str(exc)
        log.error("%s: %s", name, message)
    history = [{"iteration": i, **terms} for i, terms in enumerate(result.history)]
    final = {k: v for k, v in history[-1].items() if k != "iteration"} if history else {}
    status = {
        **describe,
        "diverged": diverged,
        "message": message,
        "iterations_done": len(history),
        "iterations": iterations,
        "seconds": result.seconds,
        "seconds_per_iteration": result.seconds_per_iteration,
        "resumed_at_iteration": result.resumed_at,
        "final_terms": final,
        "config_hash": config_hash(metadata),
        "code": current_code(),
        "torch_threads": torch.get_num_threads(),
    }
    save_checkpoint(files.checkpoint, model.state_dict(), metadata)
    if files.history is not None:
        with atomic_path(files.history) as tmp:
            pd.DataFrame(history).to_csv(tmp, index=False)
    write_json(files.status, status)
    discard_resumable(files.resume)  # only now: every output is written
    log.info(
        "%s: %s after %d iterations, %.3f s/iteration",
        name,
        "DIVERGED" if diverged else "done",
        len(history),
        status["seconds_per_iteration"],
    )
    return status
