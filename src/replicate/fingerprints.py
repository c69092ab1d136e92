"""What code made a result: a fingerprint of the library modules a rule's script runs, read from
their source without importing them (building the DAG must not import torch), so that Snakemake
reruns exactly the jobs whose code changed.

The modules of a script are its ``replicate`` imports, followed statically through every module
they import (at the top or inside a function; not those under ``if TYPE_CHECKING:``), with the
``__init__`` of every package on the way (Python runs it on import). Each module is digested as
its syntax tree without docstrings, so a change to comments, docstrings or formatting alone
changes no digest, and any change to what the code does changes one. The fingerprint also names
the versions of the package, torch and sbi (read from the installed distributions' metadata).

The granularity is the module: a rule whose stage module imports a module it calls nothing of
still reruns when that module changes (:func:`script_modules` lists what a rule depends on).

Example:
    >>> import tempfile
    >>> script = Path(tempfile.mkdtemp()) / "train_gmm.py"
    >>> _ = script.write_text("from replicate.experiments.gmm.stages import train_gmm_model\\n")
    >>> modules = script_modules(script)
    >>> "replicate.models.flows" in modules, "replicate.experiments.latent.stages" in modules
    (True, False)
    >>> a = source_digest("def f(x):\\n    '''Doc.'''\\n    return x  # comment\\n")
    >>> b = source_digest("def f(x):\\n    return x\\n")
    >>> a == b, a == source_digest("def f(x):\\n    return x + 1\\n")
    (True, False)
"""

from __future__ import annotations

import ast
import contextlib
import contextvars
import functools
import hashlib
import importlib.metadata
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "LIBRARY",
    "changed_modules",
    "code_digest",
    "code_fingerprint",
    "current_code",
    "recording_code",
    "script_modules",
    "source_digest",
]

PACKAGE = "replicate"
# The package's source directory: the one the rule scripts import (PYTHONPATH or the install).
LIBRARY = Path(__file__).resolve().parent
# Distributions whose version is part of every fingerprint: their numerics make the numbers.
_VERSIONED = ("replicate", "torch", "sbi")


def _without_docstrings(tree: ast.AST) -> ast.AST:
    """``tree`` with the docstring of every module, class and function removed (in place)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
    return tree


def source_digest(source: str) -> str:
    """The digest of what a module's code does: its syntax tree without docstrings (comments
    and formatting are not in the tree), 16 hex digits.

    Example:
        >>> source_digest("x = 1") == source_digest("x = 1  # one\\n")
        True
    """
    tree = _without_docstrings(ast.parse(source))
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()[:16]


def _module_path(name: str, root: Path = LIBRARY) -> Path | None:
    """The source file of module ``name`` (``replicate...``) under ``root``, or None."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = root.joinpath(*parts[1:])
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported_names(tree: ast.AST, module: str | None, is_package: bool) -> set[str]:
    """The dotted module names an import of ``tree`` may refer to (``from a import b``: both
    ``a`` and ``a.b``, since ``b`` may be a submodule); relative imports resolved against
    ``module``. Imports under ``if TYPE_CHECKING:`` do not run and are left out."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            skipped.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                if module is None:
                    continue
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


@functools.cache
def _module_imports(path: Path, name: str | None) -> frozenset[str]:
    tree = ast.parse(path.read_text())
    return frozenset(_imported_names(tree, name, path.name == "__init__.py"))


def _with_parents(name: str) -> list[str]:
    """``a.b.c`` -> ``a``, ``a.b``, ``a.b.c``: importing a module runs its packages' __init__."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def script_modules(script: str | os.PathLike, root: Path = LIBRARY) -> list[str]:
    """Every module of the library that running ``script`` imports, sorted: its ``replicate``
    imports, what they import in turn, and the packages on the way.

    Example:
        >>> "replicate.models.flows" in script_modules(LIBRARY / "models" / "cinn.py")
        True
    """
    pending = [n for n in _module_imports(Path(script), None) if n.split(".")[0] == PACKAGE]
    found: set[str] = set()
    while pending:
        for name in _with_parents(pending.pop()):
            path = _module_path(name, root)
            if path is None or name in found:
                continue
            found.add(name)
            pending.extend(n for n in _module_imports(path, name) if n.split(".")[0] == PACKAGE)
    return sorted(found)


@functools.cache
def _file_digest(path: Path) -> str:
    return source_digest(path.read_text())


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def code_fingerprint(script: str | os.PathLike, root: Path = LIBRARY) -> dict[str, Any]:
    """The fingerprint of the code ``script`` runs: the digest of each library module it imports
    (:func:`script_modules`) and the versions of replicate, torch and sbi. Equal fingerprints,
    same code. A rule passes it as a param, so Snakemake reruns the rule when it changes.

    Example:
        >>> fingerprint = code_fingerprint(LIBRARY / "publish.py")  # what publish.py imports
        >>> sorted(fingerprint), sorted(fingerprint["versions"])
        (['modules', 'versions'], ['replicate', 'sbi', 'torch'])
    """
    modules = {
        name: _file_digest(_module_path(name, root)) for name in script_modules(script, root)
    }
    return {"modules": modules, "versions": {d: _version(d) for d in _VERSIONED}}


def code_digest(fingerprint: Mapping[str, Any]) -> str:
    """One short digest of a whole fingerprint, for logs and status files.

    Example:
        >>> code_digest({"modules": {"replicate.a": "1"}, "versions": {}}) != code_digest({})
        True
    """
    text = json.dumps(fingerprint, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def changed_modules(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """What differs between two fingerprints, one line per module or version.

    Example:
        >>> old = {"modules": {"replicate.a": "1", "replicate.b": "2"}, "versions": {"torch": "2"}}
        >>> new = {"modules": {"replicate.a": "1", "replicate.c": "3"}, "versions": {"torch": "3"}}
        >>> changed_modules(old, new)
        ['replicate.b (removed)', 'replicate.c (added)', 'torch 2 -> 3']
    """
    lines = []
    old, new = stored.get("modules", {}), current.get("modules", {})
    for name in sorted(set(old) | set(new)):
        if name not in new:
            lines.append(f"{name} (removed)")
        elif name not in old:
            lines.append(f"{name} (added)")
        elif old[name] != new[name]:
            lines.append(f"{name} (changed)")
    old, new = stored.get("versions", {}), current.get("versions", {})
    lines += [f"{d} {old.get(d)} -> {new.get(d)}" for d in sorted(new) if old.get(d) != new.get(d)]
    return lines


# The fingerprint of the code the running rule's stage runs (set by replicate.runtime.run_stage).
_CURRENT: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "replicate_code", default=None
)


def current_code() -> dict[str, Any] | None:
    """The fingerprint of the running rule's code, or None outside a rule (library use)."""
    return _CURRENT.get()


@contextlib.contextmanager
def recording_code(fingerprint: Mapping[str, Any] | None) -> Iterator[None]:
    """Within the block, :func:`current_code` is ``fingerprint``: checkpoints and status files
    written there record it.

    Example:
        >>> with recording_code({"modules": {}, "versions": {}}):
        ...     current_code()
        {'modules': {}, 'versions': {}}
        >>> current_code() is None
        True
    """
    token = _CURRENT.set(dict(fingerprint) if fingerprint is not None else None)
    try:
        yield
    finally:
        _CURRENT.reset(token)
