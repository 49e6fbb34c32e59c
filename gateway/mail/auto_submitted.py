"""RFC 3834: whether the gateway may answer a message with a notice (never an automatic one)."""

from __future__ import annotations

import re

from gateway.header_section import original_headers

# ``Auto-Submitted: auto-replied; owner-email="..."`` and ``Auto-Submitted: no (a person)``: the
# keyword is the first token; comments and parameters after it do not change it.
_KEYWORD = re.compile(rb"^\s*([A-Za-z0-9-]+)")


def auto_submitted(content: bytes) -> bool:
    """Whether ``content``'s header section has an ``Auto-Submitted`` field other than ``no``.

    An ``Auto-Submitted`` field with no readable keyword counts as automatic: answering a message
    that may be an auto-reply risks a mail loop, not answering it costs one notice.
    """
    for name, value in _fields(original_headers(content)):
        if name == b"auto-submitted":
            keyword = _KEYWORD.match(value)
            if keyword is None or keyword.group(1).lower() != b"no":
                return True
    return False


def answerable(mail_from: str, content: bytes) -> bool:
    """Whether a notice may answer this message: never the null sender (``MAIL FROM:<>``, a bounce
    or an auto-reply), never an auto-submitted message (RFC 3834 section 2)."""
    return mail_from.strip().strip("<>") != "" and not auto_submitted(content)


def _fields(head: bytes) -> list[tuple[bytes, bytes]]:
    """(lower-cased name, unfolded value) of each field of a header section."""
    fields: list[tuple[bytes, bytes]] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + b" " + line.strip())
        elif b":" in line:
            name, _, value = line.partition(b":")
            fields.append((name.strip().lower(), value.strip()))
    return fields
