"""Fixtures shared by every test folder, and where the real-mail corpus comes from.

The robustness and false-positive tests read a corpus of real messages kept outside the project
(``../shared/real-mail`` beside the repository, or the folder named by ``GATEWAY_TEST_REAL_MAIL``;
not ``CONDUCT_GATEWAY_...``: the gateway reads every variable with that prefix as a setting).
A clone without it still passes: those tests are deselected and the summary says so in one line,
while ``tests/policy/test_synthetic_mail.py`` keeps the same protections covered with a corpus the
project builds itself. CI sets ``GATEWAY_TEST_REQUIRE_REAL_MAIL=1``, which turns a missing corpus
into a failed run instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# The private PostgreSQL cluster and a fresh database per test (see tests/postgresql.py).
from tests.postgresql import pg_cluster, pg_database, pg_db, pg_empty_database  # noqa: E402, F401

# The policy the project ships (package data). Tests read this, never policies/default.yaml: that is
# the admin's own copy, written at first start and edited freely.
SHIPPED_POLICY = REPO / "gateway" / "data" / "default-policy.yaml"
REAL_MAIL = Path(os.environ.get("GATEWAY_TEST_REAL_MAIL") or REPO.parent / "shared" / "real-mail")
_REQUIRED = os.environ.get("GATEWAY_TEST_REQUIRE_REAL_MAIL", "") not in ("", "0")
# CI (.ci/run) runs as root on a machine that can mount a tmpfs and take a burst of connections:
# there, a test this machine "cannot run" is a broken CI machine, not a reason to skip.
_MACHINE_REQUIRED = os.environ.get("GATEWAY_TEST_REQUIRE_MACHINE", "") not in ("", "0")
_deselected_for_corpus: list[int] = []


def real_mail_available() -> bool:
    return REAL_MAIL.is_dir() and any(REAL_MAIL.rglob("*.eml"))


def machine_cannot(reason: str) -> NoReturn:
    """This machine cannot run the test: skip it saying why, or fail where CI requires it to run."""
    if _MACHINE_REQUIRED:
        pytest.fail(f"GATEWAY_TEST_REQUIRE_MACHINE is set, but {reason}")
    pytest.skip(reason)


@contextlib.contextmanager
def mounted_tmpfs(path: Path, *, size: str, inodes: int) -> Iterator[Path]:
    """A tmpfs of ``size`` bytes and ``inodes`` inodes mounted on ``path`` (root only), for tests that
    fill a real file system; see :func:`machine_cannot` where this machine cannot mount one."""
    path.mkdir(parents=True, exist_ok=True)
    mount = shutil.which("mount")
    if mount is None or os.geteuid() != 0:
        machine_cannot("mounting a small tmpfs needs root and the mount command")
    result = subprocess.run(
        [mount, "-t", "tmpfs", "-o", f"size={size},nr_inodes={inodes},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        machine_cannot(f"cannot mount a small tmpfs here: {result.stderr.strip() or result.returncode}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


@pytest.fixture
def real_mail_dir() -> Path:
    """The shared corpus of real messages (kept outside the project, never copied in)."""
    if not REAL_MAIL.is_dir():
        pytest.fail(f"the shared real-mail corpus is missing at {REAL_MAIL}")
    return REAL_MAIL


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without the corpus, leave out the tests that read it (or stop, when CI requires it)."""
    if real_mail_available():
        return
    if _REQUIRED:
        raise pytest.UsageError(
            f"GATEWAY_TEST_REQUIRE_REAL_MAIL is set but the real-mail corpus is missing at {REAL_MAIL}"
        )
    needing = [item for item in items if "real_mail_dir" in getattr(item, "fixturenames", ())]
    if needing:
        config.hook.pytest_deselected(items=needing)
        items[:] = [item for item in items if item not in needing]
        _deselected_for_corpus.append(len(needing))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _deselected_for_corpus:
        terminalreporter.write_line(
            f"real-mail set not run: no corpus at {REAL_MAIL} ({_deselected_for_corpus[0]} tests left out; "
            "set GATEWAY_TEST_REAL_MAIL to its folder to run them)"
        )
