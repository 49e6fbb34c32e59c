"""The relayed copy's one ``X-Conduct-Gateway`` header, placed without re-serialising the message."""

from __future__ import annotations

from gateway.mail.verdict_replies import APPROVED_HEADER, RELAY_HEADER


def _header_block_end(raw: bytes) -> int:
    """Offset of the blank line that ends the top-level header block (len(raw) if there is none)."""
    crlf = raw.find(b"\r\n\r\n")
    # A bare-LF blank line counts only if it comes first: no need to look past the CRLF one.
    lf = raw.find(b"\n\n", 0, crlf + 2 if crlf >= 0 else len(raw))
    candidates = [index + 2 for index in (crlf,) if index >= 0] + [index + 1 for index in (lf,) if index >= 0]
    return min(candidates) if candidates else len(raw)


def _without_header(raw: bytes, name: str) -> bytes:
    """Remove every top-level header field ``name`` (with its folded continuation lines), bytewise."""
    end = _header_block_end(raw)
    head = raw[:end]
    if name.lower().encode("ascii") not in head.lower():
        return raw
    wanted = name.lower().encode("ascii") + b":"
    kept: list[bytes] = []
    dropping = False
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        # Only "Name:" exactly, as the MIME parser reads headers: stripping a line the parser saw
        # as something else would relay a message other than the one the policy judged.
        dropping = line.lower().startswith(wanted)
        if not dropping:
            kept.append(line)
    return b"".join(kept) + raw[end:]


def with_relay_header(content: bytes, header: bytes) -> bytes:
    """Exactly one relay header, at the top; the rest of the message is not re-serialised.

    A sender's own approval header is dropped too: only a release after review may carry one.
    """
    return header + _without_header(_without_header(content, APPROVED_HEADER), RELAY_HEADER)
