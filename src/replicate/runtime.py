"""The stage runner and what every process of the pipeline shares: the rule's log, its threads
and device, seeds, divergence checks and progress lines. Files are written by
:mod:`replicate.files`, checkpoints by :mod:`replicate.checkpoints`.

Example:
    >>> resolve_device("cpu")
    device(type='cpu')
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from replicate.config import stage_device
from replicate.fingerprints import code_digest, recording_code

if TYPE_CHECKING:  # pandas only for the annotation: runtime is imported by every rule
    pass

__all__ = [
    "ProgressLog",
    "StopRequest",
    "TrainingDiverged",
    "TrainingInterrupted",
    "check_finite",
    "resolve_device",
    "run_stage",
    "seed_everything",
    "setup_logging",
    "stop_requests",
    "use_threads",
]

log = logging.getLogger("replicate")
T = TypeVar("T")


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; carries the iteration and the loss terms."""

    def __init__(self, iteration: int, terms: Mapping[str, float]) -> None:
        self.iteration = iteration
        self.terms = dict(terms)
        shown = ", ".join(f"{k}={v:.4g}" for k, v in self.terms.items())
        super().__init__(
            f"training diverged at iteration {iteration}: non-finite loss ({shown}). "
            "Lower the learning rate or check the input data."
        )


class TrainingInterrupted(RuntimeError):
    """Training stopped at a signal (SIGTERM: a cluster's preemption or time limit; SIGINT:
    Ctrl-C) after writing its resume checkpoint: rerunning the job resumes from it."""

    def __init__(self, signal_number: int, iteration: int, path: str | os.PathLike) -> None:
        self.signal_number, self.iteration = signal_number, iteration
        super().__init__(
            f"stopped by {signal.Signals(signal_number).name} after iteration {iteration}; "
            f"its state is saved in {path}: rerun the job to resume from there"
        )


class StopRequest:
    """Whether a SIGTERM or SIGINT arrived (``signal_number``, else None): set by the handler of
    :func:`stop_requests`, read by the training loop between two iterations."""

    signal_number: int | None = None


@contextlib.contextmanager
def stop_requests() -> Iterator[StopRequest]:
    """Within the block, SIGTERM and SIGINT do not kill the process: they set the request, for
    the training loop to save its state and stop at the next iteration's end. The handlers that
    were there come back after the block. Outside the main thread (where Python delivers no
    signal) the request is never set.

    Example:
        >>> with stop_requests() as request:
        ...     signal.raise_signal(signal.SIGTERM)
        ...     request.signal_number == signal.SIGTERM
        True
    """
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signal_number: int, _frame: object) -> None:
        log.warning(
            "received %s: saving the training state at the end of this iteration",
            signal.Signals(signal_number).name,
        )
        request.signal_number = signal_number

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield request
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def setup_logging(log_file: str | os.PathLike | None = None) -> None:
    """Send the ``replicate`` logger to stderr and, for a Snakemake rule, to its ``log:`` file."""
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        handlers=handlers,
        force=True,
    )


def run_stage(snakemake: Any, stage: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run one rule's stage: the one entry point of every ``workflow/scripts/*.py``.

    Whatever the stage, the rule's ``log:`` file gets this process's log (and the traceback if it
    fails), PyTorch's thread pool is sized to the rule's ``threads`` (a job booked for one core
    must not take every core), and a stage that takes ``threads`` or ``device`` gets the rule's
    threads and the rule's device (``stage_devices`` or ``device`` of the config) unless the
    script passes them, and the rule's code fingerprint (``params.code``,
    :func:`replicate.fingerprints.code_fingerprint`) is what the checkpoints and status files
    written meanwhile record. Seeds come in as the stage's own arguments (wildcards, params):
    each stage seeds the streams it draws from.

    Example:
        >>> import types, tempfile, pathlib
        >>> log = pathlib.Path(tempfile.mkdtemp()) / "rule.log"
        >>> job = types.SimpleNamespace(log=[str(log)], threads=1, rule="demo", wildcards={},
        ...                             config={"device": "cpu"})
        >>> run_stage(job, lambda x, threads, device: (x, threads, device), 3)
        (3, 1, 'cpu')
        >>> "rule demo" in log.read_text()
        True
    """
    if not getattr(snakemake, "log", None):
        raise ValueError(f"rule {snakemake.rule} has no log: file; every rule must have one")
    setup_logging(snakemake.log[0])
    threads = int(snakemake.threads)
    use_threads(threads)
    signature = inspect.signature(stage)
    given = signature.bind_partial(*args, **kwargs).arguments
    if "threads" in signature.parameters and "threads" not in given:
        kwargs["threads"] = threads
    if "device" in signature.parameters and "device" not in given:
        kwargs["device"] = stage_device({"device": "auto", **snakemake.config}, snakemake.rule)
    device = kwargs.get("device", given.get("device"))
    wildcards = ", ".join(f"{k}={v}" for k, v in dict(snakemake.wildcards).items())
    code = getattr(getattr(snakemake, "params", None), "code", None)
    log.info(
        "rule %s%s: %d thread(s)%s%s",
        snakemake.rule,
        f" ({wildcards})" if wildcards else "",
        threads,
        f", device {device}" if device is not None else "",
        f", code {code_digest(code)} ({len(code['modules'])} modules)" if code else "",
    )
    try:
        with recording_code(code):
            return stage(*args, **kwargs)
    except Exception:
        log.exception("rule %s failed", snakemake.rule)
        raise


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else the CPU; ``"cuda"`` without a GPU is an error; a
    ``torch.device`` is checked the same way and returned.

    Example:
        >>> resolve_device("cpu"), resolve_device(torch.device("cpu"))
        (device(type='cpu'), device(type='cpu'))
    """
    name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            f"config asks for device '{name}' but no CUDA GPU is visible to PyTorch "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}). "
            "Set `device: auto` or `device: cpu` in the config."
        )
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise ValueError(f"unknown device '{name}': use auto, cpu or cuda[:N]")
    return torch.device(name)


def use_threads(threads: int | None) -> None:
    """Size PyTorch's intra-op pool to the rule's ``threads`` (else it takes every core, and two
    jobs sharing a machine would each claim all of it); ``None`` or 0 keeps PyTorch's choice.

    Example:
        >>> use_threads(1); torch.get_num_threads()
        1
    """
    if threads:
        torch.set_num_threads(int(threads))


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and PyTorch; returns a CPU generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - seeds third-party code that uses the global state
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def check_finite(iteration: int, terms: Mapping[str, Tensor | float]) -> dict[str, float]:
    """Return the loss terms as floats; raise :class:`TrainingDiverged` if any is NaN or inf."""
    values = {k: float(v.detach() if isinstance(v, Tensor) else v) for k, v in terms.items()}
    if not all(np.isfinite(v) for v in values.values()):
        raise TrainingDiverged(iteration, values)
    return values


class ProgressLog:
    """Periodic progress lines (step, loss terms, it/s) for rule logs; no carriage returns.

    Example:
        >>> p = ProgressLog(total=10, every=5, what="iteration")
        >>> p.update(5, {"loss": 1.0})  # logs "iteration 5/10 (50%) loss=1 ..."
    """

    def __init__(
        self, total: int, every: int = 50, what: str = "iteration", start: int = 0
    ) -> None:
        self.total, self.every, self.what = total, max(1, every), what
        self.last = time.perf_counter()
        self.last_step = start  # a resumed run's rate counts from where it resumed

    def update(self, step: int, terms: Mapping[str, float], now: float | None = None) -> None:
        """Log ``step``'s terms if it is due; ``now``: when it ran (default: now), for the rate
        of a line written after a block of iterations is read back from a GPU."""
        if step % self.every and step != self.total:
            return
        now = time.perf_counter() if now is None else now
        rate = (step - self.last_step) / max(now - self.last, 1e-9)
        self.last, self.last_step = now, step
        shown = " ".join(f"{k}={v:.4g}" for k, v in terms.items())
        log.info(
            "%s %d/%d (%d%%) %s %.2f it/s",
            self.what,
            step,
            self.total,
            100 * step // self.total,
            shown,
            rate,
        )
