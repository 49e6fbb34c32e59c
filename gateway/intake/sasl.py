"""The AUTH exchange (RFC 4954): SASL PLAIN and LOGIN, from the command to a login and password; pure."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from gateway import replies
from gateway.replies import Reply

MECHANISMS = ("PLAIN", "LOGIN")


@dataclass(frozen=True)
class Credentials:
    """What the client offered; checking them is the shell's work (argon2 is slow)."""

    login: str
    password: str


Step = str | Credentials | Reply
"""What the exchange needs next: a challenge line to send (a ``str``), the credentials, or the reply
that ends it (a refusal)."""


class SaslExchange:
    """One AUTH exchange: ``start`` with the initial response, then ``respond`` to every challenge."""

    def __init__(self, mechanism: str) -> None:
        if mechanism not in MECHANISMS:
            raise ValueError(f"unknown SASL mechanism {mechanism!r}")
        self.mechanism = mechanism
        self._user: bytes | None = None

    def start(self, initial: str | None) -> Step:
        if self.mechanism == "PLAIN":
            if initial is None:
                return replies.AUTH_CHALLENGE_EMPTY
            # RFC 4954: "=" is an empty initial response.
            data = b"" if initial == "=" else _b64(initial.encode("ascii", "replace"))
            return data if isinstance(data, Reply) else _plain(data)
        if initial is None:
            return replies.AUTH_CHALLENGE_USERNAME
        user = _b64(initial.encode("ascii", "replace"))
        if isinstance(user, Reply):
            return user
        self._user = user
        return replies.AUTH_CHALLENGE_PASSWORD

    def respond(self, line: bytes | None) -> Step:
        """The client's answer to the last challenge (None: the line was too long)."""
        if line is None:
            return replies.AUTH_LINE_TOO_LONG
        answer = line.strip()
        if answer == b"*":
            return replies.AUTH_CANCELLED
        data = _b64(answer)
        if isinstance(data, Reply):
            return data
        if self.mechanism == "PLAIN":
            return _plain(data)
        if self._user is None:
            self._user = data
            return replies.AUTH_CHALLENGE_PASSWORD
        try:
            return Credentials(self._user.decode("utf-8"), data.decode("utf-8"))
        except UnicodeDecodeError:
            return replies.AUTH_BAD_PLAIN


def _plain(data: bytes) -> Credentials | Reply:
    parts = data.split(b"\0")
    if len(parts) != 3:
        return replies.AUTH_BAD_PLAIN
    try:
        authzid, login, password = (part.decode("utf-8") for part in parts)
    except UnicodeDecodeError:
        return replies.AUTH_BAD_PLAIN
    if authzid and authzid.lower() != login.lower():
        return replies.AUTH_AUTHZID
    return Credentials(login, password)


def _b64(data: bytes) -> bytes | Reply:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return replies.AUTH_BAD_BASE64
