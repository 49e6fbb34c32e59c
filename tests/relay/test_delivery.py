"""Delivery to an upstream: exact bytes, reuse, retries, per-recipient results, DSNs, expiry, TLS, AUTH."""

from __future__ import annotations

import asyncio
import logging
from email import message_from_bytes, policy
from pathlib import Path
from typing import NoReturn

import pytest

from gateway.delivery.worker import DeliveryWorker
from gateway.errors import ConfigError, SpoolError
from gateway.settings import UpstreamSettings
from gateway.state.ports import QueuePort
from gateway.state.postgresql.database import Database
from gateway.state.postgresql.queue import PostgresQueue
from gateway.state.spool import QueueState, Spool
from gateway.testing import CapturedMessage, CaptureUpstream

from .conftest import (
    SENDER,
    Certificates,
    FakeClock,
    delivery_settings,
    envelope,
    eventually,
    message,
    running,
    upstream_settings,
)


@pytest.fixture(params=["files", "postgresql"])
def spool(request: pytest.FixtureRequest, tmp_path: Path) -> QueuePort:
    """Every delivery test runs on both backends (those about spool files on the files one only)."""
    if request.param == "files":
        return Spool(tmp_path / "state" / "spool")
    database: Database = request.getfixturevalue("pg_db")
    return PostgresQueue(database.connection)


def another(spool: QueuePort) -> QueuePort:
    """The same queue as another process sees it (the CLI, a restarted gateway)."""
    if isinstance(spool, Spool):
        return Spool(spool.root)
    assert isinstance(spool, PostgresQueue)
    return PostgresQueue(spool.connect)


FILES_ONLY = pytest.mark.parametrize("spool", ["files"], indirect=True)


def is_dsn(captured: CapturedMessage) -> bool:
    return captured.mail_from == ""


async def test_delivers_the_exact_bytes_and_moves_the_message_to_done(
    spool: Spool, upstream: CaptureUpstream
) -> None:
    body = "caf\u00e9\r\n.a line starting with a dot\r\n..two dots\r\n.\r\nend"
    content = message(body=body)
    sent = envelope(rcpt_tos=("bob@example.org", "carol@example.org"))
    await spool.commit(sent, content)
    async with running(spool, delivery_settings(upstream_settings(upstream))):
        [captured] = await upstream.wait_for(1)
        await eventually(lambda: spool.locate(sent.queue_id) is QueueState.DONE)
    assert captured.content == content
    assert captured.mail_from == SENDER
    assert captured.rcpt_tos == ("bob@example.org", "carol@example.org")
    assert f"SIZE={len(content)}" in captured.mail_options
    assert "BODY=8BITMIME" in captured.mail_options
    assert "SMTPUTF8" not in captured.mail_options


async def test_international_addresses_use_smtputf8(spool: Spool, upstream: CaptureUpstream) -> None:
    sent = envelope(rcpt_tos=("j\u00fcrgen@b\u00fccher.example",))
    await spool.commit(sent, message())
    async with running(spool, delivery_settings(upstream_settings(upstream))):
        [captured] = await upstream.wait_for(1)
    assert captured.rcpt_tos == ("j\u00fcrgen@b\u00fccher.example",)
    assert "SMTPUTF8" in captured.mail_options


async def test_duplicate_recipients_get_one_copy(spool: Spool, upstream: CaptureUpstream) -> None:
    await spool.commit(envelope(rcpt_tos=("bob@example.org", "bob@example.org")), message())
    async with running(spool, delivery_settings(upstream_settings(upstream))):
        [captured] = await upstream.wait_for(1)
    assert captured.rcpt_tos == ("bob@example.org",)


async def test_connections_are_reused_between_messages(spool: Spool, upstream: CaptureUpstream) -> None:
    settings = delivery_settings(upstream_settings(upstream), concurrency=1)
    async with running(spool, settings) as worker:
        for number in range(5):
            await spool.commit(envelope(), message(subject=f"number {number}"))
            await upstream.wait_for(number + 1)
        assert worker.statistics().connections_open == 1
    assert upstream.sessions == 1
    assert {m.session for m in upstream.messages} == {1}
    assert worker.statistics().connections_open == 0


async def test_concurrency_is_bounded(spool: Spool, upstream: CaptureUpstream) -> None:
    upstream.data_delay = 0.1
    settings = delivery_settings(upstream_settings(upstream), concurrency=3)
    seen: list[int] = []
    async with running(spool, settings) as worker:
        await asyncio.gather(*(spool.commit(envelope(), message()) for _ in range(9)))
        while upstream.received < 9:
            seen.append(worker.statistics().sending)
            await asyncio.sleep(0.01)
    assert max(seen) == 3
    assert upstream.sessions == 3


async def test_upstream_down_for_a_while_then_up_delivers_everything_once(
    spool: Spool, upstream: CaptureUpstream
) -> None:
    await upstream.go_down()
    sent = [envelope() for _ in range(5)]
    async with running(spool, delivery_settings(upstream_settings(upstream))) as worker:
        for e in sent:
            await spool.commit(e, message(subject=e.queue_id))
        await eventually(lambda: worker.statistics().outcomes_total["deferred"] >= 10)
        # Attempts are counted when made, their records land a moment later (a batch of their own).
        await eventually(lambda: spool.statistics().messages["deferred"] == 5)
        [entry, *_] = spool.entries(QueueState.DEFERRED)
        assert entry.status is not None
        assert entry.status.recipients[0].reply.startswith("451 4.4.1 problem connecting to")
        await upstream.come_up()
        await upstream.wait_for(5)
        await eventually(lambda: spool.statistics().messages["done"] == 5)
    assert sorted(m.content for m in upstream.messages) == sorted(message(subject=e.queue_id) for e in sent)


async def test_temporary_failure_then_success(spool: Spool, upstream: CaptureUpstream) -> None:
    upstream.reply_to_data("451 4.3.0 queue full, try later", times=1)
    sent = envelope()
    await spool.commit(sent, message())
    async with running(spool, delivery_settings(upstream_settings(upstream))):
        await upstream.wait_for(1)
        await eventually(lambda: spool.locate(sent.queue_id) is QueueState.DONE)
    entry = spool.find(sent.queue_id)
    assert entry.status is not None and entry.status.attempts == 2
    assert [r.state for r in entry.status.recipients] == ["delivered"]
    assert len(upstream.messages) == 1


async def test_backoff_doubles_up_to_the_maximum(
    spool: Spool, upstream: CaptureUpstream, clock: FakeClock
) -> None:
    upstream.reply_to_rcpt("450 4.2.1 mailbox busy")
    sent = envelope(received_at=clock.now)
    await spool.commit(sent, message())
    settings = delivery_settings(upstream_settings(upstream), initial_backoff=10, max_backoff=35)
    waits = []
    async with running(spool, settings, clock=clock):
        for attempt in range(1, 5):

            def attempted(n: int = attempt) -> bool:
                status = spool.find(sent.queue_id).status
                return status is not None and status.attempts == n

            await eventually(attempted)
            status = spool.find(sent.queue_id).status
            assert status is not None
            waits.append(round(status.next_attempt_at - clock.now, 3))
            await asyncio.sleep(0.05)  # nothing is tried before its time
            assert spool.find(sent.queue_id).status == status
            clock.advance(waits[-1])
    assert waits == [10, 20, 35, 35]
    assert upstream.messages == []


async def test_permanent_refusal_sends_the_sender_a_dsn(spool: Spool, upstream: CaptureUpstream) -> None:
    upstream.reply_to_rcpt("550 5.1.1 <bob@example.org>: no such user", recipient="bob@example.org")
    sent = envelope()
    await spool.commit(sent, message(subject="Quarterly report", body="TOP SECRET BODY TEXT"))
    async with running(spool, delivery_settings(upstream_settings(upstream))) as worker:
        [dsn] = await upstream.wait_for(1)
        await eventually(lambda: spool.locate(sent.queue_id) is QueueState.BOUNCED)
        await eventually(lambda: spool.statistics().messages["done"] == 1)  # the DSN itself
    assert (dsn.mail_from, dsn.rcpt_tos) == ("", (SENDER,))
    assert b"TOP SECRET BODY TEXT" not in dsn.content
    parsed = message_from_bytes(dsn.content, policy=policy.default)
    assert parsed.get_content_type() == "multipart/report"
    assert parsed.get_param("report-type") == "delivery-status"
    assert parsed["Auto-Submitted"] == "auto-replied"
    assert parsed["To"].addresses[0].addr_spec == SENDER
    assert parsed["In-Reply-To"] == "<original-1@example.org>"
    parts = list(parsed.iter_parts())
    assert [p.get_content_type() for p in parts] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]
    report = parts[1].as_bytes().decode()
    assert "Final-Recipient: rfc822; bob@example.org" in report
    assert "Action: failed" in report and "Status: 5.1.1" in report
    assert "Diagnostic-Code: smtp; 550 5.1.1 <bob@example.org>: no such user" in report
    assert b"Subject: Quarterly report" in parts[2].as_bytes()
    assert "bob@example.org" in parts[0].get_content()
    status = spool.find(sent.queue_id).status
    assert status is not None and status.recipients[0].reported and status.dsn_count == 1
    assert worker.statistics().dsns_total == 1


async def test_partial_refusal_delivers_retries_and_reports_each_recipient(
    spool: Spool, upstream: CaptureUpstream
) -> None:
    upstream.reply_to_rcpt("450 4.2.1 try again later", recipient="later@example.org", times=1)
    upstream.reply_to_rcpt("550 5.1.1 no such user", recipient="gone@example.org")
    sent = envelope(rcpt_tos=("ok@example.org", "later@example.org", "gone@example.org"))
    await spool.commit(sent, message())
    async with running(spool, delivery_settings(upstream_settings(upstream))):
        await upstream.wait_for(3)
        await eventually(lambda: spool.locate(sent.queue_id) is QueueState.BOUNCED)
    originals = [m for m in upstream.messages if not is_dsn(m)]
    [dsn] = [m for m in upstream.messages if is_dsn(m)]
    assert [m.rcpt_tos for m in originals] == [("ok@example.org",), ("later@example.org",)]
    assert b"gone@example.org" in dsn.content
    assert b"ok@example.org" not in dsn.content and b"later@example.org" not in dsn.content
    status = spool.find(sent.queue_id).status
    assert status is not None
    assert {r.address: r.state for r in status.recipients} == {
        "ok@example.org": "delivered",
        "later@example.org": "delivered",
        "gone@example.org": "failed",
    }


async def test_a_spooled_recipient_that_would_smuggle_a_command_is_failed_not_sent(
    spool: Spool, upstream: CaptureUpstream
) -> None:
    # Intake never spools such an address; a damaged or hand-edited entry must still not inject.
    smuggling = "evil@example.org> NOTIFY=NEVER\r\nRCPT TO:<other@example.org"
    sent = envelope(rcpt_tos=("ok@example.org", smuggling, "two words@example.org"))
    await spool.commit(sent, message())
    async with running(spool, delivery_settings(upstream_settings(upstream))):
        await upstream.wait_for(2)  # the message to the valid recipient, and the DSN
        await eventually(lambda: spool.locate(sent.queue_id) is QueueState.BOUNCED)
    [original] = [m for m in upstream.messages if not is_dsn(m)]
    assert original.rcpt_tos == ("ok@example.org",)
    status = spool.find(sent.queue_id).status
    assert status is not None
    states = {r.address: (r.state, r.reply[:3]) for r in status.recipients}
    assert states == {
        "ok@example.org": ("delivered", "250"),
        smuggling: ("failed", "553"),
        "two words@example.org": ("failed", "553"),
    }


async def test_sender_refused_permanently_reports_every_recipient(
    spool: Spool, upstream: CaptureUpstream
) -> None:
    upstream.reply_to_mail("553 5.7.1 sender not allowed", sender=SENDER)
    sent = envelope(rcpt_tos=("bob@example.org", "carol@example.org"))
    await spool.commit(sent, message())
    async with running(spool, delivery_settings(upstream_settings(upstream))):
        [dsn] = await upstream.wait_for(1)
        await eventually(lambda: spool.locate(sent.queue_id) is QueueState.BOUNCED)
    assert b"Final-Recipient: rfc822; bob@example.org" in dsn.content
    assert b"Final-Recipient: rfc822; carol@example.org" in dsn.content
    assert b"Status: 5.7.1" in dsn.content


async def test_expiry_bounces_with_a_dsn_that_says_so(
    spool: Spool, upstream: CaptureUpstream, clock: FakeClock
) -> None:
    upstream.reply_to_rcpt("451 4.3.0 temporary local problem", recipient="bob@example.org")
    sent = envelope(received_at=clock.now)
    await spool.commit(sent, message())
    settings = delivery_settings(upstream_settings(upstream), retry_lifetime="2d")
    async with running(spool, settings, clock=clock):
        await eventually(lambda: spool.locate(sent.queue_id) is QueueState.DEFERRED)
        clock.advance(2 * 86400 + 1)
        [dsn] = await upstream.wait_for(1)
        await eventually(lambda: spool.locate(sent.queue_id) is QueueState.BOUNCED)
    assert is_dsn(dsn) and dsn.rcpt_tos == (SENDER,)
    assert b"We kept trying for 2 days" in dsn.content
    assert b"Action: failed" in dsn.content and b"Status: 4.3.0" in dsn.content
    assert b"Diagnostic-Code: smtp; 451 4.3.0 temporary local problem" in dsn.content
    status = spool.find(sent.queue_id).status
    assert status is not None and status.recipients[0].expired


async def test_a_message_never_outlives_its_lifetime_between_attempts(
    spool: Spool, upstream: CaptureUpstream, clock: FakeClock
) -> None:
    # The last retry is scheduled at the expiry time, not a max_backoff later.
    upstream.reply_to_rcpt("451 4.3.0 later", recipient="bob@example.org")
    sent = envelope(received_at=clock.now)
    await spool.commit(sent, message())
    settings = delivery_settings(
        upstream_settings(upstream), retry_lifetime=100, initial_backoff=60, max_backoff=3600
    )
    async with running(spool, settings, clock=clock):
        await eventually(lambda: spool.locate(sent.queue_id) is QueueState.DEFERRED)
        clock.advance(60)
        await eventually(lambda: (spool.find(sent.queue_id).status or _never()).attempts == 2)
        status = spool.find(sent.queue_id).status
        assert status is not None and status.next_attempt_at == pytest.approx(sent.received_at + 100)


def _never() -> NoReturn:
    raise AssertionError("no status yet")


async def test_no_dsn_for_a_null_sender_message(
    spool: Spool, upstream: CaptureUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    upstream.reply_to_rcpt("550 5.1.1 no such user")
    sent = envelope(mail_from="")
    await spool.commit(sent, message())
    with caplog.at_level(logging.INFO, logger="gateway.delivery.worker"):
        async with running(spool, delivery_settings(upstream_settings(upstream))) as worker:
            await eventually(lambda: spool.locate(sent.queue_id) is QueueState.BOUNCED)
    assert upstream.received == 0
    assert spool.statistics().commits_total == 1
    assert worker.statistics().dsns_total == 0
    assert f"event=dsn_suppressed queue_id={sent.queue_id} reason=null_sender" in caplog.text


async def test_a_dsn_that_cannot_be_delivered_is_not_answered(
    spool: Spool, upstream: CaptureUpstream
) -> None:
    # The original bounces; its DSN to the sender bounces too; that must be the end of it.
    upstream.reply_to_rcpt("550 5.1.1 no such user")
    sent = envelope()
    await spool.commit(sent, message())
    async with running(spool, delivery_settings(upstream_settings(upstream))):
        await eventually(lambda: spool.statistics().messages["bounced"] == 2)
        await asyncio.sleep(0.1)
    assert spool.statistics().commits_total == 2
    assert upstream.received == 0


async def test_a_restart_does_not_resend_to_recipients_already_delivered(
    spool: Spool, upstream: CaptureUpstream
) -> None:
    upstream.reply_to_rcpt("450 4.2.1 busy", recipient="later@example.org")
    sent = envelope(rcpt_tos=("ok@example.org", "later@example.org"))
    await spool.commit(sent, message())
    settings = delivery_settings(upstream_settings(upstream))
    async with running(spool, settings):
        await upstream.wait_for(1)
        await eventually(lambda: spool.locate(sent.queue_id) is QueueState.DEFERRED)
    upstream.clear_replies()
    async with running(another(spool), settings):
        await upstream.wait_for(2)
        await eventually(lambda: spool.locate(sent.queue_id) is QueueState.DONE)
    assert [m.rcpt_tos for m in upstream.messages] == [("ok@example.org",), ("later@example.org",)]


@FILES_ONLY
async def test_a_corrupt_entry_is_moved_aside_and_the_worker_goes_on(
    spool: Spool, upstream: CaptureUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    bad_id = Spool.new_queue_id()
    spool.path(bad_id, QueueState.INCOMING).write_bytes(b"CGSPOOL/1 5\n{oops\nrest")
    good = envelope()
    with caplog.at_level(logging.ERROR, logger="gateway.state.spool"):
        async with running(spool, delivery_settings(upstream_settings(upstream))) as worker:
            await spool.commit(good, message())
            await upstream.wait_for(1)
            late_bad = Spool.new_queue_id()
            spool.path(late_bad, QueueState.INCOMING).write_bytes(b"\x00" * 10)
            await eventually(lambda: spool.locate(late_bad) is QueueState.CORRUPT)
            await spool.commit(envelope(), message())
            await upstream.wait_for(2)
    assert spool.locate(bad_id) is QueueState.CORRUPT
    assert worker.statistics().outcomes_total["corrupt"] == 2
    assert worker.statistics().errors_total == 0
    assert f"event=spool_corrupt queue_id={bad_id}" in caplog.text


async def test_queue_retry_from_another_process_is_picked_up(spool: Spool, upstream: CaptureUpstream) -> None:
    upstream.reply_to_data("451 4.3.0 later", times=1)
    sent = envelope()
    await spool.commit(sent, message())
    settings = delivery_settings(upstream_settings(upstream), initial_backoff=3600, max_backoff=3600)
    async with running(spool, settings):
        await eventually(lambda: spool.locate(sent.queue_id) is QueueState.DEFERRED)
        another(spool).retry(sent.queue_id)  # what `conduct-gateway queue retry` does
        await upstream.wait_for(1)
        await eventually(lambda: spool.locate(sent.queue_id) is QueueState.DONE)


async def test_stop_lets_the_attempt_in_flight_finish(spool: Spool, upstream: CaptureUpstream) -> None:
    upstream.data_delay = 0.3
    sent = envelope()
    settings = delivery_settings(upstream_settings(upstream))
    worker = DeliveryWorker(spool, settings, hostname="gateway.example.org")
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await spool.commit(sent, message())
    await eventually(lambda: worker.statistics().in_flight == 1)
    stop.set()
    async with asyncio.timeout(5):
        await task
    assert upstream.received == 1
    assert spool.locate(sent.queue_id) is QueueState.DONE


@FILES_ONLY
async def test_only_one_worker_per_spool(spool: Spool, upstream: CaptureUpstream) -> None:
    settings = delivery_settings(upstream_settings(upstream))
    async with running(spool, settings):
        await asyncio.sleep(0.05)
        second = DeliveryWorker(Spool(spool.root), settings, hostname="gateway.example.org")
        with pytest.raises(SpoolError, match="another conduct-gateway process"):
            await second.run(asyncio.Event())


async def test_logged_replies_never_name_recipients(
    spool: Spool, upstream: CaptureUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    upstream.reply_to_rcpt("550 5.1.1 <bob.secret@example.org>: unknown user bob.secret@example.org")
    sent = envelope(rcpt_tos=("bob.secret@example.org",))
    await spool.commit(sent, message())
    with caplog.at_level(logging.INFO, logger="gateway"):
        async with running(spool, delivery_settings(upstream_settings(upstream))):
            await eventually(lambda: spool.locate(sent.queue_id) is QueueState.BOUNCED)
    assert 'reply="550 5.1.1 <address>: unknown user <address>"' in caplog.text
    assert "bob.secret" not in caplog.text
    status = spool.find(sent.queue_id).status
    assert status is not None and "bob.secret@example.org" in status.recipients[0].reply


async def test_one_log_line_per_attempt_without_content(
    spool: Spool, upstream: CaptureUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    upstream.reply_to_data("452 4.3.1 insufficient storage", times=1)
    sent = envelope(rcpt_tos=("bob@example.org", "carol@example.org"))
    content = message(subject="Private matter", body="Nobody may read this")
    await spool.commit(sent, content)
    with caplog.at_level(logging.INFO, logger="gateway"):
        async with running(spool, delivery_settings(upstream_settings(upstream))):
            await upstream.wait_for(1)
            await eventually(lambda: spool.locate(sent.queue_id) is QueueState.DONE)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("event=delivery_attempt")]
    assert len(lines) == 2
    deferred, delivered = lines
    for line in lines:
        assert f"queue_id={sent.queue_id} sender={SENDER} recipients=2 size={len(content)}" in line
    assert "outcome=deferred" in deferred and "reply_code=452" in deferred
    assert 'reply="452 4.3.1 insufficient storage"' in deferred
    assert "outcome=delivered" in delivered and "reply_code=250" in delivered
    assert "Private" not in caplog.text and "Nobody may read" not in caplog.text


# --- TLS and AUTH ---------------------------------------------------------------------------------------


async def test_starttls_with_a_verified_certificate(spool: Spool, certificates: Certificates) -> None:
    async with CaptureUpstream(starttls_context=certificates.server_context) as upstream:
        settings = delivery_settings(
            upstream_settings(upstream, security="starttls", ca_file=certificates.ca_file)
        )
        await spool.commit(envelope(), message())
        async with running(spool, settings):
            [captured] = await upstream.wait_for(1)
    assert captured.tls


async def test_implicit_tls_with_a_verified_certificate(spool: Spool, certificates: Certificates) -> None:
    async with CaptureUpstream(tls_context=certificates.server_context) as upstream:
        settings = delivery_settings(
            upstream_settings(upstream, security="tls", ca_file=certificates.ca_file)
        )
        await spool.commit(envelope(), message())
        async with running(spool, settings):
            [captured] = await upstream.wait_for(1)
    assert captured.tls


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_an_untrusted_certificate_fails_and_defers(
    spool: Spool, certificates: Certificates, security: str
) -> None:
    context = certificates.server_context
    async with CaptureUpstream(
        starttls_context=context if security == "starttls" else None,
        tls_context=context if security == "tls" else None,
    ) as upstream:
        settings = delivery_settings(
            upstream_settings(upstream, security=security, ca_file=certificates.other_ca_file)
        )
        sent = envelope()
        await spool.commit(sent, message())
        async with running(spool, settings):
            await eventually(lambda: spool.locate(sent.queue_id) is QueueState.DEFERRED)
        assert upstream.received == 0
    status = spool.find(sent.queue_id).status
    assert status is not None
    assert "TLS certificate not trusted" in status.recipients[0].reply
    assert status.recipients[0].state == "deferred"


async def test_certificate_checks_can_be_switched_off(spool: Spool, certificates: Certificates) -> None:
    async with CaptureUpstream(starttls_context=certificates.server_context) as upstream:
        settings = delivery_settings(
            upstream_settings(upstream, security="starttls", verify_certificates=False)
        )
        await spool.commit(envelope(), message())
        async with running(spool, settings):
            [captured] = await upstream.wait_for(1)
    assert captured.tls


async def test_starttls_required_but_not_offered_defers(spool: Spool, upstream: CaptureUpstream) -> None:
    settings = delivery_settings(upstream_settings(upstream, security="starttls"))
    sent = envelope()
    await spool.commit(sent, message())
    async with running(spool, settings):
        await eventually(lambda: spool.locate(sent.queue_id) is QueueState.DEFERRED)
    assert upstream.received == 0


async def test_auth_with_password_from_the_environment(spool: Spool, certificates: Certificates) -> None:
    async with CaptureUpstream(
        starttls_context=certificates.server_context, credentials=("relay", "s3cret pass")
    ) as upstream:
        upstream_config = upstream_settings(
            upstream,
            security="starttls",
            ca_file=certificates.ca_file,
            username="relay",
            password_env="RELAY_PW",
        )
        await spool.commit(envelope(), message())
        async with running(spool, delivery_settings(upstream_config), environ={"RELAY_PW": "s3cret pass"}):
            [captured] = await upstream.wait_for(1)
    assert captured.authenticated_as == "relay"


async def test_auth_with_password_from_a_file_over_implicit_tls(
    spool: Spool, certificates: Certificates, tmp_path: Path
) -> None:
    secret = tmp_path / "upstream.password"
    secret.write_text("from a file\n")
    async with CaptureUpstream(
        tls_context=certificates.server_context, credentials=("relay", "from a file")
    ) as upstream:
        upstream_config = upstream_settings(
            upstream, security="tls", ca_file=certificates.ca_file, username="relay", password_file=secret
        )
        await spool.commit(envelope(), message())
        async with running(spool, delivery_settings(upstream_config), environ={}):
            [captured] = await upstream.wait_for(1)
    assert captured.authenticated_as == "relay"


async def test_a_wrong_password_defers(spool: Spool, certificates: Certificates) -> None:
    async with CaptureUpstream(
        starttls_context=certificates.server_context, credentials=("relay", "right")
    ) as upstream:
        upstream_config = upstream_settings(
            upstream, security="starttls", ca_file=certificates.ca_file, username="relay", password_env="PW"
        )
        sent = envelope()
        await spool.commit(sent, message())
        async with running(spool, delivery_settings(upstream_config), environ={"PW": "wrong"}):
            await eventually(lambda: spool.locate(sent.queue_id) is QueueState.DEFERRED)
        assert upstream.received == 0
    status = spool.find(sent.queue_id).status
    assert status is not None and status.recipients[0].reply.startswith("535")


@pytest.mark.parametrize(
    ("overrides", "environ", "problem"),
    [
        pytest.param({"username": "relay", "password_env": "PW"}, {}, "PW is not set", id="env-missing"),
        pytest.param({"username": "relay"}, {}, "no password", id="no-password"),
        pytest.param({"password_env": "PW"}, {"PW": "x"}, "no username", id="no-username"),
        pytest.param(
            {"username": "relay", "password_env": "PW", "password_file": "/nonexistent"},
            {"PW": "x"},
            "not both",
            id="both",
        ),
        pytest.param(
            {"username": "relay", "password_file": "/nonexistent/pw"}, {}, "cannot read", id="file-missing"
        ),
        pytest.param({"ca_file": "/nonexistent/ca.pem", "security": "tls"}, {}, "ca_file", id="bad-ca"),
        pytest.param(
            {"host": "mail.example.org", "username": "relay", "password_env": "PW"},
            {"PW": "x"},
            "clear text",
            id="plaintext-auth-over-network",
        ),
    ],
)
def test_bad_upstream_settings_are_config_errors(
    spool: Spool, overrides: dict[str, object], environ: dict[str, str], problem: str
) -> None:
    values: dict[str, object] = {"host": "127.0.0.1", "port": 2525, "security": "none", **overrides}
    with pytest.raises(ConfigError, match=problem):
        DeliveryWorker(
            spool,
            delivery_settings(UpstreamSettings.model_validate(values)),
            hostname="gateway.example.org",
            environ=environ,
        )


async def test_a_message_deleted_during_delivery_is_let_go(
    spool: Spool, upstream: CaptureUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    upstream.data_delay = 0.2
    sent = envelope()
    with caplog.at_level(logging.WARNING, logger="gateway.delivery.worker"):
        async with running(spool, delivery_settings(upstream_settings(upstream))) as worker:
            await spool.commit(sent, message())
            await eventually(lambda: worker.statistics().sending == 1)
            another(spool).delete(sent.queue_id)  # `conduct-gateway queue delete`
            await eventually(lambda: worker.statistics().in_flight == 0)
            await spool.commit(envelope(), message())
            await upstream.wait_for(2)
    assert worker.statistics().errors_total == 0
    assert f"event=spool_entry_vanished queue_id={sent.queue_id}" in caplog.text
    assert spool.locate(sent.queue_id) is None
