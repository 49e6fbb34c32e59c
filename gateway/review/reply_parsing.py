"""Reading a decision out of a reply: the text a person wrote on top, and its first line's command."""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Literal

from gateway.policy.html import render_html

_QUOTED = re.compile(r"^\s*>")
_ATTRIBUTION = re.compile(r"^\s*(on .{0,200} wrote:|-----\s*original message\s*-----)\s*$", re.IGNORECASE)
_COMMAND_WORDS = {"approve": "approve", "approved": "approve", "reject": "reject", "rejected": "reject"}
_COMMAND_WORDS["cancel"] = "cancel"
_COMMAND_WORDS["claim"] = "claim"
_COMMAND_WORDS["unclaim"] = "unclaim"

Command = Literal["approve", "reject", "cancel", "claim", "unclaim"]


@dataclass(frozen=True)
class ReplyCommand:
    command: Command
    reason: str = ""


def reply_text(content: bytes) -> str:
    """The text a person wrote at the top of a reply: text/plain, else the rendered text/html."""
    message = email.message_from_bytes(content, policy=email.policy.default)
    if not isinstance(message, EmailMessage):
        return ""
    try:
        body = message.get_body(preferencelist=("plain", "html"))
        if body is None:
            return ""
        text = body.get_content()
    except Exception:  # the header parser raises on malformed fields: an unreadable reply, not our fault
        return ""
    if not isinstance(text, str):
        return ""
    if body.get_content_type() == "text/html":
        text = render_html(text).body_text
    return text


def parse_command(text: str) -> ReplyCommand | None:
    """The first written line's command: ``approve [comment]``, ``reject <reason>``, ``claim``,
    ``unclaim`` or ``cancel``.

    Case does not matter, trailing punctuation is ignored, quoted text and signatures are never
    read. A reason or comment may go on over the next lines (a client wrapping a long line) up to
    a blank line, quote or signature; words after ``claim``, ``unclaim`` or ``cancel`` are ignored.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for index, line in enumerate(lines):
        stripped = line.strip().lstrip("\ufeff")
        if not stripped:
            continue
        if stripped in ("--", "-- ") or _QUOTED.match(line) or _ATTRIBUTION.match(stripped):
            return None
        word, _, rest = stripped.partition(" ")
        command = _COMMAND_WORDS.get(word.lower().rstrip(".!:,;"))
        if command is None:
            return None
        reason = rest.strip().lstrip(":-").strip()
        if command in ("claim", "unclaim", "cancel"):
            return ReplyCommand(command)  # type: ignore[arg-type]
        if command in ("approve", "reject"):
            following: list[str] = [reason] if reason else []
            for more in lines[index + 1 :]:
                if not more.strip() and not following and command == "reject":
                    continue  # blank lines between "reject" and its reason
                if (
                    not more.strip()
                    or more.strip() == "--"
                    or _QUOTED.match(more)
                    or _ATTRIBUTION.match(more)
                ):
                    break
                following.append(more.strip())
            reason = " ".join(following)
        return ReplyCommand(command, " ".join(reason.split())[:1000])  # type: ignore[arg-type]
    return None
