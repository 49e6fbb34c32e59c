"""SMTP submission onto the PostgreSQL queue: 250 only once the message is committed in the database."""

# The fixtures imported from smtp_fixtures are parameters of the tests below.
# ruff: noqa: F811

from __future__ import annotations

import logging
from pathlib import Path

import aiosmtplib
import pytest

from gateway.state.postgresql.database import Database
from gateway.state.postgresql.queue import PostgresQueue
from gateway.state.spool import QueueState
from tests.relay.smtp_fixtures import (  # noqa: F401
    ALICE,
    OUTSIDER,
    StartGateway,
    ca,
    client_tls,
    message,
    server_tls,
    start_gateway,
)


async def test_a_submission_is_answered_250_once_it_is_in_the_database_and_no_disk_is_measured(
    start_gateway: StartGateway, pg_db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    queue = PostgresQueue(pg_db.connection)
    gateway = await start_gateway(spool=queue)
    measured: list[Path] = []

    def statvfs(path: Path) -> object:
        measured.append(path)
        raise AssertionError("the PostgreSQL queue has no folder on this host to measure")

    gateway.service.free_space = statvfs
    smtp = await gateway.logged_in()
    with caplog.at_level(logging.INFO, logger="gateway.intake.smtp"):
        refused, _ = await smtp.sendmail(ALICE, [OUTSIDER], message())
    await smtp.quit()
    assert refused == {}
    assert measured == []
    assert not any("event=smtp.storage" in record.getMessage() for record in caplog.records)
    # Another instance sees it at once: it is in the database, not in this process.
    [entry] = PostgresQueue(pg_db.connection).entries(QueueState.INCOMING)
    assert entry.envelope is not None and entry.envelope.rcpt_tos == (OUTSIDER,)
    stored = PostgresQueue(pg_db.connection).load(entry.queue_id)
    assert stored.content.endswith(message().split(b"\r\n\r\n", 1)[1])


async def test_a_database_that_cannot_be_reached_is_a_451_and_nothing_is_accepted(
    start_gateway: StartGateway, pg_db: Database
) -> None:
    gateway = await start_gateway(spool=PostgresQueue(pg_db.connection))
    smtp = await gateway.logged_in()
    pg_db.close()
    with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
        await smtp.sendmail(ALICE, [OUTSIDER], message())
    assert refused.value.code == 451
    await smtp.quit()
