"""The code and the workflow stay lint-clean (ruff, snakefmt, Snakemake's own linter), and the
workflow stays cheap to parse."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO, local_env

from replicate.config import DEVICE_RULES

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
    statement = r"^[ \t]*(from replicate[\w.]* import (?:\([^)]*\)|[^\n]*)|import replicate[^\n]*)"
    imports = sorted(
        {
            " ".join(m.group(1).split())
            for path in SNAKE_FILES
            for m in re.finditer(statement, Path(path).read_text(encoding="utf-8"), re.MULTILINE)
        }
    )
    assert imports, "found no import of the library in the workflow"
    code = "\n".join([*imports, "import sys", "print('torch' in sys.modules)"])
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=local_env()
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False", f"parsing imports torch through: {imports}"


SCRIPTS = sorted((REPO / "workflow" / "scripts").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_every_rule_script_runs_its_stage_through_the_stage_runner(script: Path) -> None:
    """A rule script is thin: one ``run_stage(snakemake, <library function>, ...)`` call (which
    logs to the rule's log file and sizes the thread pool to the rule's threads), and nothing that
    would do either behind its back."""
    tree = ast.parse(script.read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    runner = [c for c in calls if getattr(c.func, "id", None) == "run_stage"]
    assert len(runner) == 1, f"{script.name}: {len(runner)} run_stage calls, want exactly one"
    first = runner[0].args[:2]
    assert len(first) == 2 and getattr(first[0], "id", None) == "snakemake", script.name
    imported = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("replicate")
        for alias in node.names
    }
    assert getattr(first[1], "id", None) in imported, (
        f"{script.name}: the stage is not the library's"
    )
    bypass = {"setup_logging", "use_threads", "set_num_threads", "basicConfig"}
    names = {getattr(c.func, "id", None) or getattr(c.func, "attr", None) for c in calls}
    assert not names & bypass, f"{script.name} calls {sorted(names & bypass)} itself"
    assert all(getattr(c.func, "id", None) != "exec" for c in calls)
    # Arguments by name: two paths swapped by position would go unnoticed.
    assert len(runner[0].args) == 2, f"{script.name}: pass the stage's arguments by name"


def _rule_scripts() -> dict[str, Path]:
    """Each rule with a ``script:`` and that script's path."""
    found = {}
    for path in SNAKE_FILES:
        text = Path(path).read_text(encoding="utf-8")
        for block in re.split(r"^rule ", text, flags=re.MULTILINE)[1:]:
            script = re.search(r'script:\s*\n\s*"\.\./scripts/([\w.]+)"', block)
            if script:
                found[block.split(":", 1)[0]] = REPO / "workflow" / "scripts" / script.group(1)
    return found


def _stage_takes_device(script: Path) -> bool:
    tree = ast.parse(script.read_text())
    modules = {
        alias.asname or alias.name: node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("replicate")
        for alias in node.names
    }
    call = next(
        c
        for c in ast.walk(tree)
        if isinstance(c, ast.Call) and getattr(c.func, "id", "") == "run_stage"
    )
    name = call.args[1].id
    stage = getattr(importlib.import_module(modules[name]), name)
    return "device" in inspect.signature(stage).parameters


def test_every_rule_that_runs_a_model_declares_the_gpu_and_can_be_moved() -> None:
    """The rules whose stage takes a device are exactly DEVICE_RULES; each asks for one unit of
    `gpu_jobs` through replicate.config.gpu_jobs (so `--resources gpu_jobs=N` caps them on a
    GPU) and its device can be set in `stage_devices` (the schema names the same rules)."""
    scripts = _rule_scripts()
    assert len(scripts) > 20
    on_device = {rule for rule, script in scripts.items() if _stage_takes_device(script)}
    assert on_device == set(DEVICE_RULES)
    text = "".join(Path(p).read_text(encoding="utf-8") for p in SNAKE_FILES)
    for rule in DEVICE_RULES:
        assert f'gpu_jobs=gpu_jobs(config, "{rule}")' in text, rule
    assert text.count("gpu_jobs=gpu_jobs(") == len(DEVICE_RULES)
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    assert schema["properties"]["stage_devices"]["propertyNames"]["enum"] == list(DEVICE_RULES)


def test_every_rule_passes_the_fingerprint_of_the_code_its_script_runs() -> None:
    """Every rule with a script has the param `code=code_of("<its script>")`, so that Snakemake
    reruns it when the library code that script imports changes (replicate.fingerprints)."""
    text = "".join(Path(p).read_text(encoding="utf-8") for p in SNAKE_FILES)
    blocks = {b.split(":", 1)[0]: b for b in re.split(r"^rule ", text, flags=re.MULTILINE)[1:]}
    scripts = _rule_scripts()
    missing = [
        rule for rule, path in scripts.items() if f'code=code_of("{path.name}")' not in blocks[rule]
    ]
    assert not missing, f"rules without their script's code fingerprint: {missing}"
