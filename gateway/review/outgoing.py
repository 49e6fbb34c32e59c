"""The review's own messages: a letter as a notice to the sender, the release, and their spool commit."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from gateway.logs import log_event
from gateway.mail.messages import Outgoing
from gateway.mail.notices import Letter, NoticeRefused, Notices
from gateway.mail.verdict_replies import APPROVED_HEADER
from gateway.policy.reviewers import Member
from gateway.review.letters import approvers
from gateway.state.holds import HoldRecord
from gateway.state.holds_port import HoldsPort
from gateway.state.ports import QueuePort
from gateway.state.spool import SpoolEnvelope

log = logging.getLogger("gateway.review")


def to_sender(notices: Notices, letter: Letter) -> list[Outgoing]:
    """``letter`` as a notice, or nothing (logged) when its recipient is outside the committee."""
    try:
        notice = notices.outgoing(letter)
    except NoticeRefused:
        log_event(
            log,
            "notice-not-sent",
            logging.WARNING,
            kind=letter.kind.value,
            reason="sender outside committee",
        )
        return []
    return [notice] if notice is not None else []


def release_message(store: HoldsPort, record: HoldRecord, approver: Member, release_id: str) -> Outgoing:
    """The held message as approved: its release bytes under the approver header."""
    content = store.release_content(record.reference)
    header = f"{APPROVED_HEADER}: {approvers(record, approver)}\r\n".encode()
    return Outgoing(
        queue_id=release_id,
        mail_from=record.sender,
        rcpt_tos=record.release_rcpt_tos,
        content=header + content,
        essential=True,
        authenticated_as=record.sender_account,
    )


async def spool_outgoing(spool: QueuePort, messages: Sequence[Outgoing]) -> list[str]:
    """Commit gateway messages to the spool together; the queue ids of those that failed (logged)."""
    now = time.time()
    results = await asyncio.gather(
        *(
            spool.commit(
                SpoolEnvelope(
                    queue_id=m.queue_id,
                    mail_from=m.mail_from,
                    rcpt_tos=m.rcpt_tos,
                    authenticated_as=m.authenticated_as,
                    received_at=now,
                ),
                m.content,
            )
            for m in messages
        ),
        return_exceptions=True,
    )
    failed = []
    for message, result in zip(messages, results, strict=True):
        if isinstance(result, BaseException):
            failed.append(message.queue_id)
            log_event(
                log, "outgoing-store-failed", logging.ERROR, queue_id=message.queue_id, error=str(result)
            )
    return failed
