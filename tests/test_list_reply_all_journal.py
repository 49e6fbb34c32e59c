"""The reply-all net end to end in process: the journal learns a list from List-Id/List-Post, the ledger
keeps it, and a reply-all that drops the committee from the case thread is held (never relayed)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import aiosmtplib

from gateway.decision.policy_screener import PolicyScreener
from gateway.decision.screening import Accept, Submission
from gateway.intake.journal import JournalService
from gateway.settings import GatewaySettings, JournalSettings, PolicySettings
from gateway.state.ledger import Ledger, ledger_path

ADA = "ada@example.org"
BRAM = "bram@example.org"
CONDUCT = "conduct@example.org"
LIST = "devs@groups.example.com"
POLICY = textwrap.dedent(
    f"""\
    organisation:
      conduct_address: {CONDUCT}
      members:
        - name: Ada Quill
          addresses: [{ADA}]
        - name: Bram Oduya
          addresses: [{BRAM}]
    rules:
      - rule: conduct-cc
        action: rewrite
      - rule: list-reply-all
        action: hold
    """
)


def settings_for(tmp_path: Path) -> GatewaySettings:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    return GatewaySettings(
        state_dir=tmp_path / "state",
        policy=PolicySettings(path=policy),
        journal=JournalSettings(enabled=True, port=0, allowed_clients=("127.0.0.1/32", "::1/128")),
    )


def list_copy(message_id: str) -> bytes:
    # A message the list distributed, copied to the committee: the list and the committee on it.
    return (
        f"From: Someone <someone@example.net>\r\nTo: Devs <{LIST}>\r\nCc: {CONDUCT}, {BRAM}\r\n"
        f"List-Id: Developers <devs.groups.example.com>\r\nList-Post: <mailto:{LIST}>\r\n"
        f"Subject: Incident at the meetup\r\nMessage-ID: {message_id}\r\n\r\nSee above.\r\n"
    ).encode()


def reply(cc: str) -> Submission:
    content = (
        f"From: Ada Quill <{ADA}>\r\nTo: Devs <{LIST}>\r\n{cc}Subject: Re: Incident at the meetup\r\n"
        "Message-ID: <a1@example.org>\r\nIn-Reply-To: <l1@groups.example.com>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\nWe are on it.\r\n"
    ).encode()
    rcpts = (LIST, *(a for a in (CONDUCT, BRAM) if a in cc))
    return Submission("Q1", ADA, rcpts, ADA, content)


async def test_a_list_learnt_from_the_journal_holds_a_reply_all_that_drops_the_committee(
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path)
    service = JournalService.from_settings(settings)
    await service.start()
    try:
        host, port = service.address
        errors, _ = await aiosmtplib.send(
            list_copy("<l1@groups.example.com>"),
            sender="devs-bounces@groups.example.com",
            recipients=[CONDUCT],
            hostname=host,
            port=port,
            timeout=10,
            start_tls=False,
        )
        assert not errors
    finally:
        await service.stop()
        service.close()
    with Ledger.open(ledger_path(settings.state_dir)) as ledger:
        assert ledger.lists_among([LIST.upper(), CONDUCT, BRAM]) == frozenset({LIST})

    with PolicyScreener.from_settings(settings) as screener:
        held = screener.screen(reply(""))
        kept = screener.screen(reply(f"Cc: {CONDUCT}, {BRAM}\r\n"))
    assert isinstance(held, Accept) and held.verdict == "hold", held
    assert "list-reply-all:LIST_REPLY_DROPS_COMMITTEE" in held.findings
    assert isinstance(kept, Accept) and kept.verdict == "deliver" and kept.findings == ()
    notices = b"".join(item.content for item in held.extra)
    assert b"mailing list" in notices and LIST.encode() in notices, notices
