"""`conduct-gateway serve` on the PostgreSQL backend, as a real process against the private cluster:
a message end to end leaves its decision in the shared audit chain and its thread in the shared
ledger; an unmigrated database stops the start with one clear message."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import aiosmtplib
import pytest

from gateway.state.postgresql.audit import PostgresqlAudit
from tests.cli.conftest import write_config
from tests.cli.test_serve import StartGateway, maildir_files, message, start_gateway  # noqa: F401
from tests.postgresql import PostgresCluster, ScratchDatabase


def _config(folder: Path, database: ScratchDatabase) -> Path:
    (folder / "pg-password").write_text(database.password + "\n")
    (folder / "registry.key").write_text("6Gq0d9o5m2XyJ1mJmXz3a2oVQ1c7O7JmS7n8q9pR0sA=\n")
    return write_config(
        folder,
        f"""
        state:
          backend: postgresql
          postgresql:
            dsn: "{database.dsn}"
            password_file: pg-password
            connect_timeout: 5
        registry:
          key_env: null
          key_file: registry.key
        """,
    )


async def test_a_message_through_a_gateway_on_postgresql(
    start_gateway: StartGateway,  # noqa: F811
    tmp_path: Path,
    pg_database: ScratchDatabase,
) -> None:
    gateway = await start_gateway(_config(tmp_path, pg_database))
    address, password = gateway.banner_value("address"), gateway.banner_value("password")
    host, port = gateway.address("submission")
    token = f"t{time.time_ns()}"
    async with aiosmtplib.SMTP(
        hostname=host, port=port, start_tls=True, tls_context=gateway.tls_context(), timeout=10
    ) as client:
        await client.login(address, password)
        errors, _reply = await client.send_message(message(address, "someone@example.org", token))
    assert errors == {}
    assert len(await maildir_files(gateway.state / "maildir", 1)) == 1, gateway.output
    gateway.signal(signal.SIGTERM)
    assert await gateway.wait() == 0, gateway.output
    assert not any("Traceback" in line for line in gateway.stderr), gateway.output

    with pg_database.connect() as database:
        audit = PostgresqlAudit(lambda: database)
        decisions = [entry.fields for entry in audit.entries() if entry.fields.get("event") == "decision"]
        assert audit.verify().ok
        with database.connection() as connection:
            threads = connection.execute(
                "SELECT count(*) FROM ledger_messages WHERE message_id = %s", (f"{token}@example.org",)
            ).fetchone()
    assert [fields["reply"] for fields in decisions] == ["250"]
    assert threads == (1,)
    assert not (gateway.state / "audit" / "audit.jsonl").exists()  # nothing of the trail on files


async def test_an_unmigrated_database_stops_the_start_with_one_clear_message(
    start_gateway: StartGateway,  # noqa: F811
    tmp_path: Path,
    pg_empty_database: ScratchDatabase,
) -> None:
    gateway = await start_gateway(_config(tmp_path, pg_empty_database), ready=False)
    code = await gateway.wait()
    assert code != 0
    assert "conduct-gateway state migrate" in gateway.output
    assert not any("Traceback" in line for line in gateway.stderr), gateway.output


async def test_postgresql_down_gets_451_and_mail_flows_once_it_is_back(
    start_gateway: StartGateway,  # noqa: F811
    tmp_path: Path,
    pg_cluster: PostgresCluster,
    pg_database: ScratchDatabase,
) -> None:
    gateway = await start_gateway(_config(tmp_path, pg_database))
    address, password = gateway.banner_value("address"), gateway.banner_value("password")
    host, port = gateway.address("submission")

    async def send(token: str) -> None:
        async with aiosmtplib.SMTP(
            hostname=host, port=port, start_tls=True, tls_context=gateway.tls_context(), timeout=30
        ) as client:
            await client.login(address, password)
            await client.send_message(message(address, "someone@example.org", token))

    await send("before")
    pg_cluster.stop()
    try:
        with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
            await send("during")
    finally:
        pg_cluster.start()
    assert refused.value.code == 451
    assert "4.3.0" in refused.value.message
    await send("after")
    delivered = await maildir_files(gateway.state / "maildir", 2)
    bodies = b"".join(path.read_bytes() for path in delivered)
    assert b"before" in bodies and b"after" in bodies
    assert b"during" not in bodies
    gateway.signal(signal.SIGTERM)
    assert await gateway.wait() == 0, gateway.output
