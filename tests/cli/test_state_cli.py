"""`conduct-gateway state migrate|check` against a real private PostgreSQL, and on the files backend."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from gateway.cli import main
from tests.cli.conftest import write_config
from tests.postgresql import ScratchDatabase, free_port


def _postgresql_config(folder: Path, dsn: str, password: str) -> Path:
    secret = folder / "pg-password"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    return write_config(
        folder,
        f"""
        state:
          backend: postgresql
          postgresql:
            dsn: "{dsn}"
            password_file: pg-password
            connect_timeout: 2
        """,
    )


def test_migrate_then_check_reports_a_current_schema(
    tmp_path: Path, pg_empty_database: ScratchDatabase
) -> None:
    config = _postgresql_config(tmp_path, pg_empty_database.dsn, pg_empty_database.password)
    runner = CliRunner()
    before = runner.invoke(main, ["state", "check", "--config", str(config)])
    assert before.exit_code == 1, before.output
    assert "state migrate" in before.output

    migrated = runner.invoke(main, ["state", "migrate", "--config", str(config)])
    assert migrated.exit_code == 0, migrated.output
    assert "applied 0001_foundation" in migrated.output
    assert pg_empty_database.password not in migrated.output

    again = runner.invoke(main, ["state", "migrate", "--config", str(config)])
    assert again.exit_code == 0
    assert "already current" in again.output

    after = runner.invoke(main, ["state", "check", "--config", str(config)])
    assert after.exit_code == 0, after.output
    assert "schema:   current" in after.output


def test_check_says_when_postgresql_cannot_be_reached(tmp_path: Path) -> None:
    dsn = f"host=127.0.0.1 port={free_port()} dbname=conduct user=gateway"
    config = _postgresql_config(tmp_path, dsn, "unused")
    result = CliRunner().invoke(main, ["state", "check", "--config", str(config)])
    assert result.exit_code == 1
    assert "reach:    FAILED" in result.output
    assert "cannot be reached" in result.output
    assert "Traceback" not in result.output


def test_a_password_in_the_connection_string_is_refused_naming_the_key(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        """
        state:
          backend: postgresql
          postgresql:
            dsn: "host=db.example.org dbname=conduct user=gateway password=hunter2"
        """,
    )
    result = CliRunner().invoke(main, ["state", "check", "--config", str(config)])
    assert result.exit_code == 2
    assert "state.postgresql.dsn" in result.output
    assert "keep the password out of the settings" in result.output
    assert "Traceback" not in result.output


def test_the_files_backend_has_nothing_to_migrate(config_file: Path) -> None:
    runner = CliRunner()
    migrated = runner.invoke(main, ["state", "migrate", "--config", str(config_file)])
    assert migrated.exit_code == 0
    assert "nothing to migrate" in migrated.output
    checked = runner.invoke(main, ["state", "check", "--config", str(config_file)])
    assert "backend:  files" in checked.output


def test_audit_verify_and_state_check_read_the_shared_trail(
    tmp_path: Path, pg_database: ScratchDatabase
) -> None:
    from gateway.state.postgresql.audit import PostgresqlAudit

    config = _postgresql_config(tmp_path, pg_database.dsn, pg_database.password)
    with pg_database.connect() as database:
        audit = PostgresqlAudit(lambda: database)
        with audit.open() as writer:
            for number in range(3):
                writer.append("step", {"n": number})
    runner = CliRunner()
    checked = runner.invoke(main, ["state", "check", "--config", str(config)])
    assert checked.exit_code == 0, checked.output
    assert "chain head at entry 3" in checked.output
    verified = runner.invoke(main, ["audit", "verify", "--config", str(config)])
    assert verified.exit_code == 0, verified.output
    assert "OK: 3 entries" in verified.output
    shown = runner.invoke(main, ["audit", "show", "--json", "--config", str(config)])
    assert shown.exit_code == 0
    assert len(shown.output.splitlines()) == 3
    with pg_database.connect() as database, database.connection() as connection:
        connection.execute(
            "UPDATE audit_entries SET line = replace(line, '\"n\":1', '\"n\":7') WHERE seq = 2"
        )
    tampered = runner.invoke(main, ["audit", "verify", "--config", str(config)])
    assert tampered.exit_code == 1
    assert "entry 2" in tampered.output
