"""replicate.files: outputs written atomically, with the usual permissions."""

from __future__ import annotations

import os
import stat

import pytest

from replicate.files import atomic_path


def test_atomic_path_leaves_nothing_when_the_block_fails(tmp_path) -> None:
    target = tmp_path / "table.csv"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_replaces_an_old_file_only_on_success(tmp_path) -> None:
    target = tmp_path / "table.csv"
    target.write_text("old")
    with atomic_path(target) as tmp:
        tmp.write_text("new")
        assert target.read_text() == "old"
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_atomic_path_gives_outputs_the_usual_permissions(tmp_path) -> None:
    target = tmp_path / "table.csv"
    with atomic_path(target) as tmp:
        tmp.write_text("a,b\n")
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_atomic_path_flushes_the_file_before_the_rename(tmp_path, monkeypatch) -> None:
    """fsync on the file's bytes, then the rename, then fsync on the directory: a power loss
    leaves the old file or the whole new one under the final name, never an empty one."""
    target = tmp_path / "out.json"
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync " + os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    with atomic_path(target) as tmp:
        tmp.write_text("done")
    assert [e.split()[0] for e in events] == ["fsync", "rename", "fsync"], events
    assert events[0].endswith(".tmp.json") and events[2] == f"fsync {tmp_path}"
