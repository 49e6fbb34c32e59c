"""The fingerprint store's contract, on every backend; then what only the shared store adds."""

from __future__ import annotations

import pytest

from gateway.policy.matcher import IdentityMatcher
from gateway.policy.mime import parse_message
from gateway.policy.model import IdentityKind, Mention, ProtectedIdentity
from gateway.settings import GatewaySettings
from gateway.state.fingerprints import FingerprintError
from gateway.state.opening import State, open_state

DISTINCTIVE = "the purple giraffe umbrella incident behind the marquee after the lightning talks"
REPORT = (
    f"I want to report what happened on Saturday: {DISTINCTIVE}. He shouted at me in front of "
    "everyone and then followed me to the registration desk, which made me leave the event early."
)


def test_learnt_text_is_found_and_survives_a_reopen(state: State) -> None:
    with state.fingerprints.open() as store:
        learnt = store.learn("home shelf", "doc-1", REPORT, person="quiet-heron", source="test")
        assert learnt.shingles == len(REPORT.split()) - 3
        (overlap,) = store.overlaps(f"Forwarding: {REPORT}")
        assert (overlap.case, overlap.person, overlap.fraction) == ("home shelf", "quiet-heron", 1.0)
    assert state.fingerprints.exists()
    with state.fingerprints.open() as reopened:
        assert reopened.overlaps(REPORT)[0].document == "doc-1"
        assert reopened.cases() == {"home shelf": 1}


def test_another_writer_is_picked_up_without_a_reopen(state: State) -> None:
    with state.fingerprints.open() as gateway, state.fingerprints.open() as cli:
        assert gateway.overlaps(REPORT) == []
        cli.learn("home shelf", "doc-1", REPORT)
        assert [o.document for o in gateway.overlaps(REPORT)] == ["doc-1"]
        cli.learn(
            "home shelf", "doc-1", "completely different words that share nothing with the report at all"
        )
        assert gateway.overlaps(REPORT) == []
        cli.learn("home shelf", "doc-2", REPORT)
        cli.learn("other case", "doc-3", REPORT)
        assert cli.forget_case("home shelf") == 2
        assert [o.case for o in gateway.overlaps(REPORT)] == ["other case"]
        assert gateway.statistics().documents == 1


def test_one_messages_lookups_share_one_check(state: State) -> None:
    with state.fingerprints.open() as gateway, state.fingerprints.open() as cli:
        first = gateway.for_message()
        assert first.overlaps(REPORT) == []
        cli.learn("home shelf", "doc-1", REPORT)
        assert first.overlaps(REPORT) == []
        assert [o.document for o in gateway.for_message().overlaps(REPORT)] == ["doc-1"]
        gateway.refresh()


def test_own_writes_are_seen_at_once_even_by_a_checked_view(state: State) -> None:
    with state.fingerprints.open() as store:
        view = store.for_message()
        store.learn("home shelf", "doc-1", REPORT)
        assert [o.document for o in view.overlaps(REPORT)] == ["doc-1"]


def test_short_texts_store_nothing(state: State) -> None:
    with state.fingerprints.open() as store:
        assert store.learn("c", "d", "thank you so much").shingles == 0
        assert store.cases() == {}


def test_whom_a_message_names_is_kept_as_ids(state: State) -> None:
    finder = IdentityMatcher.build(
        [
            ProtectedIdentity("home shelf", "amber-finch", IdentityKind.NAME, "Maya Lind"),
            ProtectedIdentity("home shelf", "slate-owl", IdentityKind.NAME, "Sam Okonkwo"),
        ]
    )
    report = parse_message(
        b"From: Robin <robin@example.net>\r\nTo: conduct@example.org\r\nSubject: what happened\r\n"
        b"Message-ID: <r1@example.net>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        + REPORT.encode()
        + b" Maya Lind saw it all.\r\n"
    )
    with state.fingerprints.open() as store:
        store.learn_message("home shelf", report, person="quiet-heron", source="test", finder=finder)
    with state.fingerprints.open() as reopened:
        assert reopened.for_message().named_by("home shelf", "quiet-heron") == {
            Mention("home shelf", "amber-finch", IdentityKind.NAME)
        }


# -- PostgreSQL only ---------------------------------------------------------------------------------


def test_the_rows_hold_no_text_and_no_name(postgresql_settings: GatewaySettings) -> None:
    state = open_state(postgresql_settings)
    with state.fingerprints.open() as store:
        store.learn("home shelf", "doc-1", REPORT + " Maya Lind")
    from gateway.state.postgresql.opening import shared_database

    with shared_database(postgresql_settings.state.postgresql).connection() as connection:
        rows = connection.execute("SELECT * FROM fingerprint_documents").fetchall()
        meta = connection.execute("SELECT * FROM fingerprint_meta").fetchall()
    dump = repr(rows).lower() + repr(meta).lower()
    for needle in ("giraffe", "marquee", "registration", "maya", "lind"):
        assert needle not in dump
    assert state.layout.fingerprint_key.read_bytes() not in repr(rows + meta).encode()


def test_a_gateway_with_another_key_is_refused(postgresql_settings: GatewaySettings) -> None:
    state = open_state(postgresql_settings)
    with state.fingerprints.open() as store:
        store.learn("home shelf", "doc-1", REPORT)
    state.layout.fingerprint_key.write_bytes(bytes(32))  # a second host that made its own key
    with pytest.raises(FingerprintError, match="every gateway sharing the database needs the same key"):
        state.fingerprints.open()
