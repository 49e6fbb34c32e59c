"""File durability: atomic writes, folder fsyncs, private folders and files, and advisory locks.

Every store that keeps files uses these primitives, so each guarantee is written once:

- ``atomic_write``: a temporary file in the same folder, written in full, fsynced, renamed over the
  target, then the folder fsynced (unless the caller batches the folder fsync itself). A reader
  sees the old content or the new, never half; after a crash the rename is either on disk or not.
- ``create_new``: the same for a file that must not exist yet (keys): refused if it does.
- ``make_private_directory`` (0700, enforced), ``private_directory`` (0700 when created) and
  ``touch_private`` (0600 from its first byte).
- ``locked`` / ``acquire_lock``: an ``flock`` on a lock file, shared by processes and by threads
  (each call opens its own file description, so two threads of one process exclude each other too).

The spool's group commit keeps its own batching (write many files, fsync each, rename each, then one
fsync per folder) but builds it from ``create_and_write`` and ``fsync_directory``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_FOLDER = 0o700


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` (``os.write`` may write less than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fsync_directory(path: str | Path) -> None:
    """Make the folder's entries (names created, renamed or removed in it) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_private_directory(path: Path) -> None:
    """Create ``path`` (and parents) and make it 0700 even if it already existed."""
    path.mkdir(mode=PRIVATE_FOLDER, parents=True, exist_ok=True)
    path.chmod(PRIVATE_FOLDER)


def private_directory(path: Path) -> None:
    """Create ``path`` (and parents) 0700 if missing; an existing folder keeps the mode it has."""
    path.mkdir(mode=PRIVATE_FOLDER, parents=True, exist_ok=True)


def touch_private(path: Path) -> None:
    """Create ``path`` empty and 0600 if it is missing (so a database is private from its first byte)."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE))


def open_private(path: Path, flags: int) -> int:
    """``os.open`` with mode 0600 for a file it creates."""
    return os.open(path, flags | os.O_CLOEXEC, PRIVATE_FILE)


def create_and_write(path: str | Path, chunks: Sequence[bytes], mode: int = PRIVATE_FILE) -> int:
    """Create ``path`` (it must not exist) with exactly ``mode``, write ``chunks``; the open fd.

    Not flushed: the caller fsyncs (the spool flushes a whole batch together) and closes it.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # the umask may only have removed bits; make the mode exact
        views = [memoryview(chunk) for chunk in chunks if chunk]
        while views:
            written = os.writev(fd, views)
            while views and written >= len(views[0]):
                written -= len(views[0])
                views.pop(0)
            if views and written:
                views[0] = views[0][written:]
    except BaseException:
        os.close(fd)
        raise
    return fd


def atomic_write(path: Path, data: bytes, *, mode: int = PRIVATE_FILE, sync_directory: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically and durably (see the module docstring).

    ``sync_directory=False`` leaves the folder fsync to the caller, who makes several renames in one
    folder durable with one ``fsync_directory``. Raises ``OSError``; no temporary file is left behind.
    """
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = create_and_write(temporary, (data,), mode)
    try:
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    os.close(fd)
    try:
        temporary.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    if sync_directory:
        fsync_directory(path.parent)


def create_new(path: Path, data: bytes, *, mode: int = PRIVATE_FILE) -> None:
    """Create ``path`` holding ``data``, durably; ``FileExistsError`` if it already exists."""
    fd = create_and_write(path, (data,), mode)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_directory(path.parent)


def acquire_lock(path: Path, *, blocking: bool = True) -> int:
    """Open ``path`` (0600) and take an exclusive ``flock`` on it; the fd holds the lock until closed.

    ``blocking=False`` raises ``BlockingIOError`` at once if another holder has it.
    """
    fd = open_private(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def locked(path: Path, *, blocking: bool = True) -> Iterator[int]:
    """Hold an exclusive lock on ``path`` for the ``with`` block (see ``acquire_lock``)."""
    fd = acquire_lock(path, blocking=blocking)
    try:
        yield fd
    finally:
        os.close(fd)  # closing releases the lock
