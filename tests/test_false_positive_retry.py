"""A "false positive" reply that got a 451 and is sent again is counted and audited once, on either
backend, whichever gateway the retry reaches."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.decision.commit import Committed, SubmissionCommitter
from gateway.decision.policy_screener import PolicyScreener
from gateway.decision.refusal_notice import FALSE_POSITIVE_EVENT
from gateway.decision.screening import Submission
from gateway.errors import SpoolError
from gateway.replies import Reply
from gateway.settings import GatewaySettings
from gateway.state.opening import open_state
from gateway.state.postgresql.opening import close_shared_databases
from gateway.state.spool import FollowUp, SpoolEnvelope
from gateway.state.spool_records import QueueState
from tests.state.conftest import BACKENDS, backend_settings
from tests.test_refusal_notice import ADA, CONDUCT, POLICY, submission


class FailingOnce:
    """The gateway's real queue, but the first commit fails (a full disk, a lost database)."""

    def __init__(self, spool: object) -> None:
        self.spool = spool
        self.failed = False

    async def commit(
        self, envelope: SpoolEnvelope, content: bytes, follow_up: FollowUp | None = None
    ) -> None:
        if not self.failed:
            self.failed = True
            raise SpoolError("disk full")
        await self.spool.commit(envelope, content, follow_up)  # type: ignore[attr-defined]

    async def run_with_next_batch(self, task: Callable[[], None]) -> None:
        await self.spool.run_with_next_batch(task)  # type: ignore[attr-defined]


@pytest.fixture(params=BACKENDS)
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GatewaySettings]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    base = backend_settings(request, tmp_path, str(request.param))
    yield base.model_copy(update={"policy": base.policy.model_copy(update={"path": policy, "workers": 0})})
    close_shared_databases()


def report_to(screener: PolicyScreener) -> bytes:
    """A reply to the refusal notice of a refused message, "false positive" on its first line."""
    refused = submission("JP told us.", queue_id="0001AAAA")
    reply = screener.screen(refused)
    assert isinstance(reply, Reply)
    [notice] = screener.disposition(refused, reply).outgoing
    head = notice.content.split(b"\r\n\r\n", 1)[0].decode()
    fields = dict(line.split(": ", 1) for line in head.splitlines() if ": " in line)
    return (
        f"From: Ada Quill <{ADA}>\r\nTo: <{CONDUCT}>\r\nSubject: Re: {fields['Subject']}\r\n"
        f"Message-ID: <fp1@example.org>\r\nIn-Reply-To: {fields['Message-ID']}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\nFalse positive: JP is our own code.\r\n"
    ).encode()


def finish(committed: Committed) -> Reply:
    return committed.reply


async def test_a_report_retried_after_a_451_is_audited_once_even_through_another_gateway(
    settings: GatewaySettings,
) -> None:
    state = open_state(settings)
    queue = state.queue.open()
    with PolicyScreener.from_settings(settings) as first:
        content = report_to(first)
        committer = SubmissionCommitter(FailingOnce(queue), first)
        refused = await committer.decide(Submission("Q2", ADA, (CONDUCT,), ADA, content), b"", finish)
        assert (refused.code, refused.status) == (451, "4.3.0")
        first.flush_decisions()
    # The client sends the very same reply again: to this gateway after a restart (files), or to
    # another gateway sharing the database (nothing is remembered in memory either way).
    with PolicyScreener.from_settings(settings) as second:
        again = SubmissionCommitter(queue, second)
        accepted = await again.decide(Submission("Q3", ADA, (CONDUCT,), ADA, content), b"", finish)
        assert accepted.code == 250
        second.flush_decisions()
    if settings.state.backend == "files":
        with state.audit.open() as writer:
            state.audit.drain_later(writer)
    reports = [e.fields for e in state.audit.entries() if e.fields["event"] == FALSE_POSITIVE_EVENT]
    assert [(r["reference"], r["queue_id"]) for r in reports] == [("0001AAAA", "Q2")]
    assert queue.locate("Q3") is QueueState.INCOMING and queue.locate("Q2") is None
    # Another reply reporting the same refusal is another report.
    with PolicyScreener.from_settings(settings) as third:
        other = content.replace(b"<fp1@example.org>", b"<fp2@example.org>")
        accepted = await SubmissionCommitter(queue, third).decide(
            Submission("Q4", ADA, (CONDUCT,), ADA, other), b"", finish
        )
        assert accepted.code == 250
        third.flush_decisions()
    assert sum(e.fields["event"] == FALSE_POSITIVE_EVENT for e in state.audit.entries()) == 2
