"""What the sender and the recipients are told about a verdict: SMTP refusal lines, changes, relay header.

Pure functions of a ``Verdict``. Refusals are multi-line SMTP replies whose first line says what to
fix, then one line per finding (rule, where, kind, advice, offending recipients), then the
reference. Text is ASCII, each line well inside RFC 5321's 512-octet reply-line limit, and built
only from a finding's ``where``, ``kind``, ``advice`` and ``recipients``: never ``private_detail``,
which may quote protected text.

The relay header tells recipients (who may be outsiders) only the reference and which visible
changes were made. It names no case, rule or policy version: the policy file holds the cases, so
its version changes when a case is opened, and an outsider comparing headers would learn that.
"""

from __future__ import annotations

import re
import textwrap
import unicodedata
from collections.abc import Iterable, Sequence

from gateway import replies
from gateway.policy.model import Action, Decision, Outcome, Rewrite, Verdict
from gateway.replies import Reply

RELAY_HEADER = "X-Conduct-Gateway"
APPROVED_HEADER = "X-Conduct-Gateway-Approved-By"  # only the gateway writes it, on a released held message
MAX_LINE = 200  # characters of text per reply line; RFC 5321 allows 512 octets including the code
MAX_FINDING_LINES = 40  # a message with thousands of findings still gets a readable reply
AMBIGUOUS_CODE = "AMBIGUOUS_MESSAGE"

_BLOCKING = (Action.REJECT, Action.HOLD)
_SHOWN = (Action.REJECT, Action.HOLD, Action.REWRITE, Action.WARN)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_SPACES = re.compile(r"\s+")
_REFERENCE_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_BANNER_IN_TEXT = re.compile(r"\[[+-] [^\[\]\r\n]+\]")
# Letters NFKD does not decompose into an ASCII base letter.
_TRANSLITERATE = str.maketrans(
    {
        "ß": "ss",
        "æ": "ae",
        "Æ": "AE",
        "ø": "o",
        "Ø": "O",
        "œ": "oe",
        "Œ": "OE",
        "ð": "d",
        "Ð": "D",
        "þ": "th",
        "Þ": "Th",
        "ł": "l",
        "Ł": "L",
        "đ": "d",
        "Đ": "D",
        "ı": "i",
        "‘": "'",
        "’": "'",
        "“": '"',
        "”": '"',
        "„": '"',
        "‚": "'",
        "–": "-",
        "—": "-",
        "…": "...",
        "«": '"',
        "»": '"',
    }
)


def ascii_text(text: str) -> str:
    """One line of printable ASCII: transliterate what has an ASCII form, drop the rest."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_TRANSLITERATE))
    stripped = decomposed.encode("ascii", "ignore").decode("ascii")
    return _SPACES.sub(" ", _CONTROL.sub(" ", stripped)).strip()


def safe_reference(reference: str) -> str:
    """The reference id as it may appear in a reply or header (letters, digits, ``.``, ``_``, ``-``)."""
    return _REFERENCE_UNSAFE.sub("", reference)[:64] or "unknown"


def _wrap(text: str, *, indent: str = "    ") -> list[str]:
    return textwrap.wrap(
        ascii_text(text),
        width=MAX_LINE,
        subsequent_indent=indent,
        break_long_words=True,
        break_on_hyphens=False,
    ) or [""]


def _leading_sentences(advice: str, room: int) -> str:
    """As many whole sentences of ``advice`` as fit in ``room`` characters (at least the first)."""
    sentences = _SENTENCE_END.split(ascii_text(advice))
    text = sentences[0]
    for sentence in sentences[1:]:
        if len(text) + 1 + len(sentence) > room:
            break
        text = f"{text} {sentence}"
    return text.rstrip(".")


def _headline(prefix: str, text: str) -> str:
    line = f"{prefix}{text}"
    if len(line) <= MAX_LINE:
        return line
    cut = line[: MAX_LINE - 3].rsplit(" ", 1)[0]
    return f"{cut}..."


def _finding_lines(
    decision: Decision, *, sender_must_fix: bool, advice_in_headline: bool = False
) -> list[str]:
    finding = decision.finding
    parts = [ascii_text(finding.rule) or "policy"]
    if finding.where:
        parts.append(ascii_text(finding.where))
    if finding.kind:
        parts.append(ascii_text(finding.kind))
    text = ": ".join(parts)
    if decision.action not in _BLOCKING:
        text += f" [{decision.action.value}]"
    if finding.advice and not advice_in_headline:
        text += f" - {ascii_text(finding.advice)}"
    if finding.recipients:
        text += f" (recipients: {', '.join(ascii_text(r) for r in finding.recipients)})"
    lines = _wrap(text)
    banner = banner_lines(decision)
    if banner and sender_must_fix:
        lines.append("Paste these lines at the very top of the message, above any quoted text:")
        lines.extend(ascii_text(line)[:MAX_LINE] for line in banner)
        if any(ascii_text(line) != line for line in banner):
            lines.append(
                "(This reply can only show plain letters: write each name as it appears in the "
                "recipient list, accents included, or use the person's email address instead.)"
            )
    return lines


def banner_lines(decision: Decision) -> tuple[str, ...]:
    """The ``[+ Name]`` / ``[- Name]`` lines a banner finding asks for, one per line.

    A rewrite carries them as data; a finding that cannot be fixed automatically (the sender wrote
    a wrong banner) names them only in its advice, where each is a bracketed ``[+ ...]`` group.
    """
    finding = decision.finding
    if finding.rewrite is not None and finding.rewrite.banner_lines:
        return finding.rewrite.banner_lines
    if finding.kind != "banner":
        return ()
    return tuple(_BANNER_IN_TEXT.findall(finding.advice))


def _ordered(decisions: Iterable[Decision]) -> list[Decision]:
    shown = [d for d in decisions if d.action in _SHOWN]
    return [d for d in shown if d.action in _BLOCKING] + [d for d in shown if d.action not in _BLOCKING]


def _with_details(
    headline: str,
    decisions: Sequence[Decision],
    reference: str,
    *,
    rewrites_refused: bool = False,
    headline_from: Decision | None = None,
) -> tuple[str, ...]:
    lines = [headline]
    details: list[str] = []
    for decision in decisions:
        must_fix = decision.action in _BLOCKING or (rewrites_refused and decision.action is Action.REWRITE)
        # Do not repeat, word for word, advice the first line already gave in full.
        repeated = decision is headline_from and _whole_advice_in(headline, decision.finding.advice)
        details.extend(_finding_lines(decision, sender_must_fix=must_fix, advice_in_headline=repeated))
    if len(details) > MAX_FINDING_LINES:
        hidden = len(details) - (MAX_FINDING_LINES - 1)
        details = details[: MAX_FINDING_LINES - 1]
        details.append(
            f"... and {hidden} more lines: run 'conduct-gateway check' on the message to see them all"
        )
    lines.extend(details)
    lines.append(f"Reference: {safe_reference(reference)}")
    return tuple(lines)


def _whole_advice_in(headline: str, advice: str) -> bool:
    text = ascii_text(advice).rstrip(".")
    return bool(text) and text in headline


def refusal(verdict: Verdict, reference: str) -> Reply:
    """The SMTP reply for a verdict that does not deliver (reject, hold, tempfail)."""
    decisions = _ordered(verdict.decisions)
    if verdict.outcome is Outcome.TEMPFAIL:
        return tempfail(reference, failed_rules=[d.finding.rule for d in verdict.decisions])
    if verdict.outcome is Outcome.HOLD:
        headline = (
            "Message not sent: it needs review by a second committee member before it can go out, "
            "and that review is not available yet. Nothing was sent."
        )
        return replies.refused_by_policy(_with_details(headline, decisions, reference))
    if verdict.outcome is not Outcome.REJECT:
        raise ValueError(f"a {verdict.outcome.value} verdict is not a refusal")
    blocking = [d for d in decisions if d.action is Action.REJECT]
    ambiguous = [d for d in blocking if d.finding.code == AMBIGUOUS_CODE]
    if ambiguous:
        headline = "Message not sent: it is malformed and can be read in more than one way (details below)."
        return replies.malformed_for_policy(_with_details(headline, decisions, reference))
    first = blocking[0] if blocking else None
    prefix = "Message not sent: "
    more = f" ({len(blocking)} problems, listed below)" if len(blocking) > 1 else ""
    summary = ""
    if first is not None and first.finding.advice:
        summary = _leading_sentences(first.finding.advice, MAX_LINE - len(prefix) - len(more))
    if not summary:
        summary, more = "the message breaks the committee's mail policy (details below)", ""
    headline = _headline(prefix, summary + more)
    return replies.refused_by_policy(_with_details(headline, decisions, reference, headline_from=first))


def held_lines(reasons: str, reference: str, *, notified: bool = True, sender: str = "") -> tuple[str, ...]:
    """The 250 text for a message kept for second-member review (ASCII, lines under MAX_LINE).

    It promises an e-mail about the outcome only when one can be sent: notices go to committee
    addresses only, so a sender writing from another address is told so instead.
    """
    headline = _headline("Held for review by a second committee member: ", f"{ascii_text(reasons)}.")
    if notified:
        return (
            headline,
            f"Reference {safe_reference(reference)}. You will get an e-mail when it is approved or rejected.",
        )
    return (
        headline,
        f"Reference {safe_reference(reference)}. No e-mail about the outcome can be sent to you:",
        _headline("", f"{ascii_text(sender)} is not one of the committee's addresses in the policy."),
        "Ask an admin to add it to your member entry, and another member about the reference meanwhile.",
    )


def rewrite_impossible(verdict: Verdict, reason: str, reference: str) -> Reply:
    """550 5.7.1: the policy asks for a change the gateway cannot make safely (``reason`` is the
    rewriter's own generic explanation), so the sender must make it."""
    headline = _headline(
        "Message not sent: it needed a change the gateway cannot make safely; make it yourself. ",
        f"({ascii_text(reason)})",
    )
    changes = [d for d in _ordered(verdict.decisions) if d.action is Action.REWRITE]
    return replies.refused_by_policy(_with_details(headline, changes, reference, rewrites_refused=True))


def too_complex(reference: str, budget: float) -> Reply:
    """552 5.3.4: checking the message used up its CPU budget. Permanent, because the budget counts
    the message's own computing time (never time spent waiting): a retry would use it up again."""
    lines = _wrap(
        f"Message not sent: it is too complex for the gateway to check (it needs more than {budget:g} "
        "seconds of computing time). Sending it again will not help: split it up (fewer or smaller "
        "attachments, less quoted text), or ask an admin to raise policy.evaluation_budget."
    )
    return replies.too_complex_to_check((*lines, f"Reference: {safe_reference(reference)}"))


def evaluation_timed_out(reference: str) -> Reply:
    """451 4.3.0: a policy worker did not finish in time (stuck or starved of CPU): our fault."""
    lines = _wrap(
        "Message not sent yet: the gateway could not finish checking it in time. Your mail client "
        "will try again; if this keeps happening, tell an admin the reference below."
    )
    return replies.not_checked_yet((*lines, f"Reference: {safe_reference(reference)}"))


def tempfail(reference: str, failed_rules: Iterable[str] = ()) -> Reply:
    """451 4.3.0: the policy could not be applied (an internal failure); the client will retry."""
    lines = [
        "Message not sent yet: the gateway could not check it because of an internal error. "
        "Your mail client will try again; if this keeps happening, tell an admin the reference below."
    ]
    rules = sorted({ascii_text(rule) for rule in failed_rules if rule})
    if rules:
        lines.append(f"Rules that failed: {', '.join(rules)}")
    wrapped: list[str] = []
    for line in lines:
        wrapped.extend(_wrap(line))
    wrapped.append(f"Reference: {safe_reference(reference)}")
    return replies.not_checked_yet(tuple(wrapped))


def change_labels(rewrite: Rewrite) -> tuple[str, ...]:
    """Short labels of the visible changes, for the relay header (``cc-added``, ``banner-added``).

    Recipients added only to the envelope are not labelled: the conduct-cc rewrite always adds
    them to Cc too, and a label for an invisible recipient would tell outsiders one exists.
    """
    labels = []
    if rewrite.add_cc:
        labels.append("cc-added")
    if rewrite.banner_lines:
        labels.append("banner-added")
    return tuple(labels)


def change_descriptions(rewrite: Rewrite) -> tuple[str, ...]:
    """What was changed, in plain words for the sender (names the added addresses and banner lines)."""
    descriptions = []
    if rewrite.add_cc:
        added = ", ".join(ascii_text(a.address) for a in rewrite.add_cc)
        descriptions.append(f"added {added} to Cc")
    extra = [
        r
        for r in rewrite.add_envelope_recipients
        if r.lower() not in {a.address.lower() for a in rewrite.add_cc}
    ]
    if extra:
        descriptions.append(f"added {', '.join(ascii_text(r) for r in extra)} as recipients")
    if rewrite.banner_lines:
        banner = " ".join(ascii_text(line) for line in rewrite.banner_lines)
        descriptions.append(f"inserted {banner} at the top of the message")
    return tuple(descriptions)


def relay_header(reference: str, labels: Sequence[str]) -> bytes:
    """The one header every relayed message carries, as raw bytes ending in CRLF."""
    changed = ",".join(labels) if labels else "none"
    return f"{RELAY_HEADER}: ref={safe_reference(reference)}; changed={changed}\r\n".encode("ascii")
