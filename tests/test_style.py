"""The code and the workflow stay lint-clean: ruff, snakefmt and Snakemake's own linter."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO, local_env

SNAKE_FILES = [
    str(REPO / "Snakefile"),
    *map(str, sorted((REPO / "workflow" / "rules").glob("*.smk"))),
]
PYTHON_DIRS = [
    str(REPO / d) for d in ("src", "tests", "workflow", "benchmarks") if (REPO / d).exists()
]


@pytest.mark.parametrize(
    "cmd",
    [
        ["ruff", "check", *PYTHON_DIRS],
        ["ruff", "format", "--check", *PYTHON_DIRS],
        ["snakefmt", "--check", *SNAKE_FILES],
        ["snakemake", "--lint", "--snakefile", str(REPO / "Snakefile")],
    ],
    ids=["ruff-check", "ruff-format", "snakefmt", "snakemake-lint"],
)
def test_tool_is_clean(cmd: list[str]) -> None:
    if cmd[0] != "snakemake":
        cmd = [sys.executable, "-m", cmd[0], *cmd[1:]] if cmd[0] == "ruff" else cmd
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=local_env())
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    if cmd[0] == "snakemake":
        assert "Congratulations" in out, out
