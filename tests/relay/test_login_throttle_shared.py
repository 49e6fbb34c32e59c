"""Failed logins through one gateway lock the client out of another on the same PostgreSQL."""

from __future__ import annotations

import base64
import ssl
from pathlib import Path

import aiosmtplib
from argon2 import PasswordHasher

from gateway.decision.screening import PassThrough
from gateway.intake.smtp import SubmissionService
from gateway.settings import GatewaySettings
from gateway.state.opening import open_state
from gateway.state.postgresql.accounts import PostgresqlAccounts
from gateway.state.postgresql.opening import close_shared_databases, shared_database
from tests.postgresql import ScratchDatabase
from tests.relay.smtp_fixtures import ALICE, PASSWORD, ca, client_tls, make_settings, server_tls

__all__ = ["ca", "client_tls", "server_tls"]  # fixtures


def _gateway_settings(tmp_path: Path, database: ScratchDatabase, pool_size: int) -> GatewaySettings:
    secret = tmp_path / "pg-password"
    secret.write_text(database.password + "\n")
    # Each gateway its own pool (a pool_size of its own keeps the two apart in this one process,
    # as two hosts are): its own rate-limit counters, exchanged only through the database.
    postgresql = {"dsn": database.dsn, "password_file": str(secret), "pool_size": pool_size}
    return make_settings(
        tmp_path,
        state={"backend": "postgresql", "postgresql": postgresql},
        auth={"max_failures": 3, "failure_window": "15m", "max_failures_per_connection": 10},
    )


async def _auth(service: SubmissionService, tls: ssl.SSLContext, password: str) -> int:
    host, port = service.addresses["submissions"]
    smtp = aiosmtplib.SMTP(hostname=host, port=port, use_tls=True, tls_context=tls, timeout=10)
    await smtp.connect()
    await smtp.ehlo()
    token = base64.b64encode(f"\0{ALICE}\0{password}".encode())
    response = await smtp.execute_command(b"AUTH", b"PLAIN", token)
    await smtp.quit()
    return response.code


async def test_failures_through_gateway_a_lock_the_client_out_of_gateway_b(
    tmp_path: Path, pg_database: ScratchDatabase, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    first = _gateway_settings(tmp_path, pg_database, pool_size=4)
    second = _gateway_settings(tmp_path, pg_database, pool_size=5)
    fast = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
    PostgresqlAccounts(shared_database(first.state.postgresql), fast).add(ALICE, PASSWORD)
    services = []
    try:
        for settings in (first, second):
            state = open_state(settings)
            service = SubmissionService(
                settings, state.queue.open(), state.accounts.open(), PassThrough(), server_tls
            )
            await service.start()
            services.append(service)
        gateway_a, gateway_b = services
        assert await _auth(gateway_b, client_tls, PASSWORD) == 235
        for _ in range(3):
            assert await _auth(gateway_a, client_tls, "a wrong guess") == 535
        assert await _auth(gateway_a, client_tls, PASSWORD) == 454  # locked on A at once
        # What each gateway's sync task does every two seconds, on a thread.
        open_state(first).counts.sync()
        open_state(second).counts.sync()
        assert await _auth(gateway_b, client_tls, PASSWORD) == 454  # and on B, which saw none
        assert gateway_b.statistics().auth_failures_total == 0
    finally:
        for service in services:
            await service.stop(0)
        close_shared_databases()
