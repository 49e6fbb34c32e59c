"""Consent: in force until it expires or is withdrawn, judged on a date handed in; every use audited."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import ConfigError
from gateway.policy.committee import Roster
from gateway.policy.engine import CompiledPolicy, compile_policy, evaluate
from gateway.policy.loader import parse_policy_text
from gateway.policy.mime import parse_message
from gateway.policy.model import Consent, Envelope, Outcome, ThreadFacts, Verdict

GIVEN = datetime.date(2025, 3, 2)
MEMBER = "ada@example.org"
FORMER = "ben@example.org"  # a member whose account may be removed
ORGANISERS = "organisers@events.example.com"
REFERENCE = "Sam's email of 2025-03-02, case folder"

POLICY = """\
organisation:
  conduct_address: conduct@example.org
  members:
    - name: Ada Member
      addresses: [ada@example.org]
    - name: Ben Member
      addresses: [ben@example.org]
rules:
  - rule: reporter-protection
    action: reject
cases:
  - code: home shelf
    witnesses:
      - id: amber-finch
        names: [Sam Okonkwo-Reyes]
    consents: CONSENTS
"""


def consent_yaml(recipient: str, *, expires: str | None = None, withdrawn: str | None = None) -> str:
    extra = (f", expires: {expires}" if expires else "") + (f", withdrawn: {withdrawn}" if withdrawn else "")
    return (
        f'\n      - {{person: amber-finch, recipient: {recipient}, reference: "{REFERENCE}", '
        f"date: {GIVEN.isoformat()}{extra}}}"
    )


def policy(consents: str = "", accounts: Roster | None = None) -> CompiledPolicy:
    text = POLICY.replace("CONSENTS", consents or "[]")
    return compile_policy(parse_policy_text(text, Path("policy.yaml")), text.encode(), accounts=accounts)


def judge(compiled: CompiledPolicy, recipient: str, today: datetime.date | None) -> Verdict:
    raw = (
        f"From: <{MEMBER}>\r\nTo: <{recipient}>\r\nSubject: the sprint\r\n\r\n"
        "Sam Okonkwo-Reyes saw it and agreed to be named.\r\n"
    ).encode()
    envelope = Envelope(mail_from=MEMBER, rcpt_tos=(recipient,), authenticated_as=MEMBER)
    return evaluate(parse_message(raw), envelope, compiled, ThreadFacts(), today=today)


def codes(verdict: Verdict) -> list[str]:
    return sorted(decision.finding.code for decision in verdict.decisions)


@pytest.mark.parametrize(
    ("expires", "withdrawn", "today", "status"),
    [
        pytest.param(None, None, GIVEN, "in-force", id="no-expiry"),
        pytest.param(None, None, None, "in-force", id="no-expiry-no-date-needed"),
        pytest.param("2025-04-01", None, datetime.date(2025, 3, 31), "in-force", id="day-before-expiry"),
        pytest.param("2025-04-01", None, datetime.date(2025, 4, 1), "expired", id="expiry-day"),
        pytest.param("2025-04-01", None, datetime.date(2026, 1, 1), "expired", id="long-after"),
        pytest.param("2025-04-01", None, None, "expired", id="no-date-fails-closed"),
        pytest.param(None, "2025-03-10", datetime.date(2025, 3, 5), "withdrawn", id="withdrawn-any-day"),
        pytest.param("2025-04-01", "2025-03-10", GIVEN, "withdrawn", id="withdrawn-beats-expiry"),
    ],
)
def test_status(expires: str | None, withdrawn: str | None, today: datetime.date | None, status: str) -> None:
    consent = Consent("home shelf", "amber-finch", ORGANISERS, REFERENCE, "2025-03-02", expires, withdrawn)
    assert consent.status(today) == status


def test_the_key_is_stable_and_never_the_reference() -> None:
    consent = Consent("home shelf", "amber-finch", ORGANISERS, REFERENCE, "2025-03-02")
    assert (
        consent.key
        == Consent("home shelf", "amber-finch", ORGANISERS, REFERENCE, "2025-03-02", "2026-01-01").key
    )
    assert len(consent.key) == 12 and "Sam" not in consent.key
    assert consent.key != Consent("home shelf", "amber-finch", ORGANISERS, "another", "2025-03-02").key


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param({"expires": "2025-03-02"}, "expires must be later than date", id="expires-on-the-day"),
        pytest.param({"expires": "2025-01-01"}, "expires must be later than date", id="expires-before"),
        pytest.param({"withdrawn": "2025-03-01"}, "withdrawn cannot be earlier", id="withdrawn-before"),
    ],
)
def test_dates_out_of_order_are_refused(extra: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        policy(consent_yaml(ORGANISERS, **extra))


CASES = [
    pytest.param("", GIVEN, Outcome.REJECT, ["PROTECTED_IDENTITY"], id="no-consent"),
    pytest.param(consent_yaml(ORGANISERS), GIVEN, Outcome.DELIVER, ["CONSENT_RELIED_ON"], id="in-force"),
    pytest.param(
        consent_yaml(ORGANISERS, expires="2025-06-01"),
        datetime.date(2025, 5, 31),
        Outcome.DELIVER,
        ["CONSENT_RELIED_ON"],
        id="before-expiry",
    ),
    pytest.param(
        consent_yaml(ORGANISERS, expires="2025-06-01"),
        datetime.date(2025, 6, 1),
        Outcome.REJECT,
        ["CONSENT_EXPIRED", "PROTECTED_IDENTITY"],
        id="expired",
    ),
    pytest.param(
        consent_yaml(ORGANISERS, expires="2025-06-01"),
        None,
        Outcome.REJECT,
        ["CONSENT_EXPIRED", "PROTECTED_IDENTITY"],
        id="no-date-handed-in",
    ),
    pytest.param(
        consent_yaml(ORGANISERS, withdrawn="2025-04-01"),
        GIVEN,
        Outcome.REJECT,
        ["CONSENT_WITHDRAWN", "PROTECTED_IDENTITY"],
        id="withdrawn",
    ),
    pytest.param(
        consent_yaml("someone@else.example"),
        GIVEN,
        Outcome.REJECT,
        ["PROTECTED_IDENTITY"],
        id="other-recipient",
    ),
]


@pytest.mark.parametrize(("consents", "today", "outcome", "expected"), CASES)
def test_consent_lifts_only_while_in_force(
    consents: str, today: datetime.date | None, outcome: Outcome, expected: list[str]
) -> None:
    verdict = judge(policy(consents), ORGANISERS, today)
    assert (verdict.outcome, codes(verdict)) == (outcome, expected)


def test_the_consent_decision_names_the_consent_for_the_audit() -> None:
    verdict = judge(policy(consent_yaml(ORGANISERS)), ORGANISERS, GIVEN)
    [decision] = verdict.decisions
    assert decision.action.value == "audit" and decision.finding.case == "home shelf"
    consent = decision.finding.consent
    assert consent is not None and consent.date == "2025-03-02" and consent.recipient == ORGANISERS
    # What senders and reviewers may be shown says nothing of the reference or the person.
    assert REFERENCE not in decision.finding.advice and "Sam" not in decision.finding.advice


def test_mail_not_naming_the_person_relies_on_no_consent() -> None:
    compiled = policy(consent_yaml(ORGANISERS))
    raw = (
        f"From: <{MEMBER}>\r\nTo: <{ORGANISERS}>\r\nSubject: dates\r\n\r\nThe sprint is in May.\r\n".encode()
    )
    envelope = Envelope(mail_from=MEMBER, rcpt_tos=(ORGANISERS,), authenticated_as=MEMBER)
    assert evaluate(parse_message(raw), envelope, compiled, ThreadFacts(), today=GIVEN).decisions == ()


# --- the class: any sequence of committee and consent changes -----------------------------------

OPERATIONS = st.lists(
    st.sampled_from(["consent", "withdraw", "expire", "next-day", "remove-account", "add-account"]),
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(operations=OPERATIONS, recipient=st.sampled_from([ORGANISERS, FORMER]))
def test_a_named_person_reaches_a_recipient_only_with_a_valid_consent_or_a_current_member(
    operations: list[str], recipient: str
) -> None:
    # The model: a list of consents (to ``recipient``) with their state, today's date, and whether
    # Ben still holds his account. The property: mail naming the witness to ``recipient`` is delivered
    # exactly when the recipient is a current member, or a consent is in force for them today.
    today = GIVEN
    records: list[dict[str, str | None]] = []
    ben_has_account = True
    for operation in operations:
        if operation == "consent":
            records.append({"expires": None, "withdrawn": None})
        elif operation == "withdraw" and records:
            records[-1]["withdrawn"] = today.isoformat()
        elif operation == "expire" and records:
            records[-1]["expires"] = (today + datetime.timedelta(days=1)).isoformat()
        elif operation == "next-day":
            today += datetime.timedelta(days=1)
        elif operation == "remove-account":
            ben_has_account = False
        elif operation == "add-account":
            ben_has_account = True
    consents = "".join(
        consent_yaml(recipient, expires=record["expires"], withdrawn=record["withdrawn"])
        for record in records
    )
    accounts = Roster.of([(MEMBER, ()), *([(FORMER, ())] if ben_has_account else [])])
    verdict = judge(policy(consents, accounts), recipient, today)

    member = recipient == FORMER and ben_has_account
    valid = any(
        record["withdrawn"] is None
        and (record["expires"] is None or today.isoformat() < str(record["expires"]))
        for record in records
    )
    assert (verdict.outcome is Outcome.DELIVER) == (member or valid), (operations, codes(verdict))
    if not member:
        relied = [d.finding.consent for d in verdict.decisions if d.finding.code == "CONSENT_RELIED_ON"]
        assert bool(relied) == valid
        assert all(c is not None and c.status(today) == "in-force" for c in relied)
