"""Log lines: one ``event=... key=value`` line per event, values quoted unless plainly safe."""

from __future__ import annotations

import json
import logging
import sys
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.logs import DRIVER_LOGGER, JsonFormatter, LineFormatter, configure, log_event, raised_at

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


class TestJsonLines:
    """`logging.format: json`: one JSON object per line, fields as keys, nothing else."""

    def format(self, record: logging.LogRecord) -> dict[str, object]:
        line = JsonFormatter().format(record)
        assert "\n" not in line
        decoded = json.loads(line)
        assert isinstance(decoded, dict)
        return decoded

    def capture(self, caplog: pytest.LogCaptureFixture, **fields: object) -> logging.LogRecord:
        logger = logging.getLogger("gateway.test-logs")
        with caplog.at_level(logging.WARNING, logger="gateway.test-logs"):
            log_event(logger, "delivered", logging.WARNING, **fields)
        (record,) = caplog.records
        return record

    def test_event_and_fields_become_keys(self, caplog: pytest.LogCaptureFixture) -> None:
        record = self.capture(caplog, queue_id="Q1", recipients=2, pipelined=True, absent=None, text="a\nb")
        decoded = self.format(record)
        assert decoded.pop("time").endswith("Z")  # type: ignore[union-attr]
        assert decoded == {
            "level": "warning",
            "logger": "gateway.test-logs",
            "event": "delivered",
            "queue_id": "Q1",
            "recipients": 2,
            "pipelined": True,
            "text": "a\nb",
        }

    def test_a_field_cannot_replace_the_time(self, caplog: pytest.LogCaptureFixture) -> None:
        decoded = self.format(self.capture(caplog, time="x"))
        assert decoded["time"] != "x"

    def test_other_records_carry_their_message_and_exception(self) -> None:
        try:
            raise ValueError("boom")
        except ValueError:
            record = logging.LogRecord(
                "gateway.x", logging.ERROR, __file__, 1, "failed %s", ("here",), sys.exc_info()
            )
        decoded = self.format(record)
        assert decoded["message"] == "failed here"
        assert "ValueError: boom" in str(decoded["exception"])

    @given(st.dictionaries(st.from_regex(r"[a-z_]{1,12}", fullmatch=True), st.text() | st.integers()))
    def test_every_line_is_one_json_object(self, fields: dict[str, object]) -> None:
        record = logging.LogRecord("gateway.x", logging.INFO, __file__, 1, "m", (), None)
        record.event_fields = ("thing", fields)
        decoded = self.format(record)
        for key, value in fields.items():
            if key not in ("time", "level", "logger", "event"):
                assert decoded[key] == value


def test_configure_json_writes_json_lines_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger("gateway")
    saved = (root.handlers[:], root.level, root.propagate)
    configure("info", "json")
    try:
        log_event(logging.getLogger("gateway.test-json"), "ready", port=2587)
    finally:
        # configure() replaces the handlers for good; later tests need pytest's capture back.
        root.handlers[:], root.level, root.propagate = saved
    (line,) = capsys.readouterr().err.splitlines()
    assert json.loads(line)["event"] == "ready"


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_database_drivers_warnings_come_out_as_one_line_in_our_format(
    capsys: pytest.CaptureFixture[str], log_format: Literal["text", "json"]
) -> None:
    loggers = [logging.getLogger(name) for name in ("gateway", DRIVER_LOGGER)]
    saved = [(lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    configure("info", log_format)
    try:
        pool = logging.getLogger(f"{DRIVER_LOGGER}.pool")
        pool.warning("error connecting in %r: connection refused\n\tIs the server running?", "gw")
        pool.info("connection added")  # below WARNING: the driver's chatter stays out
    finally:
        for lg, (handlers, level, propagate) in zip(loggers, saved, strict=True):
            lg.handlers[:], lg.level, lg.propagate = handlers, level, propagate
    (line,) = capsys.readouterr().err.splitlines()
    expected = "error connecting in 'gw': connection refused Is the server running?"
    if log_format == "json":
        assert json.loads(line)["message"] == expected
        assert json.loads(line)["logger"] == "psycopg.pool"
    else:
        assert line.endswith(f" WARNING psycopg.pool {expected}")


def _outer() -> None:
    _inner()


def _inner() -> None:
    raise ValueError("private words")


def test_where_an_exception_was_raised_is_one_line_of_frames_without_its_text() -> None:
    with pytest.raises(ValueError) as caught:
        _outer()
    where = raised_at(caught.value)
    assert where.endswith("test_logs.py:" + where.rsplit(":", 1)[1])  # innermost last
    assert [part.split("(")[1].rstrip(")") for part in where.split(" > ")][-2:] == ["_outer", "_inner"]
    assert "private" not in where and "\n" not in where
