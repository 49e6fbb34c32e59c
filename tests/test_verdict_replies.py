"""Sender-facing SMTP replies, change descriptions and the relay header."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.mail.verdict_replies import (
    MAX_LINE,
    RELAY_HEADER,
    ascii_text,
    change_descriptions,
    change_labels,
    held_lines,
    refusal,
    relay_header,
    tempfail,
)
from gateway.policy.model import Action, Address, Decision, Finding, Outcome, Rewrite, Verdict
from gateway.replies import Reply

SECRET = "Zoë Reporter"
PROTECTED = Finding(
    rule="reporter-protection",
    code="PROTECTED_NAME",
    where="header Subject",
    kind="name",
    advice=(
        "Remove the name of a protected person from the Subject, "
        "or record their consent for these recipients."
    ),
    recipients=("moderator@example.net",),
    case="home shelf",
    private_detail=SECRET,
)
CONDUCT_MISSING = Finding(
    rule="conduct-cc",
    code="CONDUCT_ADDRESS_MISSING",
    where="header To/Cc",
    kind="address",
    advice="Put conduct@example.org in Cc (or To) so every recipient sees the committee is copied.",
)


def verdict(outcome: Outcome, *decisions: Decision, rewrite: Rewrite | None = None) -> Verdict:
    return Verdict(outcome=outcome, decisions=decisions, policy_version="v1", rewrite=rewrite or Rewrite())


def smtp_lines(reply: Reply) -> list[str]:
    """The reply as the SMTP layer sends it: code and enhanced status on every line."""
    last = len(reply.lines) - 1
    return [
        f"{reply.code}{' ' if index == last else '-'}{reply.status} {line}"
        for index, line in enumerate(reply.lines)
    ]


def assert_wire_safe(reply: Reply) -> None:
    for line in reply.lines:
        assert line.isascii() and line.isprintable(), line
        assert len(line) <= MAX_LINE, line
    for line in smtp_lines(reply):
        assert len(line.encode("ascii")) + 2 <= 512  # RFC 5321 4.5.3.1.5, CRLF included


def test_reject_says_what_to_fix_first_and_never_echoes_the_match() -> None:
    reply = refusal(verdict(Outcome.REJECT, Decision(PROTECTED, Action.REJECT)), "Q7F3")
    assert (reply.code, reply.status) == (550, "5.7.1")
    assert reply.lines[0] == (
        "Message not sent: Remove the name of a protected person from the Subject, "
        "or record their consent for these recipients"
    )
    # The advice is already in full on the first line: the finding line adds where, kind and whom.
    assert reply.lines[1] == "reporter-protection: header Subject: name (recipients: moderator@example.net)"
    assert reply.lines[-1] == "Reference: Q7F3"
    text = "\n".join(reply.lines)
    assert "Zo" not in text and "Reporter" not in text
    assert "home shelf" not in text  # case code names are for the committee's records, not replies
    assert_wire_safe(reply)


def test_several_problems_are_counted_and_listed_most_severe_first() -> None:
    reply = refusal(
        verdict(
            Outcome.REJECT,
            Decision(PROTECTED, Action.REJECT),
            Decision(CONDUCT_MISSING, Action.REJECT),
            Decision(CONDUCT_MISSING, Action.WARN),
        ),
        "Q1",
    )
    assert reply.lines[0].endswith("(2 problems, listed below)")
    assert reply.lines[1].startswith("reporter-protection:")
    assert reply.lines[2].startswith("conduct-cc:")
    assert reply.lines[3].startswith("conduct-cc: header To/Cc: address [warn] - ")


def test_audit_only_findings_are_not_shown_to_the_sender() -> None:
    reply = refusal(
        verdict(Outcome.REJECT, Decision(CONDUCT_MISSING, Action.REJECT), Decision(PROTECTED, Action.AUDIT)),
        "Q1",
    )
    assert not any("reporter-protection" in line for line in reply.lines)


def test_ambiguous_message_is_5_6_0() -> None:
    finding = Finding(
        rule="message-structure",
        code="AMBIGUOUS_MESSAGE",
        where="message",
        kind="structure",
        advice="The message can be read in more than one way (two Subject headers), so it is refused.",
    )
    reply = refusal(verdict(Outcome.REJECT, Decision(finding, Action.REJECT)), "Q2")
    assert (reply.code, reply.status) == (550, "5.6.0")
    assert (
        reply.lines[0]
        == "Message not sent: it is malformed and can be read in more than one way (details below)."
    )
    assert "two Subject headers" in reply.lines[1]
    assert_wire_safe(reply)


def test_hold_answers_like_reject_and_says_review_is_needed() -> None:
    reply = refusal(verdict(Outcome.HOLD, Decision(PROTECTED, Action.HOLD)), "Q3")
    assert (reply.code, reply.status) == (550, "5.7.1")
    assert "second committee member" in reply.lines[0]
    assert "Nothing was sent" in reply.lines[0]
    assert reply.lines[1].startswith("reporter-protection: header Subject: name - ")
    assert_wire_safe(reply)


def test_rule_failure_is_a_temporary_failure_naming_the_rule() -> None:
    failed = Finding(
        rule="recipient-banner", code="RULE_ERROR", where="rule recipient-banner", kind="KeyError", advice="x"
    )
    reply = refusal(verdict(Outcome.TEMPFAIL, Decision(failed, Action.TEMPFAIL)), "Q4")
    assert (reply.code, reply.status) == (451, "4.3.0")
    assert "Rules that failed: recipient-banner" in reply.lines
    assert reply.lines[-1] == "Reference: Q4"
    assert_wire_safe(reply)
    assert tempfail("Q5").lines[0].startswith("Message not sent yet")


def test_banner_reject_gives_the_exact_lines_to_paste() -> None:
    lines = ("[+ Maya Example]", "[- alex@example.org]")
    finding = Finding(
        rule="recipient-banner",
        code="BANNER_MISSING",
        where="body",
        kind="banner",
        advice="This reply changes who is on the thread. Begin the message with exactly these lines.",
        rewrite=Rewrite(banner_lines=lines),
    )
    reply = refusal(verdict(Outcome.REJECT, Decision(finding, Action.REJECT)), "Q5")
    index = reply.lines.index("Paste these lines at the very top of the message, above any quoted text:")
    assert reply.lines[index + 1 : index + 3] == lines


def test_banner_lines_named_only_in_the_advice_are_listed_too() -> None:
    finding = Finding(
        rule="recipient-banner",
        code="BANNER_MISSING",
        where="body",
        kind="banner",
        advice="Begin the message with exactly these lines, one per line: [+ Maya Example] [- Alex]",
    )
    reply = refusal(verdict(Outcome.REJECT, Decision(finding, Action.REJECT)), "Q6")
    assert "[+ Maya Example]" in reply.lines
    assert "[- Alex]" in reply.lines


def test_non_ascii_banner_name_is_transliterated_with_a_note() -> None:
    finding = Finding(
        rule="recipient-banner",
        code="BANNER_MISSING",
        where="body",
        kind="banner",
        advice="Add the banner.",
        rewrite=Rewrite(banner_lines=("[+ Zoë Ångström]",)),
    )
    reply = refusal(verdict(Outcome.REJECT, Decision(finding, Action.REJECT)), "Q6")
    assert "[+ Zoe Angstrom]" in reply.lines
    assert any("accents included" in line for line in reply.lines)
    assert_wire_safe(reply)


def test_long_advice_is_wrapped_and_unicode_transliterated() -> None:
    advice = "Entfernen Sie den Namen – „bitte“ – aus dem Betreff. " * 12
    finding = Finding(
        rule="reporter-protection",
        code="PROTECTED_NAME",
        where="part 1 (text/plain)",
        kind="name",
        advice=advice,
    )
    reply = refusal(verdict(Outcome.REJECT, Decision(finding, Action.REJECT)), "Q8")
    assert_wire_safe(reply)
    assert len(reply.lines) > 3
    assert reply.lines[2].startswith("    ")  # continuation of the wrapped finding line
    assert 'Entfernen Sie den Namen - "bitte" - aus dem Betreff' in reply.lines[0]


def test_thousands_of_findings_are_capped() -> None:
    decisions = [
        Decision(
            Finding(
                rule="reporter-protection",
                code="PROTECTED_NAME",
                where=f"part {n}",
                kind="name",
                advice="Remove it.",
            ),
            Action.REJECT,
        )
        for n in range(3000)
    ]
    reply = refusal(verdict(Outcome.REJECT, *decisions), "Q9")
    assert len(reply.lines) <= 45
    assert "more lines" in reply.lines[-2]
    assert reply.lines[-1] == "Reference: Q9"


def test_deliver_is_not_a_refusal() -> None:
    with pytest.raises(ValueError, match="not a refusal"):
        refusal(verdict(Outcome.DELIVER), "Q1")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("Zoë Ångström", "Zoe Angstrom", id="accents"),
        pytest.param("Straße", "Strasse", id="eszett"),
        pytest.param("a\r\nb\tc\x00d", "a b c d", id="controls"),
        pytest.param("李雷 Li", "Li", id="no-ascii-form"),
    ],
)
def test_ascii_text(text: str, expected: str) -> None:
    assert ascii_text(text) == expected


def test_relay_header_names_changes_only() -> None:
    assert relay_header("Q1", ("cc-added", "banner-added")) == (
        f"{RELAY_HEADER}: ref=Q1; changed=cc-added,banner-added\r\n".encode()
    )
    assert relay_header("Q1", ()) == f"{RELAY_HEADER}: ref=Q1; changed=none\r\n".encode()


def test_reference_cannot_inject_lines() -> None:
    header = relay_header("Q1\r\nBcc: evil@example.net", ())
    assert header.count(b"\r\n") == 1
    assert tempfail("Q1\r\n550 evil").lines[-1] == "Reference: Q1550evil"


def test_changes_in_plain_words_and_labels() -> None:
    rewrite = Rewrite(
        add_cc=(Address("Conduct Committee", "conduct@example.org"),),
        add_envelope_recipients=("conduct@example.org",),
        banner_lines=("[+ Maya]", "[- Alex]"),
    )
    assert change_labels(rewrite) == ("cc-added", "banner-added")
    assert change_descriptions(rewrite) == (
        "added conduct@example.org to Cc",
        "inserted [+ Maya] [- Alex] at the top of the message",
    )
    assert change_labels(Rewrite()) == ()
    assert change_descriptions(Rewrite(add_envelope_recipients=("x@example.org",))) == (
        "added x@example.org as recipients",
    )


def test_held_reply_names_reasons_reference_and_what_happens_next() -> None:
    lines = held_lines("PROTECTED_IDENTITY, UNINSPECTABLE_CONTENT", "Q/1\r\nX")
    assert lines == (
        "Held for review by a second committee member: PROTECTED_IDENTITY, UNINSPECTABLE_CONTENT.",
        "Reference Q1X. You will get an e-mail when it is approved or rejected.",
    )
    long = held_lines("R" * 500 + " Zoë", "Q1")
    assert all(line.isascii() and len(line) <= MAX_LINE for line in long)


@given(st.text(max_size=400))
def test_held_reply_without_a_notice_never_promises_one_and_stays_short(sender: str) -> None:
    lines = held_lines("PROTECTED_IDENTITY", "Q1", notified=False, sender=sender)
    assert not any("You will get an e-mail" in line for line in lines)
    assert "No e-mail about the outcome can be sent to you" in lines[1]
    assert all(
        line.isascii() and len(line) <= MAX_LINE and "\r" not in line and "\n" not in line for line in lines
    )
