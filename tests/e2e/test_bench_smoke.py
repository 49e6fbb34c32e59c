"""bench/relay.py still runs: every target relays a few messages and the report is a markdown table.

No figure is asserted here (benchmarks report ratios; timed tests would be flaky and dishonest).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

RELAY_BENCH = Path(__file__).resolve().parents[2] / "bench" / "relay.py"
SMALL = ("--messages", "20", "--sizes", "8KB", "--clients", "2")  # a few messages, one point


def test_relay_benchmark_runs_every_target_and_prints_the_table() -> None:
    result = subprocess.run(
        [sys.executable, str(RELAY_BENCH), "--messages", "20", "--sizes", "8KB", "--clients", "1,4"],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert table[0] == "| target | size | clients | msg/s | vs bare | 250s/s | p50 ms | p99 ms | CPU ms/msg |"
    rows = [line.split(" | ") for line in table[2:]]
    assert {(row[0].lstrip("| "), row[2]) for row in rows} == {
        (target, clients) for target in ("bare", "gateway", "postfix") for clients in ("1", "4")
    }
    assert all(row[4] != "-" for row in rows), "every run has a ratio against the bare relay"
    # Measured for every target (20 messages may take less than one 10 ms CPU tick: 0.00 is a figure).
    assert all(float(row[8].rstrip(" |")) >= 0 for row in rows)
    assert "- Machine: " in result.stdout
    assert "- Command: `python bench/relay.py --messages 20" in result.stdout


def test_the_load_sends_every_message_unique_but_otherwise_the_same() -> None:
    # Identical copies would let the gateway's per-text caches answer every message after the first.
    sys.path.insert(0, str(RELAY_BENCH.parent))
    from load import unique_copy
    from relay import build_message

    message = build_message(8 * 1024, "maya.member@example.org")
    first, second = unique_copy(message, 1), unique_copy(message, 2)
    assert first != second
    for copy, number in ((first, b"1"), (second, b"2")):
        head, _, body = copy.partition(b"\r\n\r\n")
        assert head.replace(b"<" + number + b".bench.", b"<bench.") == message.partition(b"\r\n\r\n")[0]
        assert body == message.partition(b"\r\n\r\n")[2] + b"Reference number " + number + b"\r\n"


def test_relay_benchmark_runs_the_gateway_on_postgresql_one_and_two_instances() -> None:
    from tests.conftest import machine_cannot
    from tests.postgresql import find_bindir

    if find_bindir() is None:
        machine_cannot("PostgreSQL's initdb and pg_ctl are not installed (apt-get install postgresql)")
    result = subprocess.run(
        [sys.executable, str(RELAY_BENCH), "--targets", "bare,gateway", "--state", "postgresql", *SMALL],
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert table[0].endswith("| CPU ms/msg | RSS MiB | PG ms/msg |")
    cells = [line.strip("| ").split(" | ") for line in table[2:]]
    rows = {row[0]: row for row in cells}
    assert set(rows) == {"bare", "gateway", "gateway@pg1", "gateway@pg2"}
    # The server's CPU is measured for the PostgreSQL targets only (0.00 is a figure: one 10 ms tick).
    assert rows["bare"][10] == rows["gateway"][10] == "-"
    assert all(float(rows[name][10]) >= 0 for name in ("gateway@pg1", "gateway@pg2"))
    # Two instances' resident memory is summed: both gateways were measured, not one.
    assert float(rows["gateway@pg2"][9]) > 1.5 * float(rows["gateway@pg1"][9]) > 0
    assert "- PostgreSQL " in result.stdout and "(fsync on)" in result.stdout


def test_relay_benchmark_with_tls_logs_in_over_starttls_on_every_target() -> None:
    result = subprocess.run(
        [sys.executable, str(RELAY_BENCH), "--tls", "--targets", "bare,gateway,postfix", *SMALL],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr  # every message was accepted
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert {line.strip("| ").split(" | ")[0] for line in table[2:]} == {"bare", "gateway", "postfix"}
    # Every target's clients negotiated TLS (the same certificate everywhere), and the report says
    # what: the gateway refuses AUTH without it, and so does Postfix here (smtpd_tls_auth_only).
    negotiated = dict(
        line.removeprefix("- TLS, ").split(": ", 1)
        for line in result.stdout.splitlines()
        if line.startswith("- TLS, ")
    )
    assert set(negotiated) == {"bare", "gateway", "postfix"}
    assert all(cipher.startswith(("TLSv1.2 ", "TLSv1.3 ")) for cipher in negotiated.values()), negotiated
    assert "- Command: `python bench/relay.py --tls" in result.stdout


def test_relay_benchmark_can_evaluate_the_policy_on_the_event_loop() -> None:
    policy = Path(__file__).resolve().parents[2] / "gateway" / "data" / "default-policy.yaml"
    command = [sys.executable, str(RELAY_BENCH), "--targets", "bare", "--policy", str(policy), *SMALL]
    result = subprocess.run([*command, "--policy-workers", "0"], capture_output=True, text=True, timeout=110)
    assert result.returncode == 0, result.stdout + result.stderr  # every message was accepted
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    targets = {line.strip("| ").split(" | ")[0] for line in table[2:]}
    assert targets == {"bare", "gateway+policy", "gateway+policy:cc"}
    refused = subprocess.run([*command, "--policy-workers", "two"], capture_output=True, text=True)
    assert refused.returncode == 2
    assert "--policy-workers takes a number or auto, not 'two'" in refused.stderr
