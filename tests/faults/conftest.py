"""The fault suite's tools: the accounting check run after every scenario, a tmpfs, a threaded upstream.

The accounting check is the suite's one verdict: every message the gateway accepted (answered 250)
reached the upstream, or is still in the spool (pending, or bounced with a DSN); nothing else reached
the upstream; and no message arrived more often than the documented bound allows (once, plus one
extra copy per crash between the upstream's 250 and the record).
"""

from __future__ import annotations

import asyncio
import functools
import sys
import threading
import time
from collections import Counter
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from gateway.fake_upstream import FakeMessage, FakeUpstream
from gateway.settings import DeliverySettings
from gateway.state.spool import QueueState, Spool, SpoolEnvelope
from tests.conftest import mounted_tmpfs
from tests.relay.conftest import eventually as relay_eventually
from tests.relay.conftest import running as running  # re-exported for the fault tests

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@dataclass(frozen=True)
class Ledger:
    """What the accounting found, for assertions beyond the check itself."""

    copies: Counter[str]  # token -> copies that reached the upstream
    states: dict[str, QueueState | None]  # token -> where the spool has it
    dsns: int


def spool_states(spool_root: Path, tokens: Iterable[str]) -> dict[str, QueueState | None]:
    """Where each message (found by the unique token in its content) is in the spool, if anywhere."""
    found: dict[str, QueueState | None] = dict.fromkeys(tokens)
    for state in QueueState:
        folder = spool_root / state.value
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            data = path.read_bytes()
            for token in found:
                if token.encode() in data:
                    found[token] = state
    return found


def check_accounting(
    accepted: Iterable[str],
    arrived: Iterable[FakeMessage],
    spool_root: Path,
    *,
    extra_copies_allowed: int = 0,
    refused: Iterable[str] = (),
) -> Ledger:
    """Assert the accounting of a scenario; ``accepted`` and ``refused`` are the unique tokens of the
    messages the gateway answered 250, and of those it refused (which must never arrive).
    ``extra_copies_allowed``: the README's bound for the scenario (one per crash between the
    upstream's 250 and the record, one per reply to the dot that could not be proven)."""
    accepted = list(accepted)
    refused = list(refused)
    copies: Counter[str] = Counter()
    dsns = 0
    for message in arrived:
        if message.mail_from == "":
            dsns += 1
            continue
        tokens = [t for t in (*accepted, *refused) if t.encode() in message.content]
        assert len(tokens) == 1, f"a message reached the upstream that nobody sent: {message.content[:200]!r}"
        copies[tokens[0]] += 1
    states = spool_states(spool_root, accepted)
    for token in refused:
        assert copies[token] == 0, f"{token}: refused at intake, yet it reached the upstream"
    for token in accepted:
        if copies[token] == 0:
            assert states[token] in (QueueState.INCOMING, QueueState.DEFERRED, QueueState.BOUNCED), (
                f"{token}: accepted, never delivered, and not pending in the spool ({states[token]})"
            )
    extra = sum(count - 1 for count in copies.values() if count > 1)
    assert extra <= extra_copies_allowed, f"{extra} extra copies, {extra_copies_allowed} allowed: {copies}"
    return Ledger(copies, states, dsns)


# --- a small filesystem that can be filled -------------------------------------------------------------


tmpfs = mounted_tmpfs  # the shared helper: skips saying why, or fails where CI requires it


# --- an upstream for a gateway in another process ---------------------------------------------------


class ThreadedUpstream:
    """A FakeUpstream on an event loop of its own thread, for a gateway running as a child process
    (the test itself then waits with blocking calls)."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-upstream", daemon=True)
        self.upstream: FakeUpstream

    def __enter__(self) -> ThreadedUpstream:
        self._thread.start()
        self.upstream = self.call(self._make())
        return self

    def __exit__(self, *exc: object) -> None:
        self.call(self.upstream.refuse())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _make(self) -> FakeUpstream:
        upstream = FakeUpstream(**self._options)
        await upstream.listen()
        return upstream

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the upstream's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)


# --- an in-process delivery worker with short timeouts ----------------------------------------------

# Every wait short, so that a stalled upstream costs a fraction of a second, not RFC 5321's minutes.
SHORT_TIMEOUTS = {"timeout": 0.5, "data_timeout": 0.5, "final_reply_timeout": 0.5}
FAST = {"initial_backoff": 0.05, "max_backoff": 0.2, "poll_interval": 0.02}
SENDER = "alice@example.org"


def message_with(token: str) -> bytes:
    return (
        f"From: Alice <{SENDER}>\r\nTo: bob@example.net\r\nSubject: fault test\r\n"
        f"Message-ID: <{token}@example.org>\r\n\r\nBody of {token}.\r\n"
    ).encode()


def delivery_settings(upstream: FakeUpstream, **overrides: Any) -> DeliverySettings:
    values: dict[str, Any] = {"host": upstream.host, "port": upstream.port, "security": "none"}
    values.update(SHORT_TIMEOUTS)
    values.update(overrides)
    return DeliverySettings.model_validate({"upstream": values, **FAST})


async def commit(spool: Spool, count: int, label: str) -> list[str]:
    """Commit ``count`` messages, each with a unique token; return the tokens."""
    tokens = [f"{label}-{number}-{Spool.new_queue_id()}" for number in range(count)]
    for token in tokens:
        envelope = SpoolEnvelope(
            queue_id=Spool.new_queue_id(),
            mail_from=SENDER,
            rcpt_tos=("bob@example.net",),
            authenticated_as=SENDER,
            received_at=time.time(),
        )
        await spool.commit(envelope, message_with(token))
    return tokens


# The relay tests' helpers; faults take longer to settle, so they wait up to 10 s by default.
eventually = functools.partial(relay_eventually, within=10.0)


def settled(spool: Spool) -> bool:
    """Nothing left to deliver."""
    return not spool.pending_ids(QueueState.INCOMING) and not spool.pending_ids(QueueState.DEFERRED)
