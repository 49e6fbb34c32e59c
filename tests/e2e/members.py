"""A committee member's side of the end-to-end tests: submit with swaks, wait for the gateway's notices."""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from tests.e2e.clients import Account, ClientRun, swaks
from tests.e2e.gateway_process import GatewayProcess
from tests.e2e.postfix import DeliveredMessage, PostfixInstance
from tests.e2e.tls import TlsMaterial


def send(
    gateway: GatewayProcess,
    tls: TlsMaterial,
    account: Account,
    to: str | Sequence[str],
    body: str = "Hello.",
    *,
    cc: Sequence[str] = (),
    subject: str = "Next steps",
    message_id: str | None = None,
    in_reply_to: str | None = None,
    extra_headers: Sequence[str] = (),
    mail_from: str | None = None,
) -> ClientRun:
    """``account`` submits a plain-text message on the submission port (``mail_from`` "<>": null sender)."""
    to = [to] if isinstance(to, str) else list(to)
    headers = [f"From: <{account.address}>", f"To: {', '.join(f'<{a}>' for a in to)}", *extra_headers]
    if cc:
        headers.append(f"Cc: {', '.join(cc)}")
    headers += [f"Subject: {subject}", f"Message-ID: {message_id or f'<{secrets.token_hex(8)}@example.org>'}"]
    if in_reply_to:
        headers += [f"In-Reply-To: {in_reply_to}", f"References: {in_reply_to}"]
    headers += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8"]
    message = ("\r\n".join(headers) + f"\r\n\r\n{body}\r\n").encode()
    return swaks(
        gateway.endpoint("submission"),
        mail_from=account.address if mail_from is None else mail_from,
        recipients=[*to, *cc],
        message=message,
        account=account,
        ca_file=tls.ca_file,
    )


def notices(postfix: PostfixInstance, recipient: str, kind: str, count: int = 1) -> list[DeliveredMessage]:
    """The gateway's ``kind`` notices to ``recipient``, once at least ``count`` have arrived."""

    def matching(messages: list[DeliveredMessage]) -> list[DeliveredMessage]:
        return [
            m
            for m in messages
            if m.delivered_to == recipient.lower() and m.header_values("X-Conduct-Gateway-Notice") == [kind]
        ]

    postfix.wait_for(lambda messages: len(matching(messages)) >= count, what=f"{kind} notice to {recipient}")
    return matching(postfix.messages())


def reply_address(delivered: DeliveredMessage) -> str:
    """Where a reply to a notice goes (its review address)."""
    [value] = delivered.header_values("Reply-To")
    return value.strip("<> ")
