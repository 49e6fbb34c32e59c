"""Journal intake through real SMTP (aiosmtpd listener, aiosmtplib client): learn, record, discard, refuse."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import aiosmtplib
import pytest

from gateway.decision.policy_screener import PolicyScreener
from gateway.decision.screening import Accept, Submission
from gateway.intake.journal import JournalService
from gateway.settings import GatewaySettings, JournalSettings, PolicySettings
from gateway.state.fingerprints import FingerprintStore
from gateway.state.ledger import Ledger, ledger_path

ADA = "ada@example.org"
CONDUCT = "conduct@example.org"
REPORTER = "robin@mail.example.net"
OUTSIDER = "mods@forum.example.com"
REPORT = (
    "During the closing party the speaker from the sponsor booth cornered me near the coat racks and "
    "told me that people like me only get invited to fill a quota, and he said it loudly enough that "
    "the volunteers at the door turned around."
)
POLICY = textwrap.dedent(
    f"""\
    organisation:
      conduct_address: {CONDUCT}
      members:
        - name: Ada Quill
          addresses: [{ADA}]
    rules:
      - rule: recipient-banner
        action: reject
      - rule: protected-content
        action: reject
    cases:
      - code: home shelf
        reporters:
          - id: quiet-heron
            names: [Robin Castellano]
            addresses: [{REPORTER}]
    """
)


def copy_of(sender: str, body: str, message_id: str = "<r1@mail.example.net>") -> bytes:
    return (
        f"From: Robin C <{sender}>\r\nTo: Conduct <{CONDUCT}>\r\nCc: Ada Quill <{ADA}>\r\n"
        f"Subject: Report\r\nMessage-ID: {message_id}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        f"{body}\r\n"
    ).encode()


def make_settings(tmp_path: Path, allowed: tuple[str, ...] = ("127.0.0.1/32", "::1/128")) -> GatewaySettings:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    return GatewaySettings(
        state_dir=tmp_path / "state",
        policy=PolicySettings(path=policy),
        journal=JournalSettings(enabled=True, port=0, allowed_clients=allowed),
    )


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[JournalService]:
    service = JournalService.from_settings(make_settings(tmp_path))
    await service.start()
    try:
        yield service
    finally:
        await service.stop()
        service.close()


async def send(service: JournalService, content: bytes, sender: str = REPORTER) -> str:
    host, port = service.address
    errors, response = await aiosmtplib.send(
        content, sender=sender, recipients=[CONDUCT], hostname=host, port=port, timeout=10, start_tls=False
    )
    assert not errors
    return response


async def test_a_copy_from_a_reporter_is_learnt_recorded_and_discarded(
    journal: JournalService, tmp_path: Path
) -> None:
    response = await send(journal, copy_of(REPORTER, REPORT))
    assert "never relayed" in response
    state = tmp_path / "state"
    with FingerprintStore.open(state) as store:
        (overlap,) = store.overlaps("> " + REPORT)
        assert (overlap.case, overlap.person) == ("home shelf", "quiet-heron")
    with Ledger.open(ledger_path(state)) as ledger:
        assert ledger.count() == 1
    for path in state.rglob("*"):
        if path.is_file():
            assert b"coat racks" not in path.read_bytes()
    assert journal.statistics().learnt_total == 1


async def test_the_envelope_sender_also_identifies_the_reporter(
    journal: JournalService, tmp_path: Path
) -> None:
    await send(journal, copy_of("robin.other@example.com", REPORT), sender=REPORTER)
    with FingerprintStore.open(tmp_path / "state") as store:
        assert store.cases() == {"home shelf": 1}


async def test_a_copy_from_anyone_else_is_recorded_but_not_learnt(
    journal: JournalService, tmp_path: Path
) -> None:
    await send(journal, copy_of("someone@example.com", REPORT), sender="someone@example.com")
    with FingerprintStore.open(tmp_path / "state") as store:
        assert store.cases() == {}
    with Ledger.open(ledger_path(tmp_path / "state")) as ledger:
        assert ledger.count() == 1


async def test_clients_outside_the_allowed_networks_are_refused(tmp_path: Path) -> None:
    service = JournalService.from_settings(make_settings(tmp_path, allowed=("192.0.2.0/24",)))
    await service.start()
    try:
        host, port = service.address
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            await aiosmtplib.send(
                copy_of(REPORTER, REPORT),
                sender=REPORTER,
                recipients=[CONDUCT],
                hostname=host,
                port=port,
                timeout=10,
                start_tls=False,
            )
        assert refused.value.code == 550 and "5.7.1" in refused.value.message
    finally:
        await service.stop()
        service.close()
    with FingerprintStore.open(tmp_path / "state") as store:
        assert store.cases() == {}
    assert service.statistics().refused_clients_total >= 1


async def test_the_ledger_feed_makes_a_later_reply_need_a_banner(
    journal: JournalService, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path)
    await send(journal, copy_of(REPORTER, "Short note: please call me back.", "<r2@mail.example.net>"))
    reply = (
        f"From: Ada Quill <{ADA}>\r\nTo: Robin C <{REPORTER}>, Mods <{OUTSIDER}>\r\nCc: {CONDUCT}\r\n"
        "Subject: Re: Report\r\nMessage-ID: <a1@example.org>\r\nIn-Reply-To: <r2@mail.example.net>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\nThanks, we are looking into it.\r\n"
    ).encode()
    submission = Submission("Q1", ADA, (REPORTER, OUTSIDER, CONDUCT), ADA, reply)
    with PolicyScreener.from_settings(settings) as screener:
        result = screener.screen(submission)
    assert not isinstance(result, Accept)
    text = "\n".join(result.lines)
    assert "[+ Mods]" in text, text


async def test_what_the_journal_learnt_protects_the_next_message(
    journal: JournalService, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path)
    with PolicyScreener.from_settings(settings) as screener:
        forward = (
            f"From: Ada Quill <{ADA}>\r\nTo: Mods <{OUTSIDER}>\r\nCc: {CONDUCT}\r\nSubject: Fwd: Report\r\n"
            f"Message-ID: <a2@example.org>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n> {REPORT}\r\n"
        ).encode()
        before = screener.screen(Submission("Q1", ADA, (OUTSIDER, CONDUCT), ADA, forward))
        assert isinstance(before, Accept)
        await send(journal, copy_of(REPORTER, REPORT, "<r3@mail.example.net>"))
        after = screener.screen(Submission("Q2", ADA, (OUTSIDER, CONDUCT), ADA, forward))
    assert not isinstance(after, Accept)
    text = "\n".join(after.lines)
    assert "protected-content" in text and "own words" in text, text


def test_the_journal_uses_the_screeners_policy_instead_of_compiling_its_own(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    with PolicyScreener.from_settings(settings) as screener:
        service = JournalService.from_settings(settings, screener.source)
        try:
            assert service.journal._policy() is screener.source.policy
            # An edit the screener's source takes in is what the journal sees next.
            before = screener.source.policy
            edited = POLICY.replace("names: [Robin Castellano]", "names: [Robin Castellano, Kim Lee]")
            settings.policy.path.write_text(edited, encoding="utf-8")
            screener.reload()
            assert screener.source.policy is not before
            assert service.journal._policy() is screener.source.policy
        finally:
            service.close()
