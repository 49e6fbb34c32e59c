"""`conduct-gateway serve` with its queue in PostgreSQL, as a real process: intake commits the message
to the database, the delivery process (a process of its own) claims and delivers it, a clean stop
leaves no claim behind, and nothing of the queue is written under ``state_dir``."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import aiosmtplib

from tests.cli.test_serve import StartGateway, maildir_files, message, start_gateway  # noqa: F401
from tests.cli.test_serve_postgresql import _config
from tests.postgresql import ScratchDatabase


async def test_a_message_is_queued_in_the_database_and_delivered_by_the_delivery_process(
    start_gateway: StartGateway,  # noqa: F811
    tmp_path: Path,
    pg_database: ScratchDatabase,
) -> None:
    gateway = await start_gateway(_config(tmp_path, pg_database))
    address, password = gateway.banner_value("address"), gateway.banner_value("password")
    host, port = gateway.address("submission")
    async with aiosmtplib.SMTP(
        hostname=host, port=port, start_tls=True, tls_context=gateway.tls_context(), timeout=10
    ) as client:
        await client.login(address, password)
        for number in range(3):
            errors, _reply = await client.send_message(
                message(address, "someone@example.org", f"t{time.time_ns()}-{number}")
            )
            assert errors == {}
    assert len(await maildir_files(gateway.state / "maildir", 3)) == 3, gateway.output
    gateway.signal(signal.SIGTERM)
    assert await gateway.wait() == 0, gateway.output
    assert not any("Traceback" in line for line in gateway.stderr), gateway.output

    with pg_database.connect() as database, database.connection() as connection:
        rows = connection.execute("SELECT state, claimed_by FROM queue_messages").fetchall()
    assert rows == [("done", None)] * 3  # delivered, and a clean stop holds nothing
    assert not (gateway.state / "spool").exists()
    assert not (gateway.state / "holds").exists()
