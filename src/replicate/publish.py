"""Copy what a finished run made into ``results/readme/<name>/``, with its provenance, so the README
can show figures and tables that a stated command produced on a stated machine and commit.

Writes, next to copies of every figure (PNG) and table (CSV, Markdown) of the run:

- ``costs.md`` / ``costs.csv``: wall-clock and CPU seconds and peak memory of every job that has a
  Snakemake ``benchmark:`` file (the training rules), and their totals (none if no job has one);
- ``provenance.md``: the command, the commit, the machine, the library versions, the date.

Usage (from the repository root, after the run)::

    python3 -m replicate.publish --run-dir . --name quick \\
        --command "snakemake --cores 2 --configfile config/quick.yaml"

Example:
    >>> import tempfile, pathlib
    >>> run = pathlib.Path(tempfile.mkdtemp())
    >>> (run / "results/benchmarks/gmm").mkdir(parents=True)
    >>> _ = (run / "results/benchmarks/gmm/train_ours_all_seed0.tsv").write_text(
    ...     "s\\th:m:s\\tmax_rss\\tcpu_time\\n12.5\\t0:00:12\\t300.0\\t24.0\\n")
    >>> job_costs(run)[["job", "wall_clock_s", "cpu_s"]].values.tolist()
    [['gmm/train_ours_all_seed0', 12.5, 24.0]]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from replicate.files import atomic_path, write_table

__all__ = ["job_costs", "main", "provenance", "publish"]

FIGURES = "results/figures"
TABLES = "results/tables"
BENCHMARKS = "results/benchmarks"


def job_costs(run_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per benchmarked job of the run: wall-clock and CPU seconds, peak memory (MB).

    Jobs are named by their benchmark file below ``results/benchmarks`` (stage/stem).
    """
    root = Path(run_dir) / BENCHMARKS
    rows = []
    for path in sorted(root.rglob("*.tsv")):
        # Snakemake writes one row per repeat; a job benchmarked once has exactly one.
        first = pd.read_csv(path, sep="\t").iloc[0]
        rows.append(
            {
                "job": path.relative_to(root).with_suffix("").as_posix(),
                "wall_clock_s": float(first["s"]),
                "cpu_s": float(first["cpu_time"]),
                "max_rss_mb": float(first["max_rss"]),
            }
        )
    return pd.DataFrame(rows, columns=["job", "wall_clock_s", "cpu_s", "max_rss_mb"])


def _command_output(*cmd: str, cwd: Path) -> str:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # no /proc (macOS, Windows)
        pass
    return platform.processor() or platform.machine()


def provenance(
    run_dir: str | os.PathLike,
    command: str,
    wall_clock: str | None,
    machine: Mapping[str, Any] | None = None,
    commit: str | None = None,
) -> str:
    """A Markdown block: what was run, where, at which commit, with which libraries.

    ``machine`` describes a run made on another machine (keys ``gpu, cpu, cpu_count, torch,
    cuda, python``, as ``benchmarks/gpu_measure.sh`` writes them to machine.json) and ``commit``
    the commit it ran; by default both are this machine's and ``run_dir``'s.
    """
    # Imported here, only to report their versions: the rest of the module needs none of them.
    import numpy
    import snakemake
    import torch

    run_dir = Path(run_dir)
    if commit is None:
        commit = _command_output("git", "rev-parse", "--short", "HEAD", cwd=run_dir).strip()
        dirty = _command_output("git", "status", "--porcelain", "--untracked-files=no", cwd=run_dir)
        commit = f"`{commit}`" + (" (with uncommitted changes)" if dirty.strip() else "")
    else:
        commit = f"`{commit}`"
    if machine is None:
        gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
        machine = {
            "gpu": gpu,
            "cpu": _cpu_model(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "python": platform.python_version(),
            "numpy": numpy.__version__,
            "snakemake": snakemake.__version__,
        }
    gpu = f"CUDA GPU: {machine['gpu']} (CUDA {machine['cuda']})" if machine["gpu"] else "no GPU"
    libraries = ", ".join(
        f"{name} {machine[key]}"
        for name, key in (("Python", "python"), ("torch", "torch"), ("numpy", "numpy"))
        + (("snakemake", "snakemake"),)
        if machine.get(key)
    )
    lines = [
        f"- command: `{command}`",
        f"- commit: {commit}",
        f"- machine: {machine['cpu_count']} CPU cores ({machine['cpu']}), {gpu}",
        f"- {libraries}",
        f"- published: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
    ]
    if wall_clock:
        lines.append(f"- wall-clock of the whole run: {wall_clock}")
    return "\n".join(lines) + "\n"


def publish(
    run_dir: str | os.PathLike,
    name: str,
    command: str,
    wall_clock: str | None = None,
    dest_root: str | os.PathLike | None = None,
    extra: Sequence[str] = (),
    machine: Mapping[str, Any] | None = None,
    commit: str | None = None,
) -> Path:
    """Copy the run's figures and tables to ``<dest_root>/<name>/`` and write its costs and
    provenance there; returns that folder. ``dest_root`` defaults to ``<run_dir>/results/readme``.

    ``extra`` are more glob patterns relative to ``run_dir`` (e.g. ``results/gmm/eval/*.json``, the
    per-run metrics of a partial run that has no table yet), copied beside the rest.
    ``machine`` and ``commit`` describe a run made elsewhere (see :func:`provenance`).
    """
    run_dir = Path(run_dir)
    dest = Path(dest_root or run_dir / "results" / "readme") / name
    figures = sorted((run_dir / FIGURES).glob("*.png"))
    tables = sorted(p for p in (run_dir / TABLES).glob("*") if p.suffix in (".csv", ".md"))
    extras = sorted(p for pattern in extra for p in run_dir.glob(pattern) if p.is_file())
    if not figures and not tables and not extras:
        raise FileNotFoundError(f"{run_dir} has no {FIGURES}/*.png or {TABLES}/*: run it first")
    dest.mkdir(parents=True, exist_ok=True)
    for source in figures + tables + extras:
        with atomic_path(dest / source.name) as tmp:
            shutil.copyfile(source, tmp)
    costs = job_costs(run_dir)
    if len(costs):  # a run without benchmark files gets no empty cost table
        total = pd.DataFrame(
            [{"job": "total (sum over jobs)", **costs.drop(columns="job").sum().to_dict()}]
        )
        total["max_rss_mb"] = costs["max_rss_mb"].max()
        shown = pd.concat([costs, total], ignore_index=True)
        markdown = shown.to_markdown(index=False, floatfmt=".1f")
        write_table(shown, dest / "costs.csv", dest / "costs.md", markdown)
    with atomic_path(dest / "provenance.md") as tmp:
        tmp.write_text(provenance(run_dir, command, wall_clock, machine, commit))
    return dest


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python3 -m replicate.publish --run-dir DIR --name NAME --command CMD``."""
    parser = argparse.ArgumentParser(
        prog="python3 -m replicate.publish",
        description=__doc__.split("\nExample:", 1)[0],  # the doctest is for pytest, not --help
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--run-dir", default=".", help="where the run wrote results/")
    parser.add_argument("--name", required=True, help="folder name below results/readme/")
    parser.add_argument("--command", required=True, help="the command that made the run")
    parser.add_argument("--wall-clock", help="the whole run's wall-clock time, as measured")
    parser.add_argument("--dest-root", help="default: RUN_DIR/results/readme")
    parser.add_argument(
        "--extra", action="append", default=[], help="another glob under RUN_DIR to copy"
    )
    parser.add_argument(
        "--machine-json", help="machine.json of a run made elsewhere (gpu_measure.sh writes it)"
    )
    parser.add_argument("--commit", help="the commit a run made elsewhere ran")
    args = parser.parse_args(argv)
    machine = json.loads(Path(args.machine_json).read_text()) if args.machine_json else None
    dest = publish(
        args.run_dir,
        args.name,
        args.command,
        args.wall_clock,
        args.dest_root,
        args.extra,
        machine,
        args.commit,
    )
    print(f"published to {dest}")


if __name__ == "__main__":
    main()
