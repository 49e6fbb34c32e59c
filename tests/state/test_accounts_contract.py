"""The accounts port's contract, on the users file and on PostgreSQL (with cheap argon2 parameters;
``test_accounts_shared`` goes through ``open_state``)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from argon2 import PasswordHasher

from gateway.errors import AccountError
from gateway.settings import GatewaySettings
from gateway.state.opening import open_state
from gateway.state.ports import AccountsPort

# Cheap argon2 parameters: the tests check the store, not the hash's cost.
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


@pytest.fixture
def open_accounts(state_settings: GatewaySettings, state_backend: str) -> Callable[[], AccountsPort]:
    if state_backend == "postgresql":
        from gateway.state.postgresql.accounts import PostgresqlAccounts
        from gateway.state.postgresql.opening import shared_database

        database = shared_database(state_settings.state.postgresql)
        return lambda: PostgresqlAccounts(database, FAST)
    from gateway.state.accounts import Accounts

    users_file = open_state(state_settings).accounts.open().path
    return lambda: Accounts.load(users_file, FAST)


def test_add_verify_and_remove(open_accounts: Callable[[], AccountsPort]) -> None:
    accounts = open_accounts()
    assert accounts.members() == []
    accounts.add("Maya.Member@Example.org", "correct horse battery", aliases=["conduct@example.org"])
    assert accounts.members() == ["maya.member@example.org"]
    assert accounts.verify("MAYA.member@example.org", "correct horse battery") == "maya.member@example.org"
    assert accounts.verify("maya.member@example.org", "wrong password") is None
    assert accounts.verify("nobody@example.org", "correct horse battery") is None
    assert accounts.addresses_of("maya.member@example.org") == {
        "maya.member@example.org",
        "conduct@example.org",
    }
    assert accounts.aliases_of("maya.member@example.org") == ("conduct@example.org",)
    accounts.set_password("maya.member@example.org", "another long password")
    assert accounts.verify("maya.member@example.org", "another long password") == "maya.member@example.org"
    accounts.remove("maya.member@example.org")
    assert accounts.members() == []
    with pytest.raises(AccountError, match="is not a member"):
        accounts.remove("maya.member@example.org")


def test_addresses_are_owned_once_and_passwords_are_long_enough(
    open_accounts: Callable[[], AccountsPort],
) -> None:
    accounts = open_accounts()
    accounts.add("maya@example.org", "correct horse battery", aliases=["shared@example.org"])
    with pytest.raises(AccountError, match="already a member"):
        accounts.add("maya@example.org", "correct horse battery")
    with pytest.raises(AccountError, match=r"already belongs to maya@example\.org"):
        accounts.add("sam@example.org", "correct horse battery", aliases=["shared@example.org"])
    with pytest.raises(AccountError, match="at least"):
        accounts.add("sam@example.org", "short")
    with pytest.raises(AccountError, match="not a usable address"):
        accounts.add("not an address", "correct horse battery")
    assert accounts.members() == ["maya@example.org"]


def test_another_process_change_is_seen_after_reload(open_accounts: Callable[[], AccountsPort]) -> None:
    gateway, cli = open_accounts(), open_accounts()
    cli.add("maya@example.org", "correct horse battery")
    gateway.reload_if_changed()
    assert gateway.verify("maya@example.org", "correct horse battery") == "maya@example.org"
    cli.remove("maya@example.org")
    gateway.reload_if_changed()
    assert gateway.members() == []


def test_concurrent_adds_are_all_kept(open_accounts: Callable[[], AccountsPort]) -> None:
    def add(number: int) -> None:
        open_accounts().add(f"member{number}@example.org", "correct horse battery")

    threads = [threading.Thread(target=add, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert open_accounts().members() == sorted(f"member{n}@example.org" for n in range(6))
