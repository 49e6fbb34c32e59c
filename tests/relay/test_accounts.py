"""The users file (argon2 hashes, aliases, atomic 0600 rewrites) and the failed-login throttle."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from gateway.errors import AccountError, ConfigError
from gateway.login_throttle import LoginThrottle
from gateway.state.accounts import Accounts
from tests.relay.smtp_fixtures import FAST_HASHER, PASSWORD

HASH = "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"


def load(path: Path) -> Accounts:
    return Accounts.load(path, hasher=FAST_HASHER)


def test_missing_users_file_means_no_members(tmp_path: Path) -> None:
    accounts = load(tmp_path / "users.passwd")
    assert accounts.members() == []
    assert accounts.verify("alice@example.org", PASSWORD) is None


def test_add_verify_list_and_remove(tmp_path: Path) -> None:
    path = tmp_path / "config" / "users.passwd"
    accounts = load(path)
    accounts.add("Alice@Example.ORG", PASSWORD, aliases=["conduct@example.org", "A.Smith@example.org"])
    accounts.add("bob@example.test", "another password")
    assert accounts.members() == ["alice@example.org", "bob@example.test"]
    reread = load(path)
    assert reread.members() == ["alice@example.org", "bob@example.test"]
    assert reread.verify("ALICE@example.org ", PASSWORD) == "alice@example.org"
    assert reread.verify("alice@example.org", "wrong") is None
    assert reread.verify("conduct@example.org", PASSWORD) is None  # the login is the primary address
    assert reread.addresses_of("alice@example.org") == {
        "alice@example.org",
        "conduct@example.org",
        "a.smith@example.org",
    }
    assert reread.addresses_of("nobody@example.org") == frozenset()
    reread.remove("alice@example.org")
    assert load(path).members() == ["bob@example.test"]


def test_users_file_is_private_hashed_and_rewritten_atomically(tmp_path: Path) -> None:
    path = tmp_path / "users.passwd"
    accounts = load(path)
    accounts.add("alice@example.org", PASSWORD)
    accounts.add("bob@example.org", PASSWORD)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert PASSWORD not in text
    assert "alice@example.org:$argon2id$" in text
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert leftovers == [".users.passwd.lock", "users.passwd"]


def test_set_password(tmp_path: Path) -> None:
    path = tmp_path / "users.passwd"
    load(path).add("alice@example.org", PASSWORD)
    load(path).set_password("alice@example.org", "a brand new password")
    assert load(path).verify("alice@example.org", "a brand new password") == "alice@example.org"
    assert load(path).verify("alice@example.org", PASSWORD) is None


@pytest.mark.parametrize(
    ("address", "password", "aliases", "problem"),
    [
        pytest.param("not-an-address", PASSWORD, (), "not a usable address", id="bad-address"),
        pytest.param("a@example.org", PASSWORD, ("a@@example.org",), "not a usable address", id="bad-alias"),
        pytest.param("alice@example.org", PASSWORD, (), "already a member", id="duplicate"),
        pytest.param(
            "carol@example.org", PASSWORD, ("conduct@example.org",), "already belongs to", id="alias-taken"
        ),
        pytest.param("conduct@example.org", PASSWORD, (), "already belongs to", id="address-is-alias"),
        pytest.param("carol@example.org", "short", (), "at least 8", id="short-password"),
    ],
)
def test_add_refuses_bad_or_conflicting_accounts(
    tmp_path: Path, address: str, password: str, aliases: tuple[str, ...], problem: str
) -> None:
    path = tmp_path / "users.passwd"
    load(path).add("alice@example.org", PASSWORD, aliases=["conduct@example.org"])
    with pytest.raises(AccountError, match=problem):
        load(path).add(address, password, aliases)
    assert load(path).members() == ["alice@example.org"]


def test_remove_unknown_member(tmp_path: Path) -> None:
    with pytest.raises(AccountError, match="is not a member"):
        load(tmp_path / "users.passwd").remove("nobody@example.org")


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        pytest.param("alice@example.org", "expected address:argon2-hash", id="no-hash"),
        pytest.param("alice@example.org:secret", "not an argon2 hash", id="plain-password"),
        pytest.param(f"alice:{HASH}", "bad address 'alice'", id="bad-address"),
        pytest.param(f"alice@example.org:{HASH}:x@", "bad alias 'x@'", id="bad-alias"),
        pytest.param(
            f"bob@example.org:{HASH}:alice@example.org", "already belongs to alice", id="alias-clash"
        ),
        pytest.param(
            f"a@example.org:{HASH}:b@example.org:extra", "expected address:argon2-hash", id="too-many"
        ),
    ],
)
def test_bad_line_is_a_config_error_naming_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    path = tmp_path / "users.passwd"
    path.write_text(f"# members\n\nalice@example.org:{HASH}\n{line}\n")
    with pytest.raises(ConfigError) as error:
        load(path)
    assert str(error.value).startswith(f"{path}, line 4: ")
    assert problem in str(error.value)


def test_running_server_picks_up_changes_and_survives_a_broken_file(tmp_path: Path) -> None:
    path = tmp_path / "users.passwd"
    running = load(path)
    load(path).add("alice@example.org", PASSWORD)  # `conduct-gateway user add` in another process
    running.reload_if_changed()
    assert running.verify("alice@example.org", PASSWORD) == "alice@example.org"
    path.write_text("garbage line\n")
    running.reload_if_changed()
    assert running.members() == ["alice@example.org"]  # the last good members stay
    path.unlink()
    running.reload_if_changed()
    assert running.members() == []


def test_throttle_counts_failures_per_address_in_a_sliding_window() -> None:
    now = [1000.0]
    throttle = LoginThrottle(max_failures=3, window=60.0, clock=lambda: now[0])
    for _ in range(2):
        throttle.record_failure("192.0.2.1")
    assert not throttle.blocked("192.0.2.1")
    throttle.record_failure("192.0.2.1")
    assert throttle.blocked("192.0.2.1")
    assert not throttle.blocked("192.0.2.2")
    now[0] += 59.0
    assert throttle.blocked("192.0.2.1")
    now[0] += 2.0
    assert not throttle.blocked("192.0.2.1")


def test_throttle_memory_stays_bounded() -> None:
    now = [0.0]
    throttle = LoginThrottle(max_failures=2, window=10.0, clock=lambda: now[0])
    for n in range(LoginThrottle._PRUNE_ABOVE):
        throttle.record_failure(f"10.0.{n // 256}.{n % 256}")
    now[0] = 20.0
    throttle.record_failure("192.0.2.9")
    assert len(throttle._failures) == 1
