"""Where each store keeps its files inside ``state_dir``: the one place that names them.

``open_state`` builds every file store from a ``StateLayout``; the older helpers (``audit_dir``,
``ledger_path``, ...) ask it too, so a name under ``state_dir`` is written once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SPOOL_DIRNAME = "spool"
HOLDS_DIRNAME = "holds"
AUDIT_DIRNAME = "audit"
LEDGER_FILENAME = "ledger.sqlite3"
FINGERPRINTS_FILENAME = "fingerprints.sqlite3"
OVERRIDES_FILENAME = "overrides.sqlite3"
FINGERPRINT_KEY_FILENAME = "fingerprints.key"
REGISTRY_DIRNAME = "registry"
REGISTRY_NAME = "cases.registry"
TLS_DIRNAME = "tls"
# Audit entries left by a CLI action while a gateway holds the trail ("append later").
AUDIT_LATER_DIRNAME = "audit-later"
# The same, as written before there was one mechanism: still drained, never written.
HOLDS_OUTBOX_DIRNAME = "audit-outbox"  # case actions and CLI review decisions, in holds/
EXPUNGE_PENDING_DIRNAME = "expunge-pending"  # expunge's audit part, in audit/


@dataclass(frozen=True)
class StateLayout:
    """The paths of the file stores under one ``state_dir``."""

    root: Path

    @property
    def spool(self) -> Path:
        return self.root / SPOOL_DIRNAME

    @property
    def holds(self) -> Path:
        return self.root / HOLDS_DIRNAME

    @property
    def audit(self) -> Path:
        return self.root / AUDIT_DIRNAME

    @property
    def audit_later(self) -> Path:
        # Beside the trail, not in it: the audit folder holds only the trail's own files.
        return self.root / AUDIT_LATER_DIRNAME

    @property
    def holds_outbox(self) -> Path:
        """Where CLI audit entries waited before ``audit_later`` (drained, never written)."""
        return self.holds / HOLDS_OUTBOX_DIRNAME

    @property
    def expunge_pending(self) -> Path:
        """Where expunge requests waited before ``audit_later`` (drained, never written)."""
        return self.audit / EXPUNGE_PENDING_DIRNAME

    @property
    def ledger(self) -> Path:
        return self.root / LEDGER_FILENAME

    @property
    def fingerprints(self) -> Path:
        return self.root / FINGERPRINTS_FILENAME

    @property
    def overrides(self) -> Path:
        return self.root / OVERRIDES_FILENAME

    @property
    def fingerprint_key(self) -> Path:
        return self.root / FINGERPRINT_KEY_FILENAME

    @property
    def registry(self) -> Path:
        """The case registry's default place (``registry.path`` overrides it)."""
        return self.root / REGISTRY_DIRNAME / REGISTRY_NAME

    @property
    def tls(self) -> Path:
        return self.root / TLS_DIRNAME
