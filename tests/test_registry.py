"""The case registry: encrypted at rest, authenticated, atomic, 0600, and merged into the policy."""

from __future__ import annotations

import base64
import json
import os
import stat
import textwrap
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway import code_names
from gateway.code_names import code_words, new_code_name
from gateway.errors import ConfigError
from gateway.policy.config import Case
from gateway.policy.engine import compile_policy
from gateway.policy.loader import RegistryCases, merge_cases, parse_policy_text
from gateway.settings import GatewaySettings, RegistrySettings
from gateway.state import registry as registry_module
from gateway.state.registry import (
    MAGIC,
    CaseRegistry,
    generate_key,
    parse_key,
    write_key_file,
)

IDENTITIES = ("Jorunn Halvorsen", "Jojo", "jorunn.h@mail.example.net", "jorunn_h", "Tiberius Quell")
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
        "witnesses": [{"id": "amber-finch", "names": ["Tiberius Quell"]}],
        "consents": [
            {
                "person": "amber-finch",
                "recipient": "orga@events.example.com",
                "reference": "mail of 2024-03-02",
                "date": "2024-03-02",
            }
        ],
    }
)
POLICY = textwrap.dedent(
    """\
    organisation:
      conduct_address: conduct@example.org
      members:
        - name: Ada Quill
          addresses: [ada@example.org]
    rules:
      - rule: reporter-protection
        action: reject
    """
)


def open_registry(tmp_path: Path, **settings: object) -> CaseRegistry:
    environ = settings.pop("environ", {})
    assert isinstance(environ, dict)
    return CaseRegistry(tmp_path / "registry" / "cases.registry", RegistrySettings(**settings), environ)  # type: ignore[arg-type]


def test_round_trip_and_no_plaintext_identity_on_disk(tmp_path: Path) -> None:
    registry = open_registry(tmp_path)
    registry.write([CASE])
    assert registry.cases() == (CASE,)
    data = registry.path.read_bytes()
    assert data.startswith(MAGIC)
    for identity in (*IDENTITIES, "quiet-heron", "home shelf", "orga@events.example.com"):
        for form in (identity, identity.lower(), identity.upper()):
            assert form.encode("utf-8") not in data, form
            assert form.encode("utf-16-le") not in data, form
    # Nothing else in the folder holds them either (key file, lock file).
    for path in registry.path.parent.iterdir():
        assert all(identity.encode() not in path.read_bytes() for identity in IDENTITIES), path


def test_file_and_folder_permissions(tmp_path: Path) -> None:
    registry = open_registry(tmp_path)
    registry.write([CASE])
    assert stat.S_IMODE(registry.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(registry.path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(registry.default_key_file.stat().st_mode) == 0o600


def test_size_is_padded(tmp_path: Path) -> None:
    registry = open_registry(tmp_path)
    registry.write([CASE])
    small = registry.path.stat().st_size
    registry.write([CASE, CASE.model_copy(update={"code": "stunned bulb"})])
    assert registry.path.stat().st_size == small  # both fit one padding block


def test_wrong_key_is_a_clear_error_naming_the_file(tmp_path: Path) -> None:
    open_registry(tmp_path).write([CASE])
    wrong = open_registry(tmp_path, environ={"CONDUCT_REGISTRY_KEY": generate_key()})
    with pytest.raises(ConfigError) as caught:
        wrong.cases()
    message = str(caught.value)
    assert str(wrong.path) in message and "environment variable CONDUCT_REGISTRY_KEY" in message
    assert "cannot be decrypted" in message
    assert not any(identity in message for identity in IDENTITIES)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[:-1] + bytes([data[-1] ^ 1]), id="last-byte"),
        pytest.param(lambda data: data[:60] + bytes([data[60] ^ 0x80]) + data[61:], id="ciphertext"),
        # XOR, not overwrite: a random nonce byte may already hold the value written (1 in 256 runs).
        pytest.param(
            lambda data: data[: len(MAGIC) + 3] + bytes([data[len(MAGIC) + 3] ^ 1]) + data[len(MAGIC) + 4 :],
            id="nonce",
        ),
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
    ],
)
def test_tampered_file_is_refused(tmp_path: Path, damage: object) -> None:
    registry = open_registry(tmp_path)
    registry.write([CASE])
    assert callable(damage)
    registry.path.write_bytes(damage(registry.path.read_bytes()))
    with pytest.raises(ConfigError, match="altered or damaged"):
        registry.cases()


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"cases: []\n", id="yaml"),
        pytest.param(MAGIC, id="magic-only"),
    ],
)
def test_not_a_registry(tmp_path: Path, content: bytes) -> None:
    registry = open_registry(tmp_path)
    registry.write([])
    registry.path.write_bytes(content)
    with pytest.raises(ConfigError, match="not a conduct-gateway case registry"):
        registry.cases()


def test_no_registry_needs_no_key(tmp_path: Path) -> None:
    registry = open_registry(tmp_path)
    assert registry.read() is None and registry.cases() == ()
    assert not registry.path.parent.exists()  # reading creates nothing


def test_key_from_environment_wins(tmp_path: Path) -> None:
    key = generate_key()
    registry = open_registry(tmp_path, environ={"CONDUCT_REGISTRY_KEY": key})
    registry.write([CASE])
    assert not registry.default_key_file.exists()
    assert open_registry(tmp_path, environ={"CONDUCT_REGISTRY_KEY": key}).cases() == (CASE,)
    with pytest.raises(ConfigError, match="no key for the case registry"):
        open_registry(tmp_path).cases()  # and no key file is made up for an existing registry
    assert not registry.default_key_file.exists()


def test_key_file(tmp_path: Path) -> None:
    key_file = tmp_path / "secrets" / "registry.key"
    write_key_file(key_file)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    with pytest.raises(ConfigError, match="never overwritten"):
        write_key_file(key_file)
    registry = open_registry(tmp_path, key_file=key_file)
    registry.write([CASE])
    assert not registry.default_key_file.exists()
    assert open_registry(tmp_path, key_file=key_file).cases() == (CASE,)


def test_configured_key_file_must_exist(tmp_path: Path) -> None:
    registry = open_registry(tmp_path, key_file=tmp_path / "missing.key")
    with pytest.raises(ConfigError, match="does not exist"):
        registry.write([CASE])
    assert not registry.path.exists()


@pytest.mark.parametrize("text", ["", "short", "A" * 44, "not base64 at all!!!!!!!!!!!!!!!!!!!!!!!!!!!"])
def test_malformed_keys(text: str) -> None:
    with pytest.raises(ConfigError, match="not a case registry key"):
        parse_key(text, "environment variable X")


def test_key_formats() -> None:
    secret = os.urandom(32)
    assert parse_key(base64.b64encode(secret).decode() + "\n", "x") == secret
    assert parse_key(base64.urlsafe_b64encode(secret).decode(), "x") == secret


def test_failed_write_keeps_the_old_registry_and_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = open_registry(tmp_path)
    registry.write([CASE])
    before = registry.path.read_bytes()

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(registry_module.os, "fsync", broken_fsync)
    with pytest.raises(ConfigError, match="cannot write the case registry: No space left"):
        registry.write([])
    monkeypatch.undo()
    assert registry.path.read_bytes() == before
    assert sorted(p.name for p in registry.path.parent.iterdir()) == [
        ".cases.registry.lock",
        "cases.registry",
        "registry.key",
    ]


def test_a_change_that_fails_writes_nothing(tmp_path: Path) -> None:
    registry = open_registry(tmp_path)
    registry.write([CASE])
    before = registry.path.read_bytes()

    def refuse(_cases: tuple[Case, ...]) -> list[Case]:
        raise ConfigError("no")

    with pytest.raises(ConfigError):
        registry.update(refuse)
    assert registry.path.read_bytes() == before


def test_concurrent_updates_are_all_kept(tmp_path: Path) -> None:
    registry = open_registry(tmp_path)
    registry.write([])

    def add(number: int) -> None:
        code = f"case {number}"
        open_registry(tmp_path).update(lambda cases: (*cases, Case(code=code)))

    threads = [threading.Thread(target=add, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(item.code for item in registry.cases()) == sorted(f"case {n}" for n in range(8))


def encrypt_raw(registry: CaseRegistry, plain: bytes) -> None:
    """Write ``plain`` encrypted with the registry's key, as a buggy or foreign tool might."""
    nonce = os.urandom(12)
    data = MAGIC + nonce + AESGCM(registry.key(create=True).secret).encrypt(nonce, plain, MAGIC)
    registry.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    registry.path.write_bytes(data)


def test_invalid_content_names_the_file_and_key_not_the_value(tmp_path: Path) -> None:
    registry = open_registry(tmp_path)
    bad = CASE.model_dump(mode="json")
    bad["reporters"][0]["addresses"] = ["Jorunn Halvorsen at home"]
    encrypt_raw(registry, json.dumps({"format": 1, "cases": [bad]}).encode())
    with pytest.raises(ConfigError) as caught:
        registry.cases()
    message = str(caught.value)
    assert str(registry.path) in message and "reporters[0].addresses[0]" in message
    assert "Jorunn" not in message


@pytest.mark.parametrize(
    "plain",
    [
        pytest.param(b"not json", id="not-json"),
        pytest.param(b'{"format": 2, "cases": []}', id="future-format"),
        pytest.param(b'{"format": 1, "cases": {}}', id="cases-not-a-list"),
    ],
)
def test_unknown_content_format(tmp_path: Path, plain: bytes) -> None:
    registry = open_registry(tmp_path)
    encrypt_raw(registry, plain)
    with pytest.raises(ConfigError, match="not in a known format"):
        registry.cases()


def test_settings_default_path_and_resolution(tmp_path: Path) -> None:
    settings = GatewaySettings(state_dir=tmp_path / "state").resolve(tmp_path)
    registry = CaseRegistry.from_settings(settings)
    assert registry.path == tmp_path / "state" / "registry" / "cases.registry"
    configured = GatewaySettings(
        registry=RegistrySettings(path=Path("elsewhere/cases.bin"), key_file=Path("k/registry.key"))
    ).resolve(tmp_path)
    assert configured.registry.path == tmp_path / "elsewhere" / "cases.bin"
    assert configured.registry.key_file == tmp_path / "k" / "registry.key"


# --- merging into the policy ------------------------------------------------------------------------


def test_registry_cases_are_compiled_into_the_matcher() -> None:
    document = parse_policy_text(POLICY, Path("policy.yaml"))
    plain = compile_policy(document, POLICY.encode())
    merged = compile_policy(document, POLICY.encode(), registry=RegistryCases((CASE,), "d1"))
    assert [c.code for c in merged.document.cases] == ["home shelf"]
    assert {i.person for i in merged.finder.find("a note from Jorunn Halvorsen")} == {"quiet-heron"}
    assert merged.finder.find("Tiberius Quell saw it")
    assert any(c.person == "amber-finch" for c in merged.consents)
    assert merged.version != plain.version
    assert compile_policy(document, POLICY.encode(), registry=RegistryCases((CASE,), "d2")).version != (
        merged.version
    )


def test_identical_case_in_policy_and_registry_counts_once() -> None:
    in_policy = (
        POLICY
        + "cases:\n  - code: home shelf\n    witnesses:\n"
        + "      - id: amber-finch\n        names: [Tiberius Quell]\n"
    )
    document = parse_policy_text(in_policy, Path("policy.yaml"))
    same = document.cases[0]
    assert merge_cases(document, RegistryCases((same,), "d")).cases == (same,)
    with pytest.raises(ConfigError, match="also in the policy file, with different content"):
        merge_cases(document, RegistryCases((CASE,), "d", "case registry /x"))


def test_problems_in_registry_cases_name_the_registry_and_key() -> None:
    document = parse_policy_text(POLICY, Path("policy.yaml"))
    dangling = CASE.model_copy(
        update={"consents": (CASE.consents[0].model_copy(update={"person": "nobody-here"}),)}
    )
    with pytest.raises(ConfigError) as caught:
        merge_cases(document, RegistryCases((dangling,), "d", "case registry /r"))
    assert "case registry /r, case 'home shelf', key consents[0].person" in str(caught.value)
    with pytest.raises(ConfigError, match="two cases have the code name"):
        merge_cases(document, RegistryCases((CASE, CASE), "d"))


# --- code names ----------------------------------------------------------------------------------


def test_word_lists() -> None:
    adjectives, nouns = code_words()
    assert len(adjectives) + len(nouns) >= 1000
    assert len(adjectives) >= 400 and len(nouns) >= 400
    for word in (*adjectives, *nouns):
        assert word.isascii() and word.isalpha() and word.islower(), word
    assert len(set(adjectives)) == len(adjectives) and len(set(nouns)) == len(nouns)
    common_first_names = {"robin", "amber", "rose", "holly", "jack", "grace", "frank", "will", "mark"}
    assert not common_first_names & {*adjectives, *nouns}


def test_code_names_are_two_words_from_the_lists() -> None:
    adjectives, nouns = code_words()
    for _ in range(50):
        first, second = new_code_name(()).split(" ")
        assert first in adjectives and second in nouns
        adjective, noun = new_code_name((), joiner="-").split("-")
        assert adjective in adjectives and noun in nouns
    assert Case(code=new_code_name(())).code  # a valid case code name


def test_code_names_avoid_collisions(monkeypatch: pytest.MonkeyPatch) -> None:
    picks = iter(["home", "shelf", "home", "shelf", "stunned", "bulb"])
    monkeypatch.setattr(code_names.secrets, "choice", lambda _words: next(picks))
    assert new_code_name({"home shelf"}) == "stunned bulb"


def test_code_name_space_exhausted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(code_names.secrets, "choice", lambda _words: "home")
    with pytest.raises(ConfigError, match="could not find an unused code name"):
        new_code_name({"home home"})
