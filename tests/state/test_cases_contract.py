"""The case registry's contract, on every backend; then what only the PostgreSQL registry adds."""

from __future__ import annotations

import threading

import pytest

from gateway.errors import ConfigError, RegistryUnreadable
from gateway.policy.config import Case
from gateway.settings import GatewaySettings
from gateway.state.opening import State, open_state
from gateway.state.registry import RegistryKey, generate_key, parse_key

IDENTITIES = ("Jorunn Halvorsen", "Jojo", "jorunn.h@mail.example.net", "jorunn_h")
CASE = Case.model_validate(
    {
        "code": "home shelf",
        "severity": "severe",
        "reporters": [
            {
                "id": "quiet-heron",
                "names": ["Jorunn Halvorsen"],
                "aliases": ["Jojo"],
                "addresses": ["jorunn.h@mail.example.net"],
                "usernames": ["jorunn_h"],
            }
        ],
    }
)


def test_no_registry_reads_as_none(state: State) -> None:
    assert state.cases.read() is None
    assert state.cases.cases() == ()
    assert state.cases.stat() is None
    assert state.cases.digest() is None


def test_a_round_trip_and_every_write_changes_the_stamp(state: State) -> None:
    state.cases.write([CASE])
    first = state.cases.read()
    assert first is not None
    assert first.cases == (CASE,)
    stat, digest = state.cases.stat(), state.cases.digest()
    assert digest == first.sha256
    state.cases.update(lambda cases: (*cases, Case(code="quiet lake")))
    assert [case.code for case in state.cases.cases()] == ["home shelf", "quiet lake"]
    assert state.cases.stat() != stat
    assert state.cases.digest() != digest


def test_concurrent_updates_are_all_kept(state_settings: GatewaySettings) -> None:
    open_state(state_settings).cases.write([])

    def add(number: int) -> None:
        open_state(state_settings).cases.update(lambda cases: (*cases, Case(code=f"case {number}")))

    threads = [threading.Thread(target=add, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    codes = sorted(case.code for case in open_state(state_settings).cases.cases())
    assert codes == sorted(f"case {n}" for n in range(6))


def test_rekey_then_only_the_new_key_reads_it(state: State) -> None:
    state.cases.write([CASE])
    new_key = RegistryKey(parse_key(generate_key(), "test"), "new key")
    assert state.cases.rekey(new_key) == 1
    with pytest.raises(RegistryUnreadable, match="cannot be decrypted"):
        state.cases.read()


def test_rekey_without_a_registry_is_refused(state: State) -> None:
    with pytest.raises(ConfigError, match="nothing to re-encrypt"):
        state.cases.rekey(RegistryKey(parse_key(generate_key(), "test"), "new key"))


def test_a_failing_change_writes_nothing(state: State) -> None:
    state.cases.write([CASE])

    def fail(cases: tuple[Case, ...]) -> tuple[Case, ...]:
        raise ConfigError("no")

    with pytest.raises(ConfigError):
        state.cases.update(fail)
    assert state.cases.cases() == (CASE,)


# -- PostgreSQL only ---------------------------------------------------------------------------------


def _row(settings: GatewaySettings) -> bytes:
    state = open_state(settings)
    from gateway.state.postgresql.registry import PostgresqlCaseRegistry

    assert isinstance(state.cases, PostgresqlCaseRegistry)
    with state.cases._database().connection() as connection:
        row = connection.execute("SELECT data FROM case_registry").fetchone()
    assert row is not None
    return bytes(row[0])


def test_the_database_never_holds_an_identity_in_clear(postgresql_settings: GatewaySettings) -> None:
    open_state(postgresql_settings).cases.write([CASE])
    data = _row(postgresql_settings)
    for identity in (*IDENTITIES, "quiet-heron", "home shelf"):
        for form in (identity, identity.lower()):
            assert form.encode("utf-8") not in data
            assert form.encode("utf-16-le") not in data


def test_an_altered_row_is_refused(postgresql_settings: GatewaySettings) -> None:
    registry = open_state(postgresql_settings).cases
    registry.write([CASE])
    data = bytearray(_row(postgresql_settings))
    data[-1] ^= 1
    from gateway.state.postgresql.registry import PostgresqlCaseRegistry

    assert isinstance(registry, PostgresqlCaseRegistry)
    with registry._database().connection() as connection:
        connection.execute("UPDATE case_registry SET data = %s", (bytes(data),))
    with pytest.raises(RegistryUnreadable, match="altered or damaged"):
        registry.read()


def test_without_a_configured_key_it_says_every_gateway_needs_the_same_one(
    postgresql_settings: GatewaySettings,
) -> None:
    keyless = postgresql_settings.model_copy(
        update={
            "registry": postgresql_settings.registry.model_copy(update={"key_file": None, "key_env": None})
        }
    )
    with pytest.raises(ConfigError, match="every gateway needs the same key"):
        open_state(keyless).cases.write([CASE])
    assert open_state(keyless).cases.read() is None  # nothing was written
    assert open_state(keyless).cases.key_warning() is None
