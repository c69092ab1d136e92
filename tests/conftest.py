"""The fixtures of the test suite; the helpers they use are in helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import snakemake


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding a finished local run of the whole DAG on the smoke configuration."""
    workdir = tmp_path_factory.mktemp("smoke_run")
    snakemake(workdir)
    return workdir
