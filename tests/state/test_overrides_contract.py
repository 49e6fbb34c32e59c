"""The override store's contract, on every backend; and on PostgreSQL, shared by several gateways."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from gateway.settings import GatewaySettings
from gateway.state.opening import State
from gateway.state.overrides import TOKEN_LIFETIME, Redeemed, Redemption, report_key
from gateway.state.ports import OverridesPort
from gateway.state.postgresql.database import Database
from gateway.state.postgresql.overrides import PostgresqlOverrides

ADA = "Ada@Example.org"
NOW = 1_800_000_000.0
DAY = 86400.0
QUOTAS = {"conduct-cc": (2, 7 * DAY), "communication": (5, 7 * DAY)}
REASON = "the committee asked me to write to Olive alone"


@pytest.fixture
def store(state: State) -> Iterator[OverridesPort]:
    with state.overrides.open() as opened:
        yield opened


def redeem(
    store: OverridesPort,
    token: str,
    *,
    message: str = "<m1@example.org>",
    rules: tuple[str, ...] = ("conduct-cc",),
    now: float = NOW + 60,
    sender: str = ADA,
    queue_id: str | None = "Q1",
    case: str | None = None,
    justification: str = REASON,
) -> Redemption:
    return store.redeem(
        token,
        sender=sender,
        message=message,
        rules=rules,
        justification=justification,
        quotas=QUOTAS,
        now=now,
        queue_id=queue_id,
        case=case,
    )


def test_a_token_is_redeemed_once_and_a_retry_of_the_same_message_is_the_same_override(
    store: OverridesPort,
) -> None:
    store.issue("WBJ8BF2D", ADA, ("conduct-cc",), NOW)
    first = redeem(store, "wbj8bf2d", case="lake")  # tokens are read case-insensitively
    assert first.outcome is Redeemed.ACCEPTED and first.reference is not None and not first.repeated
    again = redeem(store, "WBJ8BF2D", queue_id="Q2")
    assert again == Redemption(Redeemed.ACCEPTED, first.reference, repeated=True)
    assert redeem(store, "WBJ8BF2D", message="<other@example.org>").outcome is Redeemed.USED
    record = store.find(first.reference)
    assert record is not None
    assert (record.sender, record.rules, record.justification) == ("ada@example.org", ("conduct-cc",), REASON)
    assert (record.queue_id, record.case, record.at) == ("Q1", "lake", NOW + 60)
    assert [r.reference for r in store.since(NOW)] == [first.reference]
    assert store.since(NOW + 61) == [] and store.find("ovr-000000000000") is None


def test_a_token_is_bound_to_its_sender_rules_and_lifetime(store: OverridesPort) -> None:
    store.issue("AAAA2222", ADA, ("conduct-cc",), NOW)
    assert redeem(store, "AAAA2222", sender="ben@example.org").outcome is Redeemed.UNKNOWN
    assert redeem(store, "AAAA2222", rules=("communication",)).outcome is Redeemed.OTHER_RULES
    assert redeem(store, "AAAA2222", now=NOW + TOKEN_LIFETIME + 1).outcome is Redeemed.UNKNOWN
    assert redeem(store, "ZZZZ9999").outcome is Redeemed.UNKNOWN
    assert redeem(store, "AAAA2222").outcome is Redeemed.ACCEPTED


def test_the_quota_counts_a_senders_overrides_of_each_rule_in_a_sliding_window(store: OverridesPort) -> None:
    for number in range(3):
        store.issue(f"TOKEN00{number}", ADA, ("conduct-cc",), NOW)
    assert redeem(store, "TOKEN000", message="<a@example.org>").outcome is Redeemed.ACCEPTED
    assert redeem(store, "TOKEN001", message="<b@example.org>").outcome is Redeemed.ACCEPTED
    refused = redeem(store, "TOKEN002", message="<c@example.org>")
    assert refused == Redemption(Redeemed.QUOTA, rule="conduct-cc")
    store.issue("TOKEN003", ADA, ("conduct-cc",), NOW + 8 * DAY)  # the first two left the window
    later = redeem(store, "TOKEN003", message="<d@example.org>", now=NOW + 8 * DAY)
    assert later.outcome is Redeemed.ACCEPTED


def test_pruning_removes_expired_tokens_and_overrides_past_the_retention(store: OverridesPort) -> None:
    store.issue("OLD22222", ADA, ("conduct-cc",), NOW)
    old = redeem(store, "OLD22222")
    store.issue("UNUSED22", ADA, ("conduct-cc",), NOW)
    later = NOW + 40 * DAY
    store.issue("NEW22222", ADA, ("conduct-cc",), later)
    new = redeem(store, "NEW22222", message="<n@example.org>", now=later)
    assert store.note_report("k-old", "Q9", NOW) and store.note_report("k-new", "Q9", later)
    assert old.reference is not None and new.reference is not None
    assert store.prune(now=later + 60, retention=30 * DAY) == 1
    assert store.find(old.reference) is None and store.find(new.reference) is not None
    # The expired tokens (used or not) are gone: a retry of the old message is no longer known.
    assert redeem(store, "OLD22222", now=later + 60).outcome is Redeemed.UNKNOWN
    assert redeem(store, "NEW22222", message="<n@example.org>", now=later + 60).repeated
    assert store.note_report("k-old", "Q9", later + 60)  # forgotten with its retention
    assert not store.note_report("k-new", "Q9", later + 60)
    assert store.prune(now=later + 60, retention=30 * DAY) == 0


def test_forgetting_removes_the_overrides_of_a_case_its_messages_and_its_peoples_names(
    store: OverridesPort,
) -> None:
    references = []
    for number, (queue_id, case, why) in enumerate(
        [
            ("Q1", "lake", REASON),
            ("Q2", None, REASON),
            ("Q3", None, "Jin Park asked me to send it as it is"),
            ("Q4", "river", REASON),
        ]
    ):
        store.issue(f"FORGET2{number}", ADA, ("communication",), NOW)
        done = redeem(
            store,
            f"FORGET2{number}",
            rules=("communication",),
            message=f"<f{number}@example.org>",
            queue_id=queue_id,
            case=case,
            justification=why,
        )
        references.append(done.reference)
    assert store.forget("lake", {"Q2"}, lambda text: "jin park" in text.lower()) == 3
    assert [store.find(str(r)) is not None for r in references] == [False, False, False, True]
    assert redeem(store, "FORGET20", rules=("communication",), message="<f0@example.org>").outcome is (
        Redeemed.UNKNOWN
    )


def test_a_false_positive_report_key_is_new_once(store: OverridesPort) -> None:
    key = report_key("<reply@example.org>", "0661C0AB12CD34EF")
    assert key != report_key("<reply@example.org>", "0661C0AB12CD34F0")
    assert "reply@example.org" not in key
    assert store.note_report(key, "0661C0AB12CD34EF", NOW)
    assert not store.note_report(key, "0661C0AB12CD34EF", NOW + 5)


# -- several gateways on one database ------------------------------------------------------------------


def _gateway(settings: GatewaySettings) -> tuple[Database, PostgresqlOverrides]:
    """Another gateway's own pool on the same database."""
    database = Database.from_settings(settings.state.postgresql)
    return database, PostgresqlOverrides(database)


def test_a_token_issued_by_one_gateway_is_redeemed_once_through_another(
    postgresql_settings: GatewaySettings,
) -> None:
    database_a, gateway_a = _gateway(postgresql_settings)
    database_b, gateway_b = _gateway(postgresql_settings)
    database_c, gateway_c = _gateway(postgresql_settings)
    try:
        gateway_a.issue("SHARED22", ADA, ("conduct-cc",), NOW)
        outcomes: list[Redemption] = []
        start = threading.Barrier(2)

        def attempt(store: PostgresqlOverrides, message: str) -> None:
            start.wait()
            outcomes.append(redeem(store, "SHARED22", message=message))

        threads = [
            threading.Thread(target=attempt, args=(gateway_b, "<b@example.org>")),
            threading.Thread(target=attempt, args=(gateway_c, "<c@example.org>")),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(o.outcome for o in outcomes) == sorted([Redeemed.ACCEPTED, Redeemed.USED])
        [granted] = [o for o in outcomes if o.outcome is Redeemed.ACCEPTED]
        assert granted.reference is not None
        found = gateway_a.find(granted.reference)
        assert found is not None and found.justification == REASON  # the committee reads it anywhere
        assert len(gateway_a.since(NOW)) == 1
    finally:
        for database in (database_a, database_b, database_c):
            database.close()


def test_the_quota_holds_across_gateways_redeeming_at_the_same_moment(
    postgresql_settings: GatewaySettings,
) -> None:
    pools = [_gateway(postgresql_settings) for _ in range(4)]
    try:
        for number in range(4):
            pools[0][1].issue(f"QUOTA22{number}", ADA, ("conduct-cc",), NOW)
        outcomes: list[Redeemed] = []
        start = threading.Barrier(4)

        def attempt(store: PostgresqlOverrides, number: int) -> None:
            start.wait()
            outcomes.append(redeem(store, f"QUOTA22{number}", message=f"<q{number}@example.org>").outcome)

        threads = [threading.Thread(target=attempt, args=(pools[n][1], n)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(outcomes) == sorted([Redeemed.ACCEPTED] * 2 + [Redeemed.QUOTA] * 2)  # count: 2
    finally:
        for database, _store in pools:
            database.close()
