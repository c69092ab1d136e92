"""The code and the workflow stay lint-clean (ruff, snakefmt, Snakemake's own linter), and the
workflow stays cheap to parse."""

from __future__ import annotations

import re
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


def test_parsing_the_workflow_does_not_import_torch() -> None:
    # Every Snakemake start parses the workflow, once per job on a cluster; importing torch there
    # doubled the start-up time. Run the workflow's own library imports in a fresh interpreter.
    imports = sorted(
        {
            line.strip()
            for path in SNAKE_FILES
            for line in open(path, encoding="utf-8")
            if re.match(r"\s*(from replicate[\w.]* import|import replicate)", line)
        }
    )
    assert imports, "found no import of the library in the workflow"
    code = "\n".join([*imports, "import sys", "print('torch' in sys.modules)"])
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=local_env()
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False", f"parsing imports torch through: {imports}"
