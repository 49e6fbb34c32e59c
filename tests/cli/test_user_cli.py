"""`conduct-gateway user add|list|remove|password`."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gateway.cli import main
from gateway.state.accounts import Accounts


def run(config_file: Path, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, ["user", *args, "--config", str(config_file)], input=input)


def users_file(config_file: Path) -> Path:
    return config_file.parent / "users.passwd"


def test_add_asks_twice_and_stores_only_a_hash_in_a_private_file(config_file: Path) -> None:
    result = run(config_file, "add", "Alice@Example.org", input="correct horse\ncorrect horse\n")
    assert result.exit_code == 0, result.output
    assert "Added alice@example.org" in result.output
    assert "Repeat the password" in result.output
    path = users_file(config_file)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert "correct horse" not in text
    assert "alice@example.org:$argon2id$" in text
    assert Accounts.load(path).verify("alice@example.org", "correct horse") == "alice@example.org"


def test_add_asks_again_when_the_two_entries_differ(config_file: Path) -> None:
    result = run(
        config_file, "add", "bob@example.org", input="first-try-1\nfirst-try-2\nsecond-try\nsecond-try\n"
    )
    assert result.exit_code == 0, result.output
    assert "do not match" in result.output
    assert Accounts.load(users_file(config_file)).verify("bob@example.org", "second-try") == "bob@example.org"


def test_password_stdin_for_scripts(config_file: Path) -> None:
    result = run(config_file, "add", "carol@example.org", "--password-stdin", input="from a pipe\n")
    assert result.exit_code == 0, result.output
    assert "Password" not in result.output
    assert (
        Accounts.load(users_file(config_file)).verify("carol@example.org", "from a pipe")
        == "carol@example.org"
    )


def test_empty_stdin_is_refused(config_file: Path) -> None:
    result = run(config_file, "add", "carol@example.org", "--password-stdin", input="")
    assert result.exit_code == 2
    assert "standard input held no password" in result.output
    assert not users_file(config_file).exists()


def test_aliases_are_stored_and_listed(config_file: Path) -> None:
    result = run(
        config_file,
        "add",
        "dana@example.org",
        "--alias",
        "conduct@example.org",
        "--alias",
        "Dana.Smith@example.org",
        "--password-stdin",
        input="alias test pw\n",
    )
    assert result.exit_code == 0, result.output
    assert "also sends as conduct@example.org, dana.smith@example.org" in result.output
    accounts = Accounts.load(users_file(config_file))
    assert accounts.addresses_of("dana@example.org") == {
        "dana@example.org",
        "conduct@example.org",
        "dana.smith@example.org",
    }
    listed = run(config_file, "list")
    assert listed.stdout == "dana@example.org  (also: conduct@example.org, dana.smith@example.org)\n"


def test_list_shows_addresses_only_never_hashes(config_file: Path) -> None:
    for address in ("zoe@example.org", "adam@example.org"):
        assert run(config_file, "add", address, "--password-stdin", input="long enough\n").exit_code == 0
    result = run(config_file, "list")
    assert result.exit_code == 0
    assert result.stdout == "adam@example.org\nzoe@example.org\n"
    assert "argon2" not in result.output


def test_list_without_accounts_says_how_to_add_one(config_file: Path) -> None:
    result = run(config_file, "list")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "No accounts in" in result.stderr
    assert "conduct-gateway user add ADDRESS" in result.stderr


def test_remove(config_file: Path) -> None:
    run(config_file, "add", "erin@example.org", "--password-stdin", input="long enough\n")
    result = run(config_file, "remove", "ERIN@example.org")
    assert result.exit_code == 0, result.output
    assert "Removed erin@example.org" in result.output
    assert Accounts.load(users_file(config_file)).members() == []
    assert stat.S_IMODE(users_file(config_file).stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("args", "input", "message"),
    [
        pytest.param(["add", "not-an-address"], "long enough\n", "not a usable address", id="bad-address"),
        pytest.param(["add", "fay@example.org"], "short\n", "at least 8 characters", id="short-password"),
        pytest.param(
            ["remove", "nobody@example.org"], None, "nobody@example.org is not a member", id="unknown"
        ),
        pytest.param(["password", "nobody@example.org"], "long enough\n", "is not a member", id="unknown-pw"),
    ],
)
def test_mistakes_are_one_clear_line_and_exit_2(
    config_file: Path, args: list[str], input: str | None, message: str
) -> None:
    stdin_flag = ["--password-stdin"] if input is not None else []
    result = run(config_file, *args, *stdin_flag, input=input)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert result.stderr.startswith("conduct-gateway: ")
    assert "Traceback" not in result.output


def test_adding_a_member_twice_is_refused(config_file: Path) -> None:
    run(config_file, "add", "gus@example.org", "--password-stdin", input="long enough\n")
    result = run(config_file, "add", "gus@example.org", "--password-stdin", input="another one\n")
    assert result.exit_code == 2
    assert "gus@example.org is already a member" in result.stderr
    assert (
        Accounts.load(users_file(config_file)).verify("gus@example.org", "long enough") == "gus@example.org"
    )


def test_password_changes_the_password(config_file: Path) -> None:
    run(config_file, "add", "hal@example.org", "--password-stdin", input="old password\n")
    result = run(config_file, "password", "hal@example.org", input="new password\nnew password\n")
    assert result.exit_code == 0, result.output
    accounts = Accounts.load(users_file(config_file))
    assert accounts.verify("hal@example.org", "new password") == "hal@example.org"
    assert accounts.verify("hal@example.org", "old password") is None


def test_invalid_settings_stop_the_command_with_file_line_and_key(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("auth:\n  users_fil: x\n")
    result = run(config, "list")
    assert result.exit_code == 2
    assert result.stderr == (
        f"conduct-gateway: {config}, line 2, key auth.users_fil: "
        "unknown key (check the spelling; see the configuration reference)\n"
    )


def test_add_warns_when_the_account_is_not_a_policy_member(config_file: Path) -> None:
    # The shipped policy lists Ada Quill; ann@ is in no organisation.members entry.
    outsider = run(config_file, "add", "ann@example.org", "--password-stdin", input="long enough\n")
    assert outsider.exit_code == 0, outsider.output
    assert "warning: account ann@example.org is not in organisation.members" in outsider.stderr
    member = run(config_file, "add", "ada.quill@example.org", "--password-stdin", input="long enough\n")
    assert member.exit_code == 0, member.output
    assert "ada.quill@example.org" not in member.stderr


def test_list_as_json_for_scripts(config_file: Path) -> None:
    run(
        config_file,
        "add",
        "dana@example.org",
        "--alias",
        "dana.s@example.org",
        "--password-stdin",
        input="a long pw\n",
    )
    run(config_file, "add", "adam@example.org", "--password-stdin", input="long enough\n")
    result = run(config_file, "list", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {"address": "adam@example.org", "aliases": []},
        {"address": "dana@example.org", "aliases": ["dana.s@example.org"]},
    ]
    assert "argon2" not in result.stdout
