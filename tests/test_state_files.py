"""gateway.state.files: atomic writes sync the file and its folder, modes are exact, locks exclude."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.state import files


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, int]]]:
    """Every fsync made, as (kind, inode): kind is "dir" for a folder, "file" otherwise."""
    calls: list[tuple[str, int]] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        info = os.fstat(fd)
        calls.append(("dir" if stat.S_ISDIR(info.st_mode) else "file", info.st_ino))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    yield calls


def test_atomic_write_fsyncs_the_file_then_its_folder(tmp_path: Path, synced: list[tuple[str, int]]) -> None:
    target = tmp_path / "record.json"
    files.atomic_write(target, b"{}")
    assert target.read_bytes() == b"{}"
    assert [kind for kind, _ in synced] == ["file", "dir"]
    assert synced[0][1] == target.stat().st_ino  # the renamed temporary file is the one fsynced
    assert synced[1][1] == tmp_path.stat().st_ino


def test_atomic_write_can_leave_the_folder_fsync_to_the_caller(
    tmp_path: Path, synced: list[tuple[str, int]]
) -> None:
    files.atomic_write(tmp_path / "a", b"1", sync_directory=False)
    assert [kind for kind, _ in synced] == ["file"]


def test_atomic_write_replaces_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "cases"
    target.write_bytes(b"old")
    files.atomic_write(target, b"new")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cases"]


def test_a_failed_atomic_write_keeps_the_old_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "cases"
    target.write_bytes(b"old")

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        files.atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cases"]


@given(data=st.binary(max_size=200_000))
def test_atomic_write_stores_any_bytes(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    target = tmp_path_factory.mktemp("w") / "blob"
    files.atomic_write(target, data)
    assert target.read_bytes() == data


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077], ids=["umask-000", "umask-022", "umask-077"])
def test_files_are_private_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        files.atomic_write(tmp_path / "atomic", b"x")
        files.create_new(tmp_path / "key", b"k")
        files.touch_private(tmp_path / "db")
        files.make_private_directory(tmp_path / "a" / "b")
    finally:
        os.umask(previous)
    for name in ("atomic", "key"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE((tmp_path / "db").stat().st_mode) & 0o077 == 0
    assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o700


def test_atomic_write_keeps_a_mode_asked_for(tmp_path: Path) -> None:
    files.atomic_write(tmp_path / "policy.yaml", b"x", mode=0o640)
    assert stat.S_IMODE((tmp_path / "policy.yaml").stat().st_mode) == 0o640


def test_make_private_directory_tightens_an_existing_folder(tmp_path: Path) -> None:
    folder = tmp_path / "holds"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    files.make_private_directory(folder)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_create_new_never_overwrites_and_fsyncs_the_folder(
    tmp_path: Path, synced: list[tuple[str, int]]
) -> None:
    key = tmp_path / "key"
    files.create_new(key, b"first")
    assert [kind for kind, _ in synced] == ["file", "dir"]
    with pytest.raises(FileExistsError):
        files.create_new(key, b"second")
    assert key.read_bytes() == b"first"


def test_a_lock_excludes_a_second_holder_until_released(tmp_path: Path) -> None:
    path = tmp_path / ".lock"
    with files.locked(path), pytest.raises(BlockingIOError):
        files.acquire_lock(path, blocking=False)
    fd = files.acquire_lock(path, blocking=False)
    os.close(fd)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_lock_excludes_another_thread(tmp_path: Path) -> None:
    path = tmp_path / ".lock"
    inside = threading.Event()
    order: list[str] = []

    def second() -> None:
        inside.wait()
        with files.locked(path):
            order.append("second")

    thread = threading.Thread(target=second)
    thread.start()
    with files.locked(path):
        inside.set()
        thread.join(timeout=0.2)  # it cannot get in while we hold the lock
        order.append("first")
    thread.join()
    assert order == ["first", "second"]


def test_write_all_writes_everything(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        files.write_all(fd, b"abc" * 100_000)
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == b"abc" * 100_000
