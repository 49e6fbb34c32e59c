"""Log lines: one ``event=... key=value`` line per event, values quoted unless plainly safe."""

from __future__ import annotations

import logging

import pytest

from gateway.logs import LineFormatter, log_event

SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@._-:/+[]<>,=")


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        pytest.param("q-1@example.org", "q-1@example.org", id="safe"),
        pytest.param("[::1]:25,<x>=/+", "[::1]:25,<x>=/+", id="punctuation"),
        pytest.param(42, "42", id="number"),
        pytest.param("", '""', id="empty"),
        pytest.param("two words", '"two words"', id="space"),
        pytest.param('say "hi"\\', '"say \\"hi\\"\\\\"', id="quotes"),
        pytest.param("a\r\nb", '"a\\r\\nb"', id="line-break"),
        pytest.param("zoë", '"zoë"', id="non-ascii"),
        pytest.param("end\n", '"end\\n"', id="trailing-newline"),
    ],
)
def test_values_are_quoted_unless_safe(caplog: pytest.LogCaptureFixture, value: object, shown: str) -> None:
    logger = logging.getLogger("gateway.test-logs")
    with caplog.at_level(logging.INFO, logger="gateway.test-logs"):
        log_event(logger, "thing", field=value, absent=None)
    (record,) = caplog.records
    assert record.getMessage() == f"event=thing field={shown}"
    assert (record.levelno, record.name) == (logging.INFO, "gateway.test-logs")
    text = str(value)
    assert (shown == text) == (bool(text) and all(ch in SAFE for ch in text))


def test_disabled_levels_cost_nothing_and_log_nothing(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("gateway.test-logs")
    with caplog.at_level(logging.WARNING, logger="gateway.test-logs"):
        log_event(logger, "quiet", logging.INFO, field="x")
        log_event(logger, "loud", logging.ERROR, field="x")
    assert [record.getMessage() for record in caplog.records] == ["event=loud field=x"]


@pytest.mark.parametrize("moment", [0.0, 1795536589.0, 1795536589.5, 1795536589.999, 1795536590.001])
def test_line_times_are_written_as_the_standard_formatter_writes_them(moment: float) -> None:
    standard = logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    ours = LineFormatter()
    for created in (moment, moment + 0.25, moment + 1.0, moment):  # reused, then a new second, then back
        record = logging.LogRecord("gateway.test-logs", logging.INFO, __file__, 0, "event=x", (), None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        assert ours.format(record) == standard.format(record)
