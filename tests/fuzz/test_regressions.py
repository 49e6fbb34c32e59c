"""Every input the fuzzer (or a fault-injection run) found a fault with stays fixed.

``regressions/`` holds minimal messages, one per crash signature: address headers the standard
library's parsers raise on (IndexError, AttributeError, TypeError, RecursionError), and
encoded-words that decode to line breaks or control characters. Each used to get ``451 4.3.0
Internal error``, retried by the client forever, or was relayed; each must now get a permanent
``550 5.6.0`` that names the header. A new finding is added as a file here, with its expectation in
:data:`EXPECTED` (files not listed there only need a verdict or a 5xx).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.harness import REGRESSIONS, screen

# file -> words the reply must contain (the header it names, and the problem)
EXPECTED = {
    "from-unclosed-address.eml": "From header is malformed: an address is not closed",
    "from-name-and-open-angle.eml": "From header is malformed: an address is not closed",
    "from-lone-quote.eml": "From header is malformed: a quoted name is not closed",
    "from-group-with-junk-members.eml": "From header is malformed",
    "from-group-with-unclosed-angle.eml": "From header is malformed: an address is not closed",
    "from-unclosed-domain-literal.eml": "From header is malformed",
    "from-junk-display-name.eml": "From header is malformed",
    "from-group-and-bad-domain.eml": "From header is malformed",
    "from-encoded-word-in-group.eml": "From header is malformed",
    "to-nested-comments.eml": "To header is malformed: comments in parentheses are nested",
    "cc-unclosed-escaped-quotes.eml": "Cc header is malformed: a quoted name is not closed",
    "subject-encoded-line-feed.eml": "encoded-word in the Subject header decodes to a line break",
    "subject-encoded-nul.eml": "Subject header decodes to a line break or another control",
    "cc-name-encoded-carriage-return.eml": "encoded-word in the Cc header decodes to a line break",
    "filename-encoded-line-feed.eml": "encoded-word in the Content-Disposition header of part 2",
}

FILES = sorted(REGRESSIONS.glob("*.eml"))


def test_every_expectation_has_its_file() -> None:
    assert {path.name for path in FILES} >= set(EXPECTED)


@pytest.mark.parametrize("path", FILES, ids=[path.name for path in FILES])
def test_a_finding_gets_a_permanent_refusal_or_a_verdict(path: Path) -> None:
    screened = screen(path.read_bytes())  # raises on a fault of the gateway's own
    expected = EXPECTED.get(path.name)
    if expected is None:
        assert screened.code == 250 or 500 <= screened.code < 600
        return
    assert (screened.code, screened.status) == (550, "5.6.0")
    assert expected in " ".join(screened.text.split())
