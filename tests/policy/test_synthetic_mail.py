"""The project's own corpus: every message decodes, none names a protected person, the broken are refused.

The same protections as ``test_real_mail.py`` (which needs the shared collection), on messages the
project builds itself (``tests/policy/synthetic_mail.py``), so a clone without the collection still
checks decoding and false positives across charsets, encodings and MIME shapes.
"""

from __future__ import annotations

import pytest

from gateway.policy.mime import parse_message
from gateway.policy.model import ParsedMessage
from gateway.policy.rules import reporter_protection
from tests.policy.builders import render
from tests.policy.synthetic_mail import MALFORMED, PROSE, corpus
from tests.policy.test_real_mail import CONTEXT, PROTECTED, TO_AN_OUTSIDER

MESSAGES = dict(corpus())


def test_the_corpus_covers_every_language_and_shape() -> None:
    assert len(MESSAGES) >= 100
    for language in PROSE:
        assert any(name.startswith(f"plain-{language}-") for name in MESSAGES)


def test_the_traps_are_in_the_corpus_and_a_real_name_would_be_found() -> None:
    # Without this, a matcher that never matched anything would pass every test below.
    text = " ".join(segment.text for segment in parse_message(render(MESSAGES["header-traps"])).segments)
    for trap in ("sparklist", "ISO-2022-JP", "Beijing", "Park"):
        assert trap.casefold() in text.casefold()
    assert PROTECTED.find("a note from Jin Park about the venue")


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_synthetic_message_decodes_and_names_nobody(name: str) -> None:
    raw = render(MESSAGES[name])
    parsed = parse_message(raw)
    assert isinstance(parsed, ParsedMessage)
    assert parsed.ambiguities == ()
    assert parsed.segments, "every synthetic message has readable text"
    findings = reporter_protection.check(parsed, TO_AN_OUTSIDER, CONTEXT, reporter_protection.Params())
    assert [(f.where, f.private_detail) for f in findings if f.code == "PROTECTED_IDENTITY"] == []


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_message_is_refused_with_its_reason(name: str) -> None:
    raw, reason = MALFORMED[name]
    parsed = parse_message(raw)
    assert any(reason in ambiguity for ambiguity in parsed.ambiguities), parsed.ambiguities
