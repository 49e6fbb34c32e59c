"""kill -9 at the worst moment, deterministically: the real gateway dies right after an upstream 250.

``conduct-gateway serve`` runs as a child process with ``crash_at: after-upstream-250@2``
(``CONDUCT_GATEWAY_CRASH_AT``): the process that delivers exits, as after kill -9, at the second
upstream 250 of its life, before that result reaches the disk. The gateway (or, with
``own_process``, the delivery process, which the gateway restarts) is started again after each
crash; after two, one last run without the crash point delivers the rest, and
the accounting check then holds the README's bound: every accepted message arrived, and each crash
cost at most one extra copy of each message it caught between the upstream's 250 and the record.
"""

from __future__ import annotations

import os
import ssl
import time
from pathlib import Path

import aiosmtplib
import pytest
from pydantic import ValidationError

from gateway.crash_points import EXIT_STATUS, CrashPoints
from gateway.delivery.worker import IN_FLIGHT_PER_CONNECTION
from gateway.settings import GatewaySettings
from gateway.state.spool import QueueState
from tests.e2e.clients import Account, new_password
from tests.e2e.gateway_process import RELAY_POLICY, GatewayProcess
from tests.e2e.tls import make_tls_material

from .conftest import ThreadedUpstream, check_accounting, spool_states

MESSAGES = 5
CRASHES = 2
MEMBER = "maya.member@example.org"
RECIPIENT = "someone@example.net"


async def submit(gateway: GatewayProcess, member: Account, ca_file: Path, tokens: list[str]) -> list[str]:
    """Submit one message per token over STARTTLS with AUTH; return the tokens answered 250."""
    host, port = gateway.addresses["submission"]
    context = ssl.create_default_context(cafile=str(ca_file))
    accepted = []
    client = aiosmtplib.SMTP(hostname=host, port=port, start_tls=True, tls_context=context, timeout=20)
    try:
        await client.connect()
        await client.login(member.address, member.password)
        for token in tokens:
            content = (
                f"From: Maya Member <{MEMBER}>\r\nTo: <{RECIPIENT}>\r\nSubject: crash test\r\n"
                f"Message-ID: <{token}@example.org>\r\n\r\nBody of {token}.\r\n"
            )
            await client.sendmail(MEMBER, [RECIPIENT], content.encode())
            accepted.append(token)
        await client.quit()
    finally:
        client.close()
    return accepted


@pytest.mark.parametrize("own_process", [False, True], ids=["in-process-delivery", "delivery-process"])
def test_a_crash_between_the_upstreams_250_and_the_record_costs_one_copy_and_loses_nothing(
    tmp_path: Path, own_process: bool
) -> None:
    tls = make_tls_material(tmp_path)
    member = Account(MEMBER, new_password())
    with ThreadedUpstream(pipelining=True) as threaded:
        upstream = threaded.upstream
        threaded.call(upstream.refuse())  # nothing leaves until every message is in the spool
        settings = {
            "policy": {"path": str(RELAY_POLICY)},
            "tls": {"cert_file": str(tls.cert_file), "key_file": str(tls.key_file)},
            "delivery": {
                "upstream": {
                    "host": upstream.host,
                    "port": upstream.port,
                    "security": "none",
                    "timeout": "5s",
                    "final_reply_timeout": "5s",
                },
                "concurrency": 1,
                "initial_backoff": "0.2s",
                "max_backoff": "0.5s",
                "poll_interval": "0.1s",
                "own_process": own_process,
            },
            "fault_injection": True,
        }
        gateway = GatewayProcess(
            tmp_path / "gateway", settings, environ={"CONDUCT_GATEWAY_CRASH_AT": "after-upstream-250@2"}
        )
        gateway.add_user(member.address, member.password)
        try:
            gateway.start()
            tokens = [f"crash-{n}-{time.monotonic_ns()}" for n in range(MESSAGES)]
            # On the upstream's loop, which outlives the TLS shutdown of the client's connection.
            accepted = threaded.call(submit(gateway, member, tls.ca_file, tokens))
            assert accepted == tokens
            threaded.call(upstream.listen())
            spool_root = gateway.state_dir / "spool"
            deadline = time.monotonic() + 60

            def pending() -> bool:
                states = spool_states(spool_root, tokens).values()
                return any(state is None or state.value in ("incoming", "deferred") for state in states)

            while pending() and crashes(gateway) < CRASHES:
                assert time.monotonic() < deadline, gateway.log_text()[-3000:]
                assert gateway.process is not None
                if gateway.process.poll() is not None:
                    assert gateway.process.returncode == EXIT_STATUS, gateway.current_log()[-3000:]
                    gateway.start()
                time.sleep(0.05)
            # Enough crashes: one last run without the crash point delivers the rest.
            gateway.kill()
            gateway.environ.pop("CONDUCT_GATEWAY_CRASH_AT")
            gateway.start()
            while pending():
                assert time.monotonic() < deadline, gateway.log_text()[-3000:]
                time.sleep(0.05)
            crashed = crashes(gateway)
        finally:
            gateway.close()
        ledger = check_accounting(
            accepted, upstream.accepted, spool_root, extra_copies_allowed=crashed * IN_FLIGHT_PER_CONNECTION
        )
    assert crashed >= CRASHES
    # The bound the README states: a crash costs each message it caught between the upstream's 250
    # and the record at most one extra copy (so never more than 1 + crashes in all), and it can only
    # catch the messages in progress (IN_FLIGHT_PER_CONNECTION per connection; one connection here).
    assert max(ledger.copies.values()) <= 1 + crashed
    assert set(ledger.states.values()) == {QueueState.DONE}


def crashes(gateway: GatewayProcess) -> int:
    return gateway.log_text().count("event=crash_point ")


@pytest.mark.parametrize(
    ("spec", "exits_at"), [("after-upstream-250", 1), ("after-upstream-250@3", 3)], ids=["first", "third"]
)
def test_a_crash_point_exits_at_the_named_point_and_time_only(
    spec: str, exits_at: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    exits: list[int] = []
    monkeypatch.setattr(os, "_exit", exits.append)
    points = CrashPoints(spec)
    for _ in range(5):
        points.reached("somewhere-else")
    assert exits == []
    for _ in range(exits_at - 1):
        points.reached("after-upstream-250")
    assert exits == []
    points.reached("after-upstream-250")
    assert exits == [EXIT_STATUS]


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"crash_at": "after-upstream-250"}, "needs fault_injection"),
        ({"crash_at": "before-lunch", "fault_injection": True}, "crash_at"),
        ({"crash_at": "after-upstream-250@0", "fault_injection": True}, "crash_at"),
    ],
    ids=["without-fault-injection", "unknown-point", "zeroth-time"],
)
def test_crash_at_is_refused_without_fault_injection_or_when_unknown(
    values: dict[str, object], problem: str
) -> None:
    with pytest.raises(ValidationError, match=problem):
        GatewaySettings.model_validate(values)
    assert GatewaySettings.model_validate({}).crash_at is None
