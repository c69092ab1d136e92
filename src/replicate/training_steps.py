"""One training iteration, run the way the device needs: checked eagerly on the CPU, queued without
host synchronisation on a GPU, and there replayed as one CUDA graph.

A :class:`TrainingStep` splits an iteration where a CUDA graph needs it split: ``inputs(i)`` makes
the iteration's inputs on the host side (a batch's rows, fresh simulator draws, a schedule's value
such as the INN's ramp), and ``loss_terms(**inputs)`` computes the loss terms from them with tensor
operations alone. :class:`StepRunner` then runs forward, backward, the gradient clamp and the
optimiser update in one of three modes (:func:`execution_mode`):

* ``eager`` (the CPU): every iteration's terms are read back and checked *before* its update, as
  the trainer always did; a host read costs nothing on the CPU, and the numbers are bit for bit
  those of a plain loop.
* ``deferred`` (a GPU, a step that cannot be captured): the same operations, but the terms stay on
  the device in a buffer read back once per :meth:`StepRunner.flush` (once per segment).
* ``graph`` (a GPU): the first iterations run eagerly on a side stream (allocator and autograd
  warm-up, as PyTorch's whole-network capture recipe asks), then the whole iteration, the
  ``capturable`` Adam update included, is captured once as a CUDA graph and replayed; each
  iteration's inputs are copied into the graph's static input tensors first. Random draws come
  from the default CUDA generator, which the graph registers, so reseeding it between replays
  (the trainer does at every segment) is honoured. A batch of another shape (an epoch's last,
  partial batch) runs eagerly.

In the two device modes a non-finite term is found when the buffer is read: the first such
iteration and its terms are reported exactly (:class:`replicate.runtime.TrainingDiverged`), and
the weights and optimiser state go back to those saved at the start of the unread block (the last
checked, finite ones).

Example:
    >>> w = torch.nn.Parameter(torch.tensor([3.0]))
    >>> step = TrainingStep(lambda i: {"target": torch.tensor([1.0])},
    ...                     lambda target: {"loss": ((w - target) ** 2).sum()})
    >>> runner = StepRunner(step, torch.optim.Adam([w], lr=0.1), grad_clip=None)
    >>> runner.mode
    'eager'
    >>> for i in range(3):
    ...     runner.run(i)
    >>> [round(values["loss"], 3) for _, values, _ in runner.flush()]
    [4.0, 3.61, 3.241]
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from replicate.runtime import TrainingDiverged, check_finite

__all__ = ["EXECUTION_ENV", "StepRunner", "TrainingSetup", "TrainingStep", "execution_mode"]

log = logging.getLogger("replicate")

# Overrides the mode chosen on a GPU (eager | deferred | graph); the benchmark compares them.
EXECUTION_ENV = "REPLICATE_EXECUTION"
MODES = ("eager", "deferred", "graph")
# Eager iterations before the capture, on a side stream (PyTorch's recipe uses a few).
WARMUP_ITERATIONS = 3


@dataclass(frozen=True)
class TrainingStep:
    """One training iteration: ``inputs(i)`` (host side, tensors on any device; a CPU tensor is
    moved to the model's device asynchronously from pinned memory) and ``loss_terms(**inputs)``
    (``{"loss": total, other terms...}``, tensor operations only: no ``float()``, no ``.item()``,
    no data-dependent Python branch).
    """

    inputs: Callable[[int], Mapping[str, Tensor]]
    loss_terms: Callable[..., Mapping[str, Tensor]]


@dataclass(frozen=True)
class TrainingSetup:
    """What a trainer runs, built once: the model, its optimiser, the step, the gradient clamp
    and the learning rate's schedule (``benchmarks/gpu_speed.py`` times exactly what the
    pipeline trains). ``lr_factor(k)``: the factor on every parameter group's initial learning
    rate during segment (epoch) ``k``, counted from 0; None: constant."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    step: TrainingStep
    grad_clip: float | None = None
    lr_factor: Callable[[int], float] | None = None

    def runner(self, mode: str | None = None) -> StepRunner:
        """A :class:`StepRunner` of this step (``mode`` None: the device's own)."""
        return StepRunner(self.step, self.optimizer, self.grad_clip, mode)


def execution_mode(device: torch.device, graphable: bool = True) -> str:
    """How :class:`StepRunner` runs on ``device``: ``eager`` on the CPU; on CUDA ``graph`` (or
    ``deferred`` for a step that cannot be captured), unless :data:`EXECUTION_ENV` says otherwise
    (on the CPU it can only ask for ``deferred``).

    Example:
        >>> execution_mode(torch.device("cpu"))
        'eager'
    """
    wanted = os.environ.get(EXECUTION_ENV, "").strip()
    if wanted and wanted not in MODES:
        raise ValueError(f"{EXECUTION_ENV}={wanted!r}: use one of {', '.join(MODES)}")
    if device.type != "cuda":
        # Nothing to capture on the CPU; `deferred` is honoured (it checks the same numbers).
        return "deferred" if wanted == "deferred" else "eager"
    wanted = wanted or "graph"
    return "deferred" if wanted == "graph" and not graphable else wanted


def _stacked(terms: Mapping[str, Tensor], names: tuple[str, ...]) -> Tensor:
    """The terms as one float64 vector (float32 -> float64 is exact: the history's floats)."""
    return torch.stack([terms[n].detach().reshape(()).to(torch.float64) for n in names])


class StepRunner:
    """Runs a :class:`TrainingStep` (or a plain ``step(i) -> terms``, eagerly) with ``optimizer``
    and an optional gradient clamp, keeping every iteration's terms for :meth:`flush`.

    Args:
        step: the iteration.
        optimizer: steps every parameter the loss depends on; on CUDA in ``graph`` mode an Adam's
            ``capturable`` flag is set (its step counters move to the device).
        grad_clip: clamp each gradient element to +-grad_clip.
        mode: ``eager``, ``deferred`` or ``graph``; None: :func:`execution_mode` for the device
            of the optimiser's parameters.
    """

    def __init__(
        self,
        step: TrainingStep | Callable[[int], Mapping[str, Tensor]],
        optimizer: torch.optim.Optimizer,
        grad_clip: float | None,
        mode: str | None = None,
    ) -> None:
        self.step, self.optimizer, self.grad_clip = step, optimizer, grad_clip
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.device = self.params[0].device
        graphable = isinstance(step, TrainingStep) and all(
            "capturable" in group for group in optimizer.param_groups
        )
        self.mode = mode or execution_mode(self.device, graphable)
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if self.mode == "graph" and not graphable:
            raise ValueError("graph mode needs a TrainingStep and an optimiser with `capturable`")
        self.names: tuple[str, ...] | None = None
        self._initial_lrs = [float(group["lr"]) for group in optimizer.param_groups]
        self._pending: list[tuple[int, Tensor | dict[str, float], float]] = []
        self._snapshot: tuple[list[Tensor], dict[str, Any]] | None = None
        self._graph: torch.cuda.CUDAGraph | None = None
        self._static_inputs: dict[str, Tensor] = {}
        self._static_terms: Tensor | None = None
        self._warmed_up = 0
        if self.mode == "graph":
            self._make_capturable()

    # -- one iteration --------------------------------------------------------------------------
    def run(self, iteration: int) -> None:
        """Run iteration ``iteration``. In ``eager`` mode a non-finite term raises
        :class:`~replicate.runtime.TrainingDiverged` here, before the update."""
        if self.mode != "eager" and self._snapshot is None:
            self._snapshot = self._state()
        if self.mode == "graph":
            terms = self._run_graph(iteration)
        else:
            terms = self._run_eager(self._terms(iteration), check=self.mode == "eager", i=iteration)
        self._pending.append((iteration, terms, time.perf_counter()))

    def _terms(self, iteration: int) -> Mapping[str, Tensor]:
        if not isinstance(self.step, TrainingStep):
            return self.step(iteration)
        return self.step.loss_terms(**self._inputs(iteration))

    def _inputs(self, iteration: int) -> dict[str, Tensor]:
        assert isinstance(self.step, TrainingStep)
        inputs = self.step.inputs(iteration)
        if self.device.type == "cpu":
            return dict(inputs)
        # From pinned memory without blocking: a copy from pageable memory would wait for every
        # kernel queued so far, the host synchronisation this runner exists to avoid.
        return {
            k: v.pin_memory().to(self.device, non_blocking=True) if v.device.type == "cpu" else v
            for k, v in inputs.items()
        }

    def _update(self, loss: Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_value_(self.params, self.grad_clip)
        self.optimizer.step()

    def _run_eager(
        self, terms: Mapping[str, Tensor], check: bool, i: int
    ) -> Tensor | dict[str, float]:
        self.names = self.names or tuple(terms)
        record: Tensor | dict[str, float] = (
            check_finite(i, terms) if check else _stacked(terms, self.names)
        )
        self._update(terms["loss"])
        return record

    def scale_lr(self, factor: float) -> None:
        """Set every parameter group's learning rate to its initial one times ``factor``. A
        captured step holds the rates it was captured with, so a change drops it: the next
        iteration captures the step anew (once per change: a schedule's few steps).

        Example:
            >>> w = torch.nn.Parameter(torch.zeros(1))
            >>> adam = torch.optim.Adam([w], lr=0.1)
            >>> runner = StepRunner(lambda i: {"loss": w.sum()}, adam, grad_clip=None)
            >>> runner.scale_lr(0.5)
            >>> runner.optimizer.param_groups[0]["lr"]
            0.05
        """
        rates = [lr * factor for lr in self._initial_lrs]
        if rates == [group["lr"] for group in self.optimizer.param_groups]:
            return
        for group, rate in zip(self.optimizer.param_groups, rates, strict=True):
            group["lr"] = rate
        self._graph = None

    # -- CUDA graph -----------------------------------------------------------------------------
    def _make_capturable(self) -> None:
        for group in self.optimizer.param_groups:
            group["capturable"] = True
        for state in self.optimizer.state.values():  # restored from a checkpoint: on the host
            if "step" in state:
                state["step"] = state["step"].to(self.device, torch.float32)

    def _run_graph(self, iteration: int) -> Tensor:
        inputs = self._inputs(iteration)
        if self._graph is None and self._warmed_up < WARMUP_ITERATIONS:
            self._warmed_up += 1
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                record = self._run_eager(self.step.loss_terms(**inputs), False, iteration)
            torch.cuda.current_stream(self.device).wait_stream(side)
            return record
        if self._graph is None:
            try:
                self._capture(inputs)
            except RuntimeError as exc:  # an operation CUDA graphs do not allow: run it eagerly
                log.warning("CUDA graph capture failed, the step runs eagerly: %s", exc)
                self.mode = "deferred"
                return self._run_eager(self.step.loss_terms(**inputs), False, iteration)
        shapes = {k: v.shape for k, v in self._static_inputs.items()}
        if {k: v.shape for k, v in inputs.items()} != shapes:
            return self._run_eager(self.step.loss_terms(**inputs), False, iteration)
        for name, value in inputs.items():
            self._static_inputs[name].copy_(value, non_blocking=True)
        assert self._graph is not None and self._static_terms is not None
        self._graph.replay()
        return self._static_terms.clone()

    def _capture(self, inputs: Mapping[str, Tensor]) -> None:
        assert isinstance(self.step, TrainingStep)
        self._static_inputs = {k: v.clone() for k, v in inputs.items()}
        self.optimizer.zero_grad(set_to_none=True)  # gradients then live in the graph's pool
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            terms = self.step.loss_terms(**self._static_inputs)
            self.names = self.names or tuple(terms)
            self._update(terms["loss"])
            self._static_terms = _stacked(terms, self.names)
        self._graph = graph

    def device_seconds_per_step(self, replays: int = 50) -> float:
        """GPU time of one captured step, from ``replays`` replays back to back (CUDA events):
        what an iteration costs the GPU when it never waits for the host. ``graph`` mode only,
        after the capture; the replays train on (the static inputs as they are)."""
        if self._graph is None:
            raise RuntimeError("no captured step: run a few iterations in graph mode first")
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(replays):
            self._graph.replay()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / replays

    # -- reading back -----------------------------------------------------------------------------
    def flush(self) -> Iterator[tuple[int, dict[str, float], float]]:
        """Every iteration run since the last flush as ``(iteration, terms as floats, when it was
        queued on the host clock)``, after one read-back from the device. A non-finite term raises
        :class:`~replicate.runtime.TrainingDiverged` after the iterations before it are yielded,
        with the weights and optimiser state restored to the start of this block."""
        pending, self._pending = self._pending, []
        snapshot, self._snapshot = self._snapshot, None
        if not pending:
            return
        assert self.names is not None
        device_rows = [r for _, r, _ in pending if isinstance(r, Tensor)]
        host = iter(torch.stack(device_rows).cpu().tolist()) if device_rows else iter(())
        for iteration, record, queued in pending:
            if isinstance(record, dict):
                yield iteration, record, queued
                continue
            values = dict(zip(self.names, next(host), strict=True))
            try:
                check_finite(iteration, values)
            except TrainingDiverged:
                if snapshot is not None:
                    self._restore(snapshot)
                raise
            yield iteration, values, queued

    def _state(self) -> tuple[list[Tensor], dict[str, Any]]:
        return [p.detach().clone() for p in self.params], copy.deepcopy(self.optimizer.state_dict())

    def _restore(self, snapshot: tuple[list[Tensor], dict[str, Any]]) -> None:
        params, optimizer_state = snapshot
        with torch.no_grad():
            for p, saved in zip(self.params, params, strict=True):
                p.copy_(saved)
        self.optimizer.load_state_dict(optimizer_state)
