"""Raw MNIST and Fashion-MNIST: obtain the IDX files, verify them, place them, load them.

- :mod:`~replicate.data.formats`: what each dataset is (names, SHA-256 of every file, SPEC section
  4) and the IDX format (read, check, write);
- :mod:`~replicate.data.sources`: where the files come from (directories, torchvision, registry
  packages);
- :mod:`~replicate.data.prepare`: :func:`prepare_dataset` (the pipeline's first rule), the
  re-check every later rule does (:func:`check_prepared`) and loading (:func:`load_split`).

The names below are the public API; torch is imported only inside the functions that need it (the
workflow imports this package at every start).
"""

from replicate.data.formats import (
    DATASETS,
    EXPECTED_SHA256,
    IDX_NAMES,
    ChecksumMismatch,
    DataError,
    DatasetInfo,
    IdxFormatError,
    NoSourceWorked,
    raw_dir,
    sha256_file,
    validate_idx,
    write_idx,
)
from replicate.data.prepare import (
    check_prepared,
    load_images,
    load_split,
    prepare_dataset,
    write_synthetic_dataset,
)
from replicate.data.sources import SOURCES

__all__ = [
    "DATASETS",
    "EXPECTED_SHA256",
    "IDX_NAMES",
    "SOURCES",
    "ChecksumMismatch",
    "DataError",
    "DatasetInfo",
    "IdxFormatError",
    "NoSourceWorked",
    "check_prepared",
    "load_images",
    "load_split",
    "prepare_dataset",
    "raw_dir",
    "sha256_file",
    "validate_idx",
    "write_idx",
    "write_synthetic_dataset",
]
