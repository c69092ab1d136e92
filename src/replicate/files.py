"""Writing the pipeline's files atomically, and reading them back with errors that say what to
do: JSON, CSV + Markdown tables, npz arrays. Every output goes to a temporary name beside its
target and is renamed onto it only once complete, so a killed job never leaves a half-written
file that Snakemake would take as finished.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "r.json"
    >>> write_json(path, {"accuracy": 0.98}); read_json(path)
    {'accuracy': 0.98}
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["atomic_path", "read_json", "read_npz", "write_json", "write_npz", "write_table"]

# The process's umask, read once at import (reading it means setting it for a moment).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A crash or kill inside the block leaves no file at ``path``, so Snakemake never takes a
    half-written output as finished; the file is flushed to the disk (``fsync``) before the
    rename and the directory after it, so that a power loss cannot leave an empty file under
    the final name.

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
        _fsync(tmp_path)  # the bytes reach the disk before the name does: a power loss
        os.replace(tmp_path, path)  # leaves the old file or the whole new one, never an empty one
        _fsync(path.parent)
    finally:
        tmp_path.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    """Flush a file's (or a directory's: its entries') writes to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
