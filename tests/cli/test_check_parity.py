"""`conduct-gateway check` answers what the running gateway answers: the same code, status and text.

A folder of messages (every kind of outcome: delivered, rewritten, refused by a rule, held, and
refused at intake for a missing or doubled From, a From that is not the sender's, an overlong line)
goes through a real ``conduct-gateway serve`` over SMTP and through ``check`` with the same settings,
envelope and login. Only the queue id differs: ``check`` says "check" where the gateway names the
message it queued, refused or held.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiosmtplib
import pytest
from click.testing import CliRunner

from gateway.cli import main
from gateway.state.accounts import Accounts

from .conftest import write_config

ADA = "ada.quill@example.org"
PASSWORD = "correct horse battery staple 7"
OUTSIDER = "someone@example.net"
CONDUCT = "conduct@example.org"
ADMIN = "sysadmins@infra.example.net"


def message(*headers: str, body: str = "Hello.") -> bytes:
    return ("\r\n".join(headers) + "\r\n\r\n" + body + "\r\n").encode()


FROM_ADA = f"From: Ada Quill <{ADA}>"
CASES: dict[str, tuple[tuple[str, ...], bytes]] = {
    "deliver": ((OUTSIDER, CONDUCT), message(FROM_ADA, f"To: {OUTSIDER}", f"Cc: {CONDUCT}", "Subject: Hi")),
    "rewrite-adds-cc": ((OUTSIDER,), message(FROM_ADA, f"To: {OUTSIDER}", "Subject: Hi")),
    "reject-protected-name": (
        (OUTSIDER, CONDUCT),
        message(
            FROM_ADA, f"To: {OUTSIDER}", f"Cc: {CONDUCT}", "Subject: Hi", body="Robin Castellano said so."
        ),
    ),
    "hold-to-an-admin": (
        (ADMIN, CONDUCT),
        message(FROM_ADA, f"To: {ADMIN}", f"Cc: {CONDUCT}", "Subject: Hi"),
    ),
    "no-from": ((OUTSIDER, CONDUCT), message(f"To: {OUTSIDER}", f"Cc: {CONDUCT}", "Subject: Hi")),
    "two-froms": ((OUTSIDER, CONDUCT), message(FROM_ADA, FROM_ADA, f"To: {OUTSIDER}", f"Cc: {CONDUCT}")),
    "from-not-yours": (
        (OUTSIDER, CONDUCT),
        message("From: Someone Else <else@example.org>", f"To: {OUTSIDER}", f"Cc: {CONDUCT}", "Subject: Hi"),
    ),
    "overlong-line": (
        (OUTSIDER, CONDUCT),
        message(FROM_ADA, f"To: {OUTSIDER}", f"Cc: {CONDUCT}", body="x" * 1200),
    ),
}


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = write_config(tmp_path, "limits:\n  max_line_length: 998\n")
    text = path.read_text(encoding="utf-8").replace(
        "  users_file: users.passwd\n",
        "  users_file: users.passwd\n  allow_plaintext_auth_on_loopback: true\n",
    )
    path.write_text(text, encoding="utf-8")
    accounts = Accounts.load(tmp_path / "users.passwd")
    accounts.add(ADA, PASSWORD)
    accounts.add("bram.oduya@example.org", PASSWORD)  # a second member, to review held mail
    return path


@pytest.fixture
async def gateway(config: Path) -> AsyncIterator[tuple[str, int]]:
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "gateway", "serve", "--config", str(config)),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
        env={**os.environ},
    )
    assert process.stderr is not None
    address: tuple[str, int] | None = None
    try:
        async with asyncio.timeout(60):
            while line := (await process.stderr.readline()).decode():
                if match := re.search(r"event=listening name=submission address=(\S+):(\d+)", line):
                    address = (match.group(1), int(match.group(2)))
                if "event=ready" in line:
                    break
        assert address is not None
        drain = asyncio.ensure_future(process.stderr.read())
        yield address
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            await process.wait()
        if address is not None:
            await drain


async def live_reply(address: tuple[str, int], rcpt_tos: tuple[str, ...], content: bytes) -> tuple[int, str]:
    async with aiosmtplib.SMTP(hostname=address[0], port=address[1], start_tls=False, timeout=30) as client:
        await client.login(ADA, PASSWORD)
        await client.mail(ADA)
        for recipient in rcpt_tos:
            await client.rcpt(recipient)
        response = await client.data(content)
    return response.code, response.message


def checked_reply(
    config: Path, folder: Path, name: str, rcpt_tos: tuple[str, ...], content: bytes
) -> tuple[int, str]:
    eml = folder / f"{name}.eml"
    eml.write_bytes(content)
    args = ["check", str(eml), "--from", ADA, "--login", ADA, "--json", "--config", str(config)]
    for recipient in rcpt_tos:
        args += ["--to", recipient]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    reply = json.loads(result.stdout)["reply"]
    # aiosmtplib joins a multi-line reply's texts with newlines, with the enhanced status on each.
    return reply["code"], "\n".join(f"{reply['status']} {line}" for line in reply["lines"])


def without_queue_ids(text: str) -> str:
    return re.sub(r"\b[0-9A-F]{22}\b", "check", text)


async def test_check_answers_what_the_gateway_answers(
    config: Path, gateway: tuple[str, int], tmp_path: Path
) -> None:
    seen_codes = set()
    for name, (rcpt_tos, content) in CASES.items():
        try:
            live_code, live_text = await live_reply(gateway, rcpt_tos, content)
        except aiosmtplib.SMTPDataError as refused:
            live_code, live_text = refused.code, refused.message
        code, text = checked_reply(config, tmp_path, name, rcpt_tos, content)
        assert (code, text) == (live_code, without_queue_ids(live_text)), name
        seen_codes.add((name, code))
    # Every kind of answer was compared, not only one.
    assert {code for _, code in seen_codes} == {250, 550}
    assert ("hold-to-an-admin", 250) in seen_codes and ("no-from", 550) in seen_codes


def test_a_hold_shows_who_would_be_asked(config: Path, tmp_path: Path) -> None:
    _rcpt_tos, content = CASES["hold-to-an-admin"]
    eml = tmp_path / "hold.eml"
    eml.write_bytes(content)
    args = ["check", str(eml), "--from", ADA, "--to", ADMIN, "--to", CONDUCT, "--config", str(config)]
    result = CliRunner().invoke(main, [*args, "--json"])
    data = json.loads(result.stdout)
    assert data["verdict"] == "hold"
    assert data["review"] == {"reviewers": ["bram.oduya@example.org"], "required_approvals": 1}
    text = CliRunner().invoke(main, args).stdout
    assert "Review: bram.oduya@example.org would be asked; 1 approval(s) release it." in text
    assert "250-2.0.0 Held for review by a second committee member" in text
