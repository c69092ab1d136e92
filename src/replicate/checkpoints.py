"""Checkpoints: tensors saved as safetensors (no pickle) with the configuration they were
trained under, which a load must match (:func:`save_checkpoint`, :func:`load_checkpoint`); the
model's and the optimiser's state as named tensors, and the resume checkpoint from which a
killed run continues with the numbers of an uninterrupted one (:class:`Resume`, written by
:func:`save_run` at the end of every segment, at a signal and at the end of the run, and read by
:func:`restore_run`), the one before it kept in case the latest is damaged.

Example:
    >>> a, b = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    >>> restore_model(b, model_tensors(a)); bool((a.weight == b.weight).all())
    True
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from replicate.files import atomic_path
from replicate.fingerprints import changed_modules, current_code

__all__ = [
    "CheckpointMismatch",
    "Resume",
    "RunState",
    "config_hash",
    "discard_resumable",
    "load_checkpoint",
    "load_resumable",
    "model_tensors",
    "optimizer_tensors",
    "restore_model",
    "restore_optimizer",
    "restore_run",
    "save_checkpoint",
    "save_resumable",
    "save_run",
    "snapshot",
    "stored_code",
    "tensors_under",
    "tensors_with_prefix",
]

log = logging.getLogger("replicate")


def config_hash(metadata: Mapping[str, Any]) -> str:
    """A short, stable fingerprint of a training configuration (for status files and logs).

    Example:
        >>> config_hash({"a": 1, "b": [2]}) == config_hash({"b": [2], "a": 1})
        True
    """
    text = json.dumps(metadata, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class CheckpointMismatch(ValueError):
    """A checkpoint was written under another configuration than the one loading it."""


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
    """Save tensors as safetensors (no pickle), with ``metadata`` (the configuration) inside and,
    within a pipeline rule, the fingerprint of the code that wrote it
    (:func:`replicate.fingerprints.current_code`; recorded, never compared by a load)."""
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    header = {"config": _canonical(metadata)}
    if (code := current_code()) is not None:
        header["code"] = _canonical(code)
    with atomic_path(path) as tmp:
        save_file(contiguous, str(tmp), metadata=header)


def stored_code(path: str | os.PathLike) -> dict[str, Any] | None:
    """The code fingerprint a checkpoint was written with (None: written outside a rule)."""
    with safe_open(str(path), framework="pt") as f:
        code = (f.metadata() or {}).get("code")
    return json.loads(code) if code else None


def load_checkpoint(
    path: str | os.PathLike,
    expected: Mapping[str, Any] | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, Tensor]:
    """Load a safetensors checkpoint; if ``expected`` is given it must equal the stored config.

    Raises :class:`CheckpointMismatch` naming both configurations when they differ.
    """
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


def model_tensors(model: nn.Module) -> dict[str, Tensor]:
    """The model's state as named tensors ``model.<name>``, for a safetensors checkpoint.

    Example:
        >>> sorted(model_tensors(torch.nn.Linear(2, 1)))
        ['model.bias', 'model.weight']
    """
    return tensors_with_prefix(model.state_dict(), "model")


def restore_model(model: nn.Module, tensors: Mapping[str, Tensor]) -> None:
    """Load what :func:`model_tensors` saved back into ``model`` (other names are ignored).

    Example:
        >>> a, b = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
        >>> restore_model(b, model_tensors(a)); bool((a.weight == b.weight).all())
        True
    """
    model.load_state_dict(tensors_under(tensors, "model"))


def tensors_with_prefix(tensors: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The tensors renamed ``<prefix>.<name>``, so that one checkpoint keeps several state dicts
    (``model.``, ``best.``); :func:`tensors_under` reads them back.

    Example:
        >>> t = torch.zeros(1)
        >>> tensors_with_prefix({"weight": t}, "best")
        {'best.weight': tensor([0.])}
        >>> tensors_under(tensors_with_prefix({"weight": t}, "best"), "best")
        {'weight': tensor([0.])}
    """
    return {f"{prefix}.{k}": v for k, v in tensors.items()}


def tensors_under(tensors: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The tensors named ``<prefix>.<name>``, by ``name`` (how a checkpoint keeps one state
    dict among others: ``model.``, ``best.``; :func:`tensors_with_prefix` writes them).

    Example:
        >>> t = torch.zeros(1)
        >>> tensors_under({"best.weight": t, "model.weight": t, "best.bias": t}, "best")
        {'weight': tensor([0.]), 'bias': tensor([0.])}
    """
    start = len(prefix) + 1
    return {k[start:]: v for k, v in tensors.items() if k.startswith(f"{prefix}.")}


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, Tensor]:
    """The optimiser's state as flat named tensors, for a safetensors checkpoint (no pickle).

    Example:
        >>> p = torch.nn.Parameter(torch.ones(2))
        >>> opt = torch.optim.Adam([p])
        >>> p.sum().backward(); opt.step()
        >>> sorted(optimizer_tensors(opt))
        ['optimizer.0.exp_avg', 'optimizer.0.exp_avg_sq', 'optimizer.0.step']
    """
    out: dict[str, Tensor] = {}
    for index, entries in optimizer.state_dict()["state"].items():
        for key, value in entries.items():
            out[f"optimizer.{index}.{key}"] = torch.as_tensor(value)
    return out


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: Mapping[str, Tensor]) -> None:
    """Load what :func:`optimizer_tensors` saved back into ``optimizer`` (same parameters).

    Example:
        >>> p = torch.nn.Parameter(torch.ones(2))
        >>> opt = torch.optim.Adam([p]); p.sum().backward(); opt.step()
        >>> opt2 = torch.optim.Adam([p]); restore_optimizer(opt2, optimizer_tensors(opt))
        >>> float(opt2.state_dict()["state"][0]["step"])
        1.0
    """
    state_dict = optimizer.state_dict()
    state: dict[int, dict[str, Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value.clone()
    state_dict["state"] = state
    optimizer.load_state_dict(state_dict)


@dataclass(frozen=True)
class Resume:
    """Where a run keeps its resume checkpoint, and under which configuration.

    The checkpoint holds the model, the optimiser state and the loss history; it is written
    atomically at the end of every segment (and at SIGTERM or SIGINT), the one before it kept
    beside it (:func:`save_resumable`), and left for the caller to delete with
    :func:`discard_resumable` once the run's outputs are written. A checkpoint written under
    other ``metadata`` (another configuration) is ignored with a warning.
    """

    path: str | os.PathLike
    model: nn.Module
    metadata: Mapping[str, Any]


def _previous(path: Path) -> Path:
    """Where the resume checkpoint before the latest one is kept."""
    return path.with_name(path.name + ".previous")


def save_resumable(
    path: str | os.PathLike, tensors: Mapping[str, Tensor], metadata: Mapping[str, Any]
) -> None:
    """Write a resume checkpoint, keeping the one it replaces as ``<path>.previous``: should the
    new one be damaged (a disk that filled, a file system that lost the last write),
    :func:`load_resumable` falls back to the one before.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "last.safetensors"
        >>> for step in (1, 2):
        ...     save_resumable(path, {"step": torch.tensor(step)}, {"lr": 0.1})
        >>> _ = path.write_bytes(b"damaged")
        >>> int(load_resumable(path, {"lr": 0.1})["step"])
        1
    """
    path = Path(path)
    if path.exists():
        os.replace(path, _previous(path))
    save_checkpoint(path, tensors, metadata)


def discard_resumable(path: str | os.PathLike | None) -> None:
    """Delete a run's resume checkpoints (the latest and the one before): call it once the
    outputs they would restore are written, never before."""
    if path is not None:
        for file in (Path(path), _previous(Path(path))):
            file.unlink(missing_ok=True)


def _warn_if_other_code(path: Path) -> None:
    """A resume checkpoint written by other library code is resumed, saying what changed."""
    stored, current = stored_code(path), current_code()
    if stored is None or current is None:
        return
    changes = changed_modules(stored, current)
    if changes:
        log.warning(
            "resuming from %s, which other code wrote (%s); training goes on with this code. "
            "Delete it (and %s) to train from the start with this code only.",
            path,
            ", ".join(changes),
            _previous(path).name,
        )


def load_resumable(
    path: str | os.PathLike, metadata: Mapping[str, Any], device: torch.device | str = "cpu"
) -> dict[str, Tensor] | None:
    """The tensors of the resume checkpoint at ``path``, or None where there is none or it was
    written under other ``metadata`` (a warning says so), so that the run starts over.

    A damaged checkpoint (truncated, unreadable) is never a silent restart: the one before it
    (``<path>.previous``, :func:`save_resumable`) is resumed instead, with a warning; where that
    is missing or damaged too, ``ValueError`` names the file and the fix. A checkpoint written
    by other library code (its recorded fingerprint) is resumed with a warning naming the
    modules that changed.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "last.safetensors"
        >>> save_checkpoint(path, {"step": torch.tensor(3)}, {"lr": 0.1})
        >>> int(load_resumable(path, {"lr": 0.1})["step"]), load_resumable(path, {"lr": 0.2})
        (3, None)
    """
    path = Path(path)
    for candidate in (path, _previous(path)):
        if not candidate.exists():
            continue
        try:
            tensors = load_checkpoint(candidate, metadata, device)
        except CheckpointMismatch as exc:
            log.warning("not resuming from %s: %s", candidate, exc)
            return None
        except ValueError as exc:
            log.warning("resume checkpoint %s is damaged: %s", candidate, exc)
            continue
        if candidate != path:
            log.warning("resuming from %s, the checkpoint before the damaged one", candidate)
        _warn_if_other_code(candidate)
        return tensors
    if path.exists() or _previous(path).exists():
        raise ValueError(
            f"resume checkpoint {path} is damaged and no earlier one is readable; delete "
            f"{path} and {_previous(path)} to train this model from the start"
        )
    return None


@dataclass
class RunState:
    """What a resume checkpoint restores besides the weights and the optimiser: the loss history,
    the validation losses and best weights so far, whether patience had run out, and, for a
    checkpoint written between two segments (at a signal), the global generator's state."""

    history: list[dict[str, float]] = field(default_factory=list)
    validation: list[float] = field(default_factory=list)
    best: dict[str, Tensor] = field(default_factory=dict)
    stopped_early: bool = False
    rng: Tensor | None = None


def restore_run(
    resume: Resume,
    optimizer: torch.optim.Optimizer,
    segment: int,
    iterations: int,
    validated: bool,
) -> RunState:
    """Load ``resume``'s checkpoint into the model and optimiser; return the rest of its state.

    A checkpoint that cannot be resumed (another configuration, no history, a history longer
    than this run or ending between two segments, unless the run finished there or the
    generator state to go on from there is saved, or validation state that does not match it)
    is ignored with a warning before anything is loaded, so the run then starts over from its
    fresh initialisation.
    """
    path = Path(resume.path)
    tensors = load_resumable(path, resume.metadata, next(resume.model.parameters()).device)
    if tensors is None:
        return RunState()
    # Named "history.<position>.<term>": safetensors sorts names, the history keeps step's order.
    columns = sorted(
        (int(k.split(".")[1]), k.split(".", 2)[2], v.tolist())
        for k, v in tensors.items()
        if k.startswith("history.")
    )
    terms = {name: values for _, name, values in columns}
    length = len(next(iter(terms.values()))) if terms else 0
    rng = tensors.get("rng.cpu")
    finished = length == iterations
    if not length or (length % segment and rng is None and not finished) or length > iterations:
        log.warning("not resuming from %s: its history does not end on a segment", path)
        return RunState()
    losses = tensors["validation.loss"].tolist() if "validation.loss" in tensors else []
    best = tensors_under(tensors, "best")
    if validated and (len(losses) != length // segment or (losses and not best)):
        log.warning("not resuming from %s: it holds no validation state for this run", path)
        return RunState()
    restore_model(resume.model, tensors)
    restore_optimizer(optimizer, tensors)
    history = [{name: values[i] for name, values in terms.items()} for i in range(length)]
    stopped = bool(tensors["loop.stopped_early"]) if "loop.stopped_early" in tensors else False
    return RunState(history, losses, best, stopped, rng.cpu() if rng is not None else None)


def save_run(
    resume: Resume,
    optimizer: torch.optim.Optimizer,
    state: RunState,
) -> None:
    """Write ``resume``'s checkpoint: the model, the optimiser, ``state``'s loss history (one
    float64 column per term), its validation losses and best weights after a validated segment,
    whether it stopped early and its generator state (if any); what :func:`restore_run` reads
    back. The one it replaces is kept as ``<path>.previous`` (:func:`save_resumable`)."""
    model = model_tensors(resume.model)
    losses = {
        f"history.{position}.{name}": torch.tensor(
            [h[name] for h in state.history], dtype=torch.float64
        )
        for position, name in enumerate(state.history[0])
    }
    if state.validation:
        losses["validation.loss"] = torch.tensor(state.validation, dtype=torch.float64)
        losses.update(tensors_with_prefix(state.best, "best"))
    losses["loop.stopped_early"] = torch.tensor(state.stopped_early)
    if state.rng is not None:
        losses["rng.cpu"] = state.rng
    save_resumable(
        resume.path, {**model, **optimizer_tensors(optimizer), **losses}, resume.metadata
    )


def snapshot(model: nn.Module) -> dict[str, Tensor]:
    """A copy of the model's tensors (named as :func:`model_tensors` names them)."""
    return {k: v.detach().clone() for k, v in model_tensors(model).items()}
