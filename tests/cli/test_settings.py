"""Settings: environment overrides, durations, path resolution, and errors that name file, line and key."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import jsonschema
import pytest
from ruamel.yaml import YAML

from gateway.cli.config import settings_json_schema_text
from gateway.errors import ConfigError
from gateway.settings import (
    CONFIG_VARIABLE,
    DEFAULT_CONFIG,
    GatewaySettings,
    find_config,
    load_settings,
    parse_duration,
)

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "gateway.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def config_error(path: Path, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ=environ or {})
    return str(caught.value)


def test_shipped_sample_config_is_valid_and_delivers_to_the_local_maildir() -> None:
    settings = load_settings(REPO / "config" / "gateway.yaml", environ={})
    assert settings.delivery.upstream is None
    assert settings.state_dir == (REPO / "state").resolve()
    assert settings.delivery.maildir == settings.state_dir / "maildir"
    assert settings.auth.users_file == (REPO / "config" / "users.passwd").resolve()
    assert settings.metrics.host == "127.0.0.1"


def test_empty_file_means_all_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, ""), environ={})
    assert settings.model_dump(exclude={"state_dir", "auth", "delivery", "policy", "tls"}) == (
        GatewaySettings().model_dump(exclude={"state_dir", "auth", "delivery", "policy", "tls"})
    )


class TestEnvironmentOverrides:
    def test_nested_key_creates_a_section_the_file_does_not_have(self, tmp_path: Path) -> None:
        path = write(tmp_path, "delivery:\n  concurrency: 2\n")
        settings = load_settings(
            path,
            environ={
                "CONDUCT_GATEWAY_DELIVERY__UPSTREAM__HOST": "mail.example.org",
                "CONDUCT_GATEWAY_DELIVERY__UPSTREAM__PORT": "587",
                "CONDUCT_GATEWAY_DELIVERY__UPSTREAM__VERIFY_CERTIFICATES": "false",
            },
        )
        upstream = settings.delivery.upstream
        assert upstream is not None
        assert (upstream.host, upstream.port, upstream.verify_certificates) == (
            "mail.example.org",
            587,
            False,
        )
        assert settings.delivery.concurrency == 2  # the rest of the file still applies

    def test_environment_wins_over_the_file(self, tmp_path: Path) -> None:
        path = write(tmp_path, "server:\n  submission:\n    port: 2587\nlog_level: info\n")
        settings = load_settings(
            path,
            environ={"CONDUCT_GATEWAY_SERVER__SUBMISSION__PORT": "0", "CONDUCT_GATEWAY_LOG_LEVEL": "debug"},
        )
        assert settings.server.submission.port == 0
        assert settings.log_level == "debug"

    def test_null_unsets_an_optional_section(self, tmp_path: Path) -> None:
        path = write(tmp_path, "delivery:\n  upstream:\n    host: mail.example.org\n")
        settings = load_settings(path, environ={"CONDUCT_GATEWAY_DELIVERY__UPSTREAM": "null"})
        assert settings.delivery.upstream is None

    def test_none_is_a_value_not_null(self, tmp_path: Path) -> None:
        # delivery.upstream.security has a legitimate value "none" (Compose sets it for Mailpit).
        settings = load_settings(
            write(tmp_path, ""),
            environ={
                "CONDUCT_GATEWAY_DELIVERY__UPSTREAM__HOST": "mailpit",
                "CONDUCT_GATEWAY_DELIVERY__UPSTREAM__SECURITY": "none",
            },
        )
        assert settings.delivery.upstream is not None
        assert settings.delivery.upstream.security == "none"

    def test_variables_of_other_programs_are_ignored(self, tmp_path: Path) -> None:
        path = write(tmp_path, "")
        settings = load_settings(path, environ={"CONDUCT_GATEWAYX": "1", "HOME": "/root", "PATH": "/bin"})
        assert settings.server.submission.port == 2587

    def test_config_variable_chooses_the_file_and_is_not_a_key(self, tmp_path: Path) -> None:
        path = write(tmp_path, "log_level: warning\n", name="other.yaml")
        settings = load_settings(None, environ={"CONDUCT_GATEWAY_CONFIG": str(path)})
        assert settings.log_level == "warning"

    def test_unknown_key_names_the_variable(self, tmp_path: Path) -> None:
        message = config_error(write(tmp_path, ""), {"CONDUCT_GATEWAY_SERVER__SUBMISION__PORT": "25"})
        assert message == (
            "environment variable CONDUCT_GATEWAY_SERVER__SUBMISION__PORT, key server.submision: "
            "unknown key (check the spelling; see the configuration reference)"
        )

    def test_bad_value_names_the_variable_and_key(self, tmp_path: Path) -> None:
        message = config_error(write(tmp_path, ""), {"CONDUCT_GATEWAY_METRICS__PORT": "ninety"})
        assert message.startswith("environment variable CONDUCT_GATEWAY_METRICS__PORT, key metrics.port: ")
        assert "integer" in message

    def test_empty_key_part_is_refused(self, tmp_path: Path) -> None:
        message = config_error(write(tmp_path, ""), {"CONDUCT_GATEWAY_SERVER____PORT": "25"})
        assert "CONDUCT_GATEWAY_SERVER____PORT" in message
        assert "empty key part" in message


class TestFileErrors:
    def test_wrong_type_names_file_line_and_key_path(self, tmp_path: Path) -> None:
        path = write(
            tmp_path,
            """\
            server:
              hostname: gateway.example.org
              submission:
                host: 127.0.0.1
                port: twenty-five
            """,
        )
        message = config_error(path)
        assert message.startswith(f"{path}, line 5, key server.submission.port: ")
        assert "integer" in message
        assert "Traceback" not in message

    def test_unknown_key_is_refused_with_its_line(self, tmp_path: Path) -> None:
        path = write(tmp_path, "delivery:\n  concurrency: 2\n  retry_lifetim: 5d\n")
        assert config_error(path) == (
            f"{path}, line 3, key delivery.retry_lifetim: "
            "unknown key (check the spelling; see the configuration reference)"
        )

    def test_every_problem_is_listed_one_per_line(self, tmp_path: Path) -> None:
        path = write(tmp_path, "log_level: loud\nmetrics:\n  port: 70000\n")
        lines = sorted(config_error(path).splitlines())
        assert len(lines) == 2
        assert lines[0].startswith(f"{path}, line 1, key log_level: ")
        assert lines[1].startswith(f"{path}, line 3, key metrics.port: ")

    def test_missing_required_key_points_at_its_section(self, tmp_path: Path) -> None:
        path = write(tmp_path, "delivery:\n  upstream:\n    port: 587\n")
        message = config_error(path)
        assert message.startswith(f"{path}, line 2, key delivery.upstream.host: ")
        assert "required" in message.lower()

    def test_yaml_syntax_error_names_the_line(self, tmp_path: Path) -> None:
        path = write(tmp_path, "server:\n  hostname: a\n  submission: [1, 2\n")
        message = config_error(path)
        assert message.startswith(f"{path}, line ")
        assert message.splitlines()[0].split(", line ")[1].split(":")[0] in {"3", "4"}

    def test_duplicate_keys_are_refused(self, tmp_path: Path) -> None:
        path = write(tmp_path, "log_level: info\nlog_level: debug\n")
        message = config_error(path)
        assert message.startswith(f"{path}, line 2")
        assert "duplicate" in message

    def test_missing_file(self, tmp_path: Path) -> None:
        assert config_error(tmp_path / "nope.yaml") == f"{tmp_path / 'nope.yaml'}: file not found"

    def test_top_level_must_be_a_mapping(self, tmp_path: Path) -> None:
        path = write(tmp_path, "- a\n- b\n")
        assert config_error(path) == f"{path}: the file must be a mapping of sections"

    def test_tls_needs_both_files(self, tmp_path: Path) -> None:
        path = write(tmp_path, "tls:\n  cert_file: cert.pem\n")
        message = config_error(path)
        assert message.startswith(f"{path}, line 1, key tls.key_file: ")
        assert "set both cert_file and key_file, or neither" in message


class TestDurations:
    @pytest.mark.parametrize(
        ("text", "seconds"),
        [
            pytest.param("45s", 45.0, id="seconds"),
            pytest.param("30m", 1800.0, id="minutes"),
            pytest.param("72h", 259200.0, id="hours"),
            pytest.param("5d", 432000.0, id="days"),
            pytest.param("2w", 1209600.0, id="weeks"),
            pytest.param("1.5h", 5400.0, id="fraction"),
            pytest.param(" 10 M ", 600.0, id="spaces-and-capitals"),
            pytest.param("90", 90.0, id="bare-number-text"),
            pytest.param(90, 90, id="number"),
        ],
    )
    def test_accepted_forms(self, text: str | int, seconds: float) -> None:
        assert parse_duration(text) == seconds

    @pytest.mark.parametrize("text", ["5 years", "h", "-5s", "5x", "1e3s", ""])
    def test_refused_forms(self, text: str) -> None:
        with pytest.raises(ValueError, match="use seconds, or a number with a unit"):
            parse_duration(text)

    def test_file_durations_become_seconds(self, tmp_path: Path) -> None:
        path = write(tmp_path, "delivery:\n  retry_lifetime: 3d\n  max_backoff: 90m\n")
        settings = load_settings(path, environ={"CONDUCT_GATEWAY_AUTH__FAILURE_WINDOW": "2h"})
        assert settings.delivery.retry_lifetime == 3 * 86400
        assert settings.delivery.max_backoff == 90 * 60
        assert settings.auth.failure_window == 7200

    def test_bad_duration_names_line_and_key_and_shows_the_forms(self, tmp_path: Path) -> None:
        path = write(tmp_path, "delivery:\n  retry_lifetime: five days\n")
        message = config_error(path)
        assert message.startswith(f"{path}, line 2, key delivery.retry_lifetime: ")
        assert '"45s", "30m", "72h", "5d"' in message

    def test_zero_duration_is_refused(self, tmp_path: Path) -> None:
        message = config_error(write(tmp_path, "delivery:\n  poll_interval: 0s\n"))
        assert "key delivery.poll_interval: " in message
        assert "greater than 0" in message


class TestPaths:
    def test_relative_paths_follow_the_config_file_not_the_working_directory(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        folder = tmp_path / "etc"
        folder.mkdir()
        path = write(folder, "state_dir: ../var\nauth:\n  users_file: users.passwd\n")
        monkeypatch.chdir(tmp_path)
        settings = load_settings(Path("etc/gateway.yaml"), environ={})
        assert settings.state_dir == (tmp_path / "var").resolve()
        assert settings.auth.users_file == (folder / "users.passwd").resolve()
        assert settings.delivery.maildir == (tmp_path / "var" / "maildir").resolve()
        assert settings.policy.path == (tmp_path / "policies" / "default.yaml").resolve()
        assert path.exists()

    def test_absolute_paths_are_kept(self, tmp_path: Path) -> None:
        path = write(tmp_path, "")
        settings = load_settings(
            path,
            environ={
                "CONDUCT_GATEWAY_STATE_DIR": "/var/lib/conduct-gateway",
                "CONDUCT_GATEWAY_DELIVERY__MAILDIR": "/srv/mail",
            },
        )
        assert settings.state_dir == Path("/var/lib/conduct-gateway")
        assert settings.delivery.maildir == Path("/srv/mail")


class TestFindingTheSettingsFile:
    """--config, then $CONDUCT_GATEWAY_CONFIG, then ./config/gateway.yaml, then /etc/conduct-gateway."""

    @pytest.fixture
    def places(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, Path]:
        work = tmp_path / "work"
        (work / "config").mkdir(parents=True)
        monkeypatch.chdir(work)
        system = tmp_path / "etc" / "gateway.yaml"
        system.parent.mkdir()
        named = write(tmp_path, "", name="named.yaml")
        return work / "config" / "gateway.yaml", system, named

    def test_the_option_wins_over_everything(self, places: tuple[Path, Path, Path]) -> None:
        local, system, named = places
        local.write_text("", encoding="utf-8")
        system.write_text("", encoding="utf-8")
        assert find_config(named, {CONFIG_VARIABLE: str(system)}, system) == named

    def test_the_variable_comes_next(self, places: tuple[Path, Path, Path]) -> None:
        local, system, named = places
        local.write_text("", encoding="utf-8")
        assert find_config(None, {CONFIG_VARIABLE: str(named)}, system) == named

    def test_then_the_working_folder_then_the_system_file(self, places: tuple[Path, Path, Path]) -> None:
        local, system, _named = places
        system.write_text("", encoding="utf-8")
        assert find_config(None, {}, system) == system
        local.write_text("", encoding="utf-8")
        assert find_config(None, {}, system) == DEFAULT_CONFIG

    def test_nothing_found_names_everything_tried(self, places: tuple[Path, Path, Path]) -> None:
        _local, system, _named = places
        with pytest.raises(ConfigError) as caught:
            find_config(None, {}, system)
        message = str(caught.value)
        for tried in ("--config", CONFIG_VARIABLE, str(DEFAULT_CONFIG), str(system)):
            assert tried in message

    def test_a_named_missing_file_is_reported_missing(self, places: tuple[Path, Path, Path]) -> None:
        local, _system, _named = places
        local.write_text("", encoding="utf-8")  # never silently used instead of the file asked for
        missing = local.parent / "typo.yaml"
        assert "typo.yaml: file not found" in config_error(missing)
        with pytest.raises(ConfigError, match=r"typo\.yaml: file not found"):
            load_settings(None, environ={CONFIG_VARIABLE: str(missing)})


class TestSettingsSchema:
    """`conduct-gateway config schema`: what editors check gateway.yaml against."""

    def test_the_shipped_settings_file_is_valid_against_it(self) -> None:
        schema = json.loads(settings_json_schema_text())
        document = YAML(typ="safe").load((REPO / "config" / "gateway.yaml").read_text(encoding="utf-8"))
        jsonschema.validate(document, schema)

    @pytest.mark.parametrize("value", [45, 2.5, "45s", "30m", "72h", "5d", "2w", " 10 "])
    def test_durations_may_be_numbers_or_numbers_with_a_unit(self, value: object) -> None:
        schema = json.loads(settings_json_schema_text())
        jsonschema.validate({"auth": {"failure_window": value}}, schema)

    @pytest.mark.parametrize(
        "document",
        [{"auth": {"failure_window": "soon"}}, {"no_such_section": {}}, {"auth": {"max_failures": "many"}}],
        ids=["bad-duration", "unknown-key", "wrong-type"],
    )
    def test_what_the_gateway_refuses_the_schema_refuses(self, document: dict[str, object]) -> None:
        schema = json.loads(settings_json_schema_text())
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(document, schema)

    def test_the_shipped_copy_is_fresh(self) -> None:
        assert (REPO / "config" / "schema.json").read_text(encoding="utf-8") == settings_json_schema_text(), (
            "config/schema.json is stale: run .venv/bin/conduct-gateway config schema > config/schema.json"
        )
