"""The example policy shipped in the package, and writing it where a first start looks for a policy.

The example (``gateway/data/default-policy.yaml``) implements the guidelines for a fictional
committee on example.org. It is package data, not a file in the working tree, so that an admin's
edits to their own policy never change what the project ships or tests: the first start of the
embedded default writes a copy to ``policy.path`` (``policies/default.yaml`` beside the shipped
settings) for the admin to edit.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from importlib import resources
from pathlib import Path

from gateway.errors import ConfigError

EXAMPLE_POLICY_FILE = "default-policy.yaml"


def example_policy_text() -> str:
    """The shipped example policy, as YAML text."""
    return resources.files("gateway").joinpath("data", EXAMPLE_POLICY_FILE).read_text(encoding="utf-8")


def write_example_policy(path: Path) -> bool:
    """Write the example to ``path`` unless a file is there already; whether it was written.

    Written to a temporary name and linked into place, so a crash never leaves half a policy and a
    policy that appeared meanwhile is never replaced. Mode 0640: a policy names protected people.
    """
    if path.exists():
        return False
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(example_policy_text())
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the example policy there: {exc.strerror}") from None
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink()
    return True


def missing_policy_hint(path: Path) -> str:
    """What to do about a policy file that does not exist."""
    return (
        f"{path}: policy file not found. Write the shipped example there with "
        f"`conduct-gateway config example-policy > {path}` and edit it (the first start without an "
        "upstream writes it by itself)."
    )
