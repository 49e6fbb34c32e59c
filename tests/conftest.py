"""Fixtures shared by every test folder."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
REAL_MAIL = REPO.parent / "shared" / "real-mail"


@pytest.fixture
def real_mail_dir() -> Path:
    """The shared corpus of 334 real messages (kept outside the project, never copied in)."""
    if not REAL_MAIL.is_dir():
        pytest.fail(f"the shared real-mail corpus is missing at {REAL_MAIL}")
    return REAL_MAIL
