"""What a test does on a machine that cannot run it: skip saying why, or fail where CI requires it."""

from __future__ import annotations

import pytest

import tests.conftest as shared


@pytest.mark.parametrize(
    ("required", "outcome"), [(False, pytest.skip.Exception), (True, pytest.fail.Exception)]
)
def test_machine_cannot_skips_with_the_reason_unless_ci_requires_it(
    monkeypatch: pytest.MonkeyPatch, required: bool, outcome: type[BaseException]
) -> None:
    monkeypatch.setattr(shared, "_MACHINE_REQUIRED", required)
    with pytest.raises(outcome, match="needs root"):
        shared.machine_cannot("mounting a small tmpfs needs root")
