"""Fuzzing: damaged real and generated mail always gets a verdict or a permanent refusal, promptly.

Seeds are the real-mail collection and the harness's own messages; Hypothesis picks a seed and
damages it (truncated header lines, deleted ``>``/``@``/quotes, duplicated headers, control
characters, random encoded-words, deep MIME nesting, huge lines, long address headers, runs of
blank or quoted lines), then screens it as the gateway does (``harness.screen``). A fault of the
gateway's own (an exception, a rule error: 451 and endless retries) fails the test, and so does an
example slower than ``deadline`` (an ordinary message takes milliseconds; see test_growth for how
time grows).

The suite runs ``GATEWAY_TEST_FUZZ_EXAMPLES`` examples (default 400, about 20 seconds);
``scripts/fuzz`` runs it for longer with fresh seeds, and with ``CONDUCT_GATEWAY_FUZZ_FINDINGS`` set,
each failing input is also written there as an .eml file, to be minimised into ``regressions/``.
"""

from __future__ import annotations

import hashlib
import os
import random
from datetime import timedelta
from functools import cache
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.harness import mutate, own_seeds, real_mail, screen

EXAMPLES = int(os.environ.get("GATEWAY_TEST_FUZZ_EXAMPLES") or 400)
FINDINGS = os.environ.get("CONDUCT_GATEWAY_FUZZ_FINDINGS")


@cache
def seeds() -> list[bytes]:
    return own_seeds() + real_mail()


def _screen_or_record(raw: bytes) -> None:
    try:
        screened = screen(raw)
    except BaseException:
        if FINDINGS:
            folder = Path(FINDINGS)
            folder.mkdir(parents=True, exist_ok=True)
            name = hashlib.sha256(raw).hexdigest()[:16]
            (folder / f"{len(raw):08d}-{name}.eml").write_bytes(raw)
        raise
    assert screened.code == 250 or 500 <= screened.code < 600, screened


@settings(
    max_examples=EXAMPLES,
    deadline=timedelta(seconds=10),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data(), rounds=st.integers(min_value=1, max_value=4), rng=st.randoms(use_true_random=False))
def test_damaged_mail_gets_a_verdict_or_a_permanent_refusal(
    data: st.DataObject, rounds: int, rng: random.Random
) -> None:
    seed = data.draw(st.sampled_from(seeds()), label="seed")
    _screen_or_record(mutate(rng, seed, rounds))


@settings(max_examples=max(20, EXAMPLES // 5), deadline=timedelta(seconds=10))
@given(
    header=st.sampled_from(["From", "To", "Cc", "Sender", "Reply-To", "Subject", "Message-ID", "References"]),
    value=st.lists(
        st.sampled_from(
            [*'<>@"()\\,;:[]. \tab=?', "=?utf-8?q?", "?=", "=0A", "=00", "\u00e9", "\x01", "x@y.test"]
        ),
        max_size=30,
    ).map("".join),
)
def test_any_header_value_gets_a_verdict_or_a_permanent_refusal(header: str, value: str) -> None:
    head = f"From: Ada Quill <ada.quill@example.org>\r\nTo: someone@example.net\r\n{header}: {value}\r\n"
    _screen_or_record((head + "\r\nHello.\r\n").encode("utf-8"))
