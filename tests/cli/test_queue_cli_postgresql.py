"""`conduct-gateway queue list|show|retry|delete` on the PostgreSQL queue several gateways share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.state.postgresql.opening import close_shared_databases
from gateway.state.postgresql.queue import PostgresQueue
from gateway.state.spool import QueueState
from tests.cli.conftest import write_config
from tests.postgresql import ScratchDatabase

from .test_queue_cli import SECRET_BODY, commit, defer, half_delivered, run


@pytest.fixture
def config_file(tmp_path: Path, pg_database: ScratchDatabase) -> Iterator[Path]:
    secret = tmp_path / "pg-password"
    secret.write_text(pg_database.password)
    secret.chmod(0o600)
    extra = f"""
        state:
          backend: postgresql
          postgresql:
            dsn: "{pg_database.dsn}"
            password_file: {secret}
        """
    yield write_config(tmp_path, extra)
    close_shared_databases()


@pytest.fixture
def queue(pg_database: ScratchDatabase) -> Iterator[PostgresQueue]:
    with pg_database.connect() as database:
        yield PostgresQueue(database.connection)


def test_list_show_retry_and_delete_act_on_the_shared_queue(config_file: Path, queue: PostgresQueue) -> None:
    fresh = commit(queue)
    waiting = commit(queue, rcpts=("conduct@example.org", "bob@example.org"))
    defer(queue, waiting, half_delivered(("conduct@example.org", "bob@example.org")))

    listed = run(config_file, "list")
    assert listed.exit_code == 0, listed.output
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert set(rows) == {fresh, waiting}
    assert rows[waiting].split()[1] == "deferred" and "1 delivered, 1 waiting" in rows[waiting]
    assert "1 incoming, 1 deferred, 0 done, 0 bounced, 0 corrupt" in listed.stderr
    assert not (config_file.parent / "state" / "spool").exists()

    shown = run(config_file, "show", waiting)
    assert shown.exit_code == 0, shown.output
    assert "bob@example.org" in shown.stdout and SECRET_BODY not in shown.stdout

    retried = run(config_file, "retry", waiting)
    assert retried.exit_code == 0, retried.output
    assert queue.locate(waiting) is QueueState.INCOMING

    deleted = run(config_file, "delete", fresh, input="y\n")
    assert deleted.exit_code == 0, deleted.output
    assert queue.locate(fresh) is None
