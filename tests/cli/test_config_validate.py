"""`conduct-gateway config validate [PATH]` and `conduct-gateway config reference`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import trustme
from click.testing import CliRunner, Result

from gateway.cli import main
from gateway.cli.config import reference_markdown
from gateway.settings import GatewaySettings

from .conftest import write_config

REPO = Path(__file__).resolve().parents[2]


def line_of(path: Path, text: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def validate(*args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner(env=env).invoke(main, ["config", "validate", *args])


class TestValidate:
    def test_valid_file_prints_ok_and_a_summary(self, config_file: Path) -> None:
        result = validate(str(config_file))
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert lines[0] == f"OK: {config_file} is valid."
        summary = dict(line.strip().split(":", 1) for line in lines[1:])
        assert summary["state_dir"].strip() == str(config_file.parent / "state")
        assert summary["submission"].strip() == "127.0.0.1:0 (STARTTLS)"
        assert summary["submissions"].strip() == "127.0.0.1:0 (implicit TLS)"
        assert "self-signed certificate for gateway.test" in summary["tls"]
        assert summary["accounts"].strip() == f"{config_file.parent / 'users.passwd'} does not exist yet"
        assert (
            summary["delivery"].strip()
            == f"local maildir {config_file.parent / 'state' / 'maildir'} (no upstream set)"
        )
        assert "policy" in summary

    def test_validating_writes_nothing(self, config_file: Path) -> None:
        before = sorted(config_file.parent.rglob("*"))
        assert validate(str(config_file)).exit_code == 0
        assert sorted(config_file.parent.rglob("*")) == before

    def test_shipped_sample_is_valid(self) -> None:
        result = validate(str(REPO / "config" / "gateway.yaml"))
        assert result.exit_code == 0, result.output
        assert "local maildir" in result.stdout

    def test_path_defaults_to_the_config_variable(self, config_file: Path) -> None:
        result = validate(env={"CONDUCT_GATEWAY_CONFIG": str(config_file)})
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith(f"OK: {config_file} is valid.")

    def test_environment_overrides_are_applied(self, config_file: Path) -> None:
        env = {"CONDUCT_GATEWAY_DELIVERY__UPSTREAM__HOST": "mail.example.org"}
        result = validate(str(config_file), env=env)
        assert result.exit_code == 0, result.output
        assert "upstream mail.example.org:25 (starttls)" in result.stdout

    def test_invalid_file_exit_2_names_file_line_key(self, tmp_path: Path) -> None:
        config = write_config(tmp_path, "delivery:\n  concurrency: many\n")
        result = validate(str(config))
        assert result.exit_code == 2
        assert result.stdout == ""
        line = line_of(config, "concurrency")
        assert result.stderr.startswith(f"conduct-gateway: {config}, line {line}, key delivery.concurrency: ")
        assert "Traceback" not in result.output

    def test_every_error_is_listed(self, tmp_path: Path) -> None:
        config = write_config(tmp_path, "delivery:\n  concurrency: many\n  retry_lifetime: forever\n")
        result = validate(str(config))
        assert result.exit_code == 2
        assert f"line {line_of(config, 'concurrency')}, key delivery.concurrency" in result.stderr
        assert f"line {line_of(config, 'retry_lifetime')}, key delivery.retry_lifetime" in result.stderr

    def test_missing_file(self, tmp_path: Path) -> None:
        result = validate(str(tmp_path / "absent.yaml"))
        assert result.exit_code == 2
        assert result.stderr == f"conduct-gateway: {tmp_path / 'absent.yaml'}: file not found\n"

    def test_no_listener_enabled(self, tmp_path: Path) -> None:
        env = {
            "CONDUCT_GATEWAY_SERVER__SUBMISSION__ENABLED": "false",
            "CONDUCT_GATEWAY_SERVER__SUBMISSIONS__ENABLED": "false",
        }
        result = validate(str(write_config(tmp_path)), env=env)
        assert result.exit_code == 2
        assert "nothing would accept mail" in result.stderr

    def test_unusable_certificate_files(self, tmp_path: Path) -> None:
        (tmp_path / "cert.pem").write_text("not a certificate")
        (tmp_path / "key.pem").write_text("not a key")
        config = write_config(tmp_path, "tls:\n  cert_file: cert.pem\n  key_file: key.pem\n")
        result = validate(str(config))
        assert result.exit_code == 2
        assert "tls.cert_file / tls.key_file: cannot load" in result.stderr

    def test_usable_certificate_files(self, tmp_path: Path) -> None:
        cert = trustme.CA().issue_cert("gateway.test")
        cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "both.pem"))
        config = write_config(tmp_path, "tls:\n  cert_file: both.pem\n  key_file: both.pem\n")
        result = validate(str(config))
        assert result.exit_code == 0, result.output
        assert str(tmp_path / "both.pem") in result.stdout

    def test_upstream_password_variable_must_be_set(self, tmp_path: Path) -> None:
        config = write_config(
            tmp_path,
            "delivery:\n  upstream:\n    host: mail.example.org\n    username: gw\n"
            "    password_env: TEST_UPSTREAM_SECRET\n",
        )
        result = validate(str(config), env={"TEST_UPSTREAM_SECRET": None})
        assert result.exit_code == 2
        assert "names the environment variable TEST_UPSTREAM_SECRET, which is not set" in result.stderr
        assert validate(str(config), env={"TEST_UPSTREAM_SECRET": "s3cret"}).exit_code == 0

    def test_differences_between_members_and_accounts_are_named(self, config_file: Path) -> None:
        # The shipped policy lists Ada, Bram, Chidi and Dana; Bram holds an account with an extra
        # alias, and ann@ holds one without being in the policy.
        for address, aliases in (
            ("bram.oduya@example.org", ["--alias", "bram.o@example.net"]),
            ("ann@example.org", []),
        ):
            added = CliRunner().invoke(
                main,
                ["user", "add", address, *aliases, "--password-stdin", "--config", str(config_file)],
                input="long enough\n",
            )
            assert added.exit_code == 0, added.output
        result = validate(str(config_file))
        assert result.exit_code == 0, result.output
        assert "1 members in force" in result.stdout
        warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
        named = "\n".join(warnings)
        for member in ("Ada Quill", "Chidi Lindqvist", "Dana Whitlock"):
            assert f"{member} (" in named and "has no account" in named
        assert "account bram.oduya@example.org sends as bram.o@example.net" in named
        assert "bram@oduya-family.example.net is listed in organisation.members" in named
        assert "account ann@example.org is not in organisation.members" in named
        assert len(warnings) == 6

    def test_readable_users_file_is_counted_and_a_loose_mode_warned(self, config_file: Path) -> None:
        add = CliRunner().invoke(
            main,
            ["user", "add", "ann@example.org", "--password-stdin", "--config", str(config_file)],
            input="long enough\n",
        )
        assert add.exit_code == 0, add.output
        result = validate(str(config_file))
        assert "users.passwd: 1 account(s)" in result.stdout
        assert "can be read by other users" not in result.stderr
        (config_file.parent / "users.passwd").chmod(0o644)
        result = validate(str(config_file))
        assert result.exit_code == 0
        assert "can be read by other users; run: chmod 600" in result.stderr

    def test_broken_users_file_names_its_line(self, config_file: Path) -> None:
        users = config_file.parent / "users.passwd"
        users.write_text("# members\nann@example.org:not-a-hash\n")
        users.chmod(0o600)
        result = validate(str(config_file))
        assert result.exit_code == 2
        assert result.stderr.startswith(f"conduct-gateway: {users}, line 2: ")

    def test_metrics_off_loopback_is_a_warning(self, config_file: Path) -> None:
        result = validate(str(config_file), env={"CONDUCT_GATEWAY_METRICS__HOST": "0.0.0.0"})
        assert result.exit_code == 0
        assert "metrics.host is 0.0.0.0, not a loopback address" in result.stderr


def test_real_process_shows_no_traceback(tmp_path: Path) -> None:
    config = write_config(tmp_path, "server:\n  hostname: [not, a, name]\n")
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "config", "validate", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "error"},
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith(f"conduct-gateway: {config}")


class TestReference:
    def test_command_prints_the_reference(self) -> None:
        result = CliRunner().invoke(main, ["config", "reference"])
        assert result.exit_code == 0
        assert result.stdout == reference_markdown()

    def test_every_settings_key_is_documented(self) -> None:
        table = reference_markdown()

        def keys(model: type[GatewaySettings] | type, prefix: str = "") -> list[str]:
            found = []
            for name, field in model.model_fields.items():
                found.append(prefix + name)
                args = getattr(field.annotation, "__args__", (field.annotation,))
                for arg in args:
                    if isinstance(arg, type) and hasattr(arg, "model_fields"):
                        found += keys(arg, f"{prefix}{name}.")
            return found

        for key in keys(GatewaySettings):
            assert f"`{key}`" in table, key
        rows = [line for line in table.splitlines() if line.startswith("| `") or line.startswith("| **`")]
        assert len(rows) == len(keys(GatewaySettings))
        for row in rows:
            description = row.rstrip(" |").rsplit("|", 1)[1].strip()
            assert description, f"no description: {row}"

    def test_rows_show_type_and_default(self) -> None:
        table = reference_markdown()
        assert "| `delivery.retry_lifetime` | duration | `5d` |" in table
        assert "| `server.submission.port` | integer 0–65535 | `2587` |" in table
        assert "| `delivery.upstream.host` | string | *required* |" in table
        assert "| `delivery.upstream.security` | one of `starttls`, `tls`, `none` | `starttls` |" in table
        assert "| `tls.cert_file` | path | *none* |" in table
        assert "| `metrics.enabled` | boolean | `true` |" in table

    def test_the_docs_hold_the_current_reference(self) -> None:
        page = REPO / "docs" / "reference" / "configuration.md"
        assert reference_markdown() in page.read_text(encoding="utf-8"), (
            "docs/reference/configuration.md is stale: run .venv/bin/python scripts/update_docs.py"
        )
