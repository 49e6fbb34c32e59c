"""The embedded default: delivery into a local Maildir when no upstream is configured."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from gateway.delivery.maildir import Maildir
from gateway.state.spool import QueueState, Spool

from .conftest import SENDER, delivery_settings, envelope, eventually, message, running


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_delivery_lands_in_new_with_return_path_and_original_recipients(tmp_path: Path) -> None:
    maildir = Maildir(tmp_path / "maildir", hostname="gw.example.org")
    sent = envelope(rcpt_tos=("bob@example.org", "carol@example.org"))
    content = message(body="exact \u00e9 bytes\r\n.dot")
    path = maildir.deliver(sent, content, sent.rcpt_tos)

    assert path.parent == tmp_path / "maildir" / "new"
    assert path.read_bytes() == (
        b"Return-Path: <alice@example.org>\r\n"
        b"X-Original-To: bob@example.org\r\n"
        b"X-Original-To: carol@example.org\r\n" + content
    )
    assert mode(path) == 0o600
    assert {mode(tmp_path / "maildir" / d) for d in ("", "tmp", "new", "cur")} == {0o700}
    assert list((tmp_path / "maildir" / "tmp").iterdir()) == []
    assert sent.queue_id in path.name and "gw.example.org" in path.name


def test_delivering_the_same_message_again_keeps_one_copy(tmp_path: Path) -> None:
    maildir = Maildir(tmp_path / "maildir")
    sent = envelope()
    first = maildir.deliver(sent, message(), sent.rcpt_tos)
    second = maildir.deliver(sent, message(), sent.rcpt_tos)
    assert first == second
    assert len(list((tmp_path / "maildir" / "new").iterdir())) == 1


def test_a_copy_a_mail_client_has_already_moved_to_cur_counts(tmp_path: Path) -> None:
    maildir = Maildir(tmp_path / "maildir")
    sent = envelope()
    first = maildir.deliver(sent, message(), sent.rcpt_tos)
    first.rename(tmp_path / "maildir" / "cur" / f"{first.name}:2,")
    maildir.deliver(sent, message(), sent.rcpt_tos)
    assert list((tmp_path / "maildir" / "new").iterdir()) == []


def test_null_sender_and_hostile_addresses_stay_on_one_header_line(tmp_path: Path) -> None:
    maildir = Maildir(tmp_path / "maildir", hostname="odd/host:name")
    sent = envelope(mail_from="", rcpt_tos=("bob@example.org\r\nBcc: eve@example.org",))
    path = maildir.deliver(sent, message(), sent.rcpt_tos)
    head = path.read_bytes().split(b"\r\n")[:2]
    assert head == [b"Return-Path: <>", b"X-Original-To: bob@example.org??Bcc: eve@example.org"]
    assert "/" not in path.name and ":" not in path.name


async def test_without_an_upstream_the_worker_delivers_to_the_maildir(
    spool: Spool, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    maildir = tmp_path / "state" / "maildir"
    settings = delivery_settings(None, maildir=maildir)
    sent = envelope()
    with caplog.at_level(logging.INFO, logger="gateway.delivery.worker"):
        async with running(spool, settings):
            await spool.commit(sent, message())
            await eventually(lambda: spool.locate(sent.queue_id) is QueueState.DONE)
    [delivered] = (maildir / "new").iterdir()
    assert delivered.read_bytes().endswith(message())
    assert delivered.read_bytes().startswith(f"Return-Path: <{SENDER}>\r\n".encode())
    assert "outcome=delivered" in caplog.text and "via=maildir" in caplog.text


async def test_an_unwritable_maildir_defers_until_it_is_fixed(spool: Spool, tmp_path: Path) -> None:
    maildir = tmp_path / "maildir"
    maildir.write_bytes(b"")  # a file where the folder should be
    sent = envelope()
    await spool.commit(sent, message())
    async with running(spool, delivery_settings(None, maildir=maildir)):
        await eventually(lambda: spool.locate(sent.queue_id) is QueueState.DEFERRED)
        status = spool.find(sent.queue_id).status
        assert status is not None and status.recipients[0].reply.startswith("451 4.3.0 cannot write")
        maildir.unlink()
        await eventually(lambda: spool.locate(sent.queue_id) is QueueState.DONE)
    assert len(list((maildir / "new").iterdir())) == 1
