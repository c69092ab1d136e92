"""What every training and evaluation step shares: devices, seeds, atomic files, safe checkpoints,
divergence checks and progress lines for the rule logs.

Example:
    >>> import tempfile, pathlib, torch
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> save_checkpoint(d / "m.safetensors", {"w": torch.ones(2)}, {"blocks": 8})
    >>> load_checkpoint(d / "m.safetensors", {"blocks": 8})["w"].tolist()
    [1.0, 1.0]
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import random
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from replicate.config import stage_device

if TYPE_CHECKING:  # pandas only for the annotation: runtime is imported by every rule
    import pandas as pd

__all__ = [
    "CheckpointMismatch",
    "ProgressLog",
    "TrainingDiverged",
    "atomic_path",
    "check_finite",
    "load_checkpoint",
    "read_json",
    "read_npz",
    "resolve_device",
    "run_stage",
    "save_checkpoint",
    "seed_everything",
    "setup_logging",
    "use_threads",
    "write_json",
    "write_npz",
    "write_table",
]

log = logging.getLogger("replicate")
T = TypeVar("T")

# The process's umask, read once at import (reading it means setting it for a moment).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


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


class CheckpointMismatch(ValueError):
    """A checkpoint was written under another configuration than the one loading it."""


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
    script passes them. Seeds come in as the
    stage's own arguments (wildcards, params): each stage seeds the streams it draws from.

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
    log.info(
        "rule %s%s: %d thread(s)%s",
        snakemake.rule,
        f" ({wildcards})" if wildcards else "",
        threads,
        f", device {device}" if device is not None else "",
    )
    try:
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


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A crash or kill inside the block leaves no file at ``path``, so Snakemake never takes a
    half-written output as finished.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
        >>> with atomic_path(target) as tmp:
        ...     _ = tmp.write_text("done")
        >>> target.read_text()
        'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_json(path: str | os.PathLike, data: Mapping[str, Any]) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=float) + "\n")


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON object written by a rule, or ``ValueError`` naming the file when it is truncated
    or not JSON (and how to regenerate it).

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "broken.json"
        >>> _ = path.write_text('{"loss": 1.')
        >>> read_json(path)
        Traceback (most recent call last):
        ...
        ValueError: .../broken.json is not valid JSON (...); delete it and rerun the rule ...
    """
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path} is not valid JSON ({exc}); delete it and rerun the rule that writes it"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a {type(data).__name__}, not a JSON object")
    return data


def write_table(
    frame: pd.DataFrame, csv_path: str | os.PathLike, md_path: str | os.PathLike, markdown: str
) -> None:
    """Write a table as CSV (every column) and its Markdown rendering, each atomically.

    Example:
        >>> import tempfile
        >>> import pandas as pd
        >>> folder = Path(tempfile.mkdtemp())
        >>> frame = pd.DataFrame({"model": ["ours"], "accuracy": [0.98]})
        >>> write_table(frame, folder / "t.csv", folder / "t.md", frame.to_markdown(index=False))
        >>> pd.read_csv(folder / "t.csv").equals(frame)
        True
    """
    with atomic_path(csv_path) as tmp:
        frame.to_csv(tmp, index=False)
    with atomic_path(md_path) as tmp:
        tmp.write_text(markdown.rstrip("\n") + "\n")


def write_npz(path: str | os.PathLike, **arrays: Any) -> None:
    """Write named arrays as an uncompressed ``.npz``, atomically (``np.load`` reads it back).

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "samples.npz"
        >>> write_npz(path, labels=np.arange(3))
        >>> np.load(path)["labels"].tolist()
        [0, 1, 2]
    """
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a bare name
            np.savez(f, **arrays)


def read_npz(path: str | os.PathLike, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """The named arrays of an ``.npz`` file, or ``ValueError`` naming the file and what is wrong
    (missing, truncated, not an npz, an array missing) and how to regenerate it.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "samples.npz"
        >>> write_npz(path, labels=np.arange(3))
        >>> read_npz(path, ["labels"])["labels"].tolist()
        [0, 1, 2]
        >>> read_npz(path, ["samples"])
        Traceback (most recent call last):
        ...
        ValueError: cannot read .../samples.npz: it has no arrays ['samples'] (it holds ...
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in keys if k not in data.files]
            if missing:
                raise ValueError(f"it has no arrays {missing} (it holds {data.files})")
            return {k: data[k] for k in keys}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(
            f"cannot read {path}: {exc}; delete it and rerun the rule that writes it"
        ) from None


# Stands for a key one configuration has and the other lacks.
_ABSENT = object()


def _canonical(metadata: Mapping[str, Any]) -> str:
    return json.dumps(metadata, sort_keys=True, default=str)


def _parse_metadata(stored: str | None) -> Any:
    """The stored configuration as JSON data; unreadable text stays a string (a mismatch)."""
    if stored is None:
        return None
    try:
        return json.loads(stored)
    except json.JSONDecodeError:
        return stored


def _differences(stored: Any, expected: Any, key: str = "") -> list[str]:
    """``key: stored A, expected B`` for every dotted key where the two configurations differ.

    Leaves compare as JSON text, so ``8`` and ``8.0`` differ, as they do in the file.

    Example:
        >>> _differences({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}, "d": 0})
        ['a.c: stored 2, expected 3', 'd: stored (absent), expected 0']
    """
    if isinstance(stored, dict) and isinstance(expected, dict):
        lines = []
        for name in sorted(set(stored) | set(expected)):
            sub = f"{key}.{name}" if key else name
            lines += _differences(stored.get(name, _ABSENT), expected.get(name, _ABSENT), sub)
        return lines
    shown = ["(absent)" if v is _ABSENT else json.dumps(v) for v in (stored, expected)]
    if shown[0] == shown[1]:
        return []
    if stored is None and not key:
        shown[0] = "no configuration (not written by save_checkpoint)"
    return [f"{key or '(whole configuration)'}: stored {shown[0]}, expected {shown[1]}"]


def save_checkpoint(
    path: str | os.PathLike, tensors: Mapping[str, Tensor], metadata: Mapping[str, Any]
) -> None:
    """Save tensors as safetensors (no pickle), with ``metadata`` (the configuration) inside."""
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(contiguous, str(tmp), metadata={"config": _canonical(metadata)})


def load_checkpoint(
    path: str | os.PathLike,
    expected: Mapping[str, Any] | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, Tensor]:
    """Load a safetensors checkpoint; if ``expected`` is given it must equal the stored config.

    Raises :class:`CheckpointMismatch` naming both configurations when they differ.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            stored = (f.metadata() or {}).get("config")
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise ValueError(
            f"checkpoint {path} is unreadable or truncated ({exc}); delete it"
        ) from exc
    if expected is not None:
        differences = _differences(_parse_metadata(stored), json.loads(_canonical(expected)))
        if differences:
            shown = "\n".join(f"  {line}" for line in differences)
            raise CheckpointMismatch(
                f"checkpoint {path} was written under another configuration than this run's; "
                f"differing keys:\n{shown}\n"
                f"stored configuration:   {stored}\n"
                f"expected configuration: {_canonical(expected)}\n"
                "Delete the checkpoint to retrain, or restore the configuration it was written for."
            )
    return load_file(str(path), device=str(device))


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

    def __init__(self, total: int, every: int = 50, what: str = "iteration") -> None:
        self.total, self.every, self.what = total, max(1, every), what
        self.last = time.perf_counter()
        self.last_step = 0

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
