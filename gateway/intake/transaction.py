"""The end of one DATA: check the message, hand it to the decision layer, count and log the outcome."""

from __future__ import annotations

import dataclasses
import datetime
import email.utils
import functools
import logging
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.decision.commit import Committed
from gateway.decision.screening import Submission
from gateway.intake.events import MessageReceived
from gateway.intake.submission_checks import IntakeRefusal, check_submitted, missing_headers, too_big
from gateway.logs import log_event
from gateway.replies import Reply
from gateway.state.spool_records import new_queue_id

if TYPE_CHECKING:
    from gateway.intake.smtp import SubmissionService

logger = logging.getLogger("gateway.intake.smtp")


@dataclass(frozen=True)
class _Record:
    """What the transaction log line says about a message: never content, subject or recipients."""

    queue_id: str
    member: str
    client: str
    listener: str
    recipients: int
    size: int
    started: float = dataclasses.field(default_factory=time.monotonic)  # the end of DATA


async def answer_message(
    service: SubmissionService,
    message: MessageReceived,
    client: str,
    listener: str,
    tls: object | None,
) -> Reply:
    """Check the message at the door, then let the committer screen, store and answer it.

    ``tls``: the connection's ``ssl_object``, for the Received header (None without TLS).
    """
    member = message.member
    reader = message.data
    queue_id = new_queue_id()
    record = _Record(queue_id, member, client, listener, len(message.rcpt_tos), reader.size)
    content = reader.content
    submission = Submission(
        queue_id=queue_id,
        mail_from=message.mail_from,
        rcpt_tos=message.rcpt_tos,
        authenticated_as=member,
        content=content or b"",
        client_address=client,
    )
    checked = (
        too_big(reader.max_size)
        if reader.too_big or content is None
        else check_submitted(
            content,
            member=member,
            allowed=service.accounts.addresses_of(member),
            max_line_length=service.settings.limits.max_line_length,
        )
    )
    if isinstance(checked, IntakeRefusal):
        refusal = await service.committer.refused_at_intake(submission, checked.reply, checked.code)
        return _finished(service, record, refusal)
    assert content is not None
    hostname = service.settings.server.hostname
    added = missing_headers(checked, hostname, _now())
    submission = dataclasses.replace(submission, content=added + content)
    finish = functools.partial(_finished_commit, service, record)
    return await service.committer.decide(submission, received_header(hostname, queue_id, tls), finish)


def _finished_commit(service: SubmissionService, record: _Record, committed: Committed) -> Reply:
    service.counters.bytes_accepted += committed.accepted_bytes
    return _finished(service, record, committed.reply, committed.recipients)


def _finished(
    service: SubmissionService, record: _Record, reply: Reply, recipients: int | None = None
) -> Reply:
    """Count and log the end of one transaction (one line, metadata only)."""
    service.submission_time.observe(time.monotonic() - record.started)
    counters = service.counters
    if reply.code < 400:
        counters.messages_accepted += 1
        outcome = "queued"
    elif reply.code < 500:
        counters.messages_deferred += 1
        outcome = "deferred"
    else:
        counters.messages_refused += 1
        outcome = "refused"
    log_event(
        logger,
        "smtp.transaction",
        queue_id=record.queue_id,
        member=record.member,
        client=record.client,
        listener=record.listener,
        recipients=record.recipients if recipients is None else recipients,
        size=record.size,
        outcome=outcome,
        reply=reply.code,
        status=reply.status,
    )
    return reply


def received_header(hostname: str, queue_id: str, tls: object | None) -> bytes:
    """The Received trace field of a submission: who took it, how and when; never who sent it from where."""
    # A member's home IP or laptop name must not reach the people a committee writes to.
    protocol = "ESMTPSA" if tls is not None else "ESMTPA"
    cipher_text = ""
    if isinstance(tls, ssl.SSLObject):
        cipher = tls.cipher()
        if cipher is not None:
            cipher_text = f"\r\n\t(using {cipher[1]} with cipher {cipher[0]} ({cipher[2]} bits))"
    stamp = email.utils.format_datetime(_now())
    header = f"Received: by {hostname} (conduct-gateway) with {protocol} id {queue_id}{cipher_text};"
    return f"{header}\r\n\t{stamp}\r\n".encode("ascii", "replace")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
