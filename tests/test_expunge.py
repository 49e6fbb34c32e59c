"""Expunging a case: identities gone from every store in the state folder, `audit verify` still green."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.cli import main
from gateway.decision.expunge import (
    DueExpunger,
    Stores,
    _Names,
    expunge_case,
    is_expunged,
)
from gateway.decision.policy_screener import PolicyScreener
from gateway.decision.screening import Accept, Submission
from gateway.policy.config import Case, Person
from gateway.policy.mime import parse_message
from gateway.settings import load_settings
from gateway.state.audit import AuditTrail, audit_dir
from gateway.state.audit_reading import entries_about, read_salts, verify
from gateway.state.fingerprints import FingerprintStore
from gateway.state.ledger import Ledger, ledger_path
from gateway.state.opening import open_state
from gateway.state.registry import MAGIC, NONCE_BYTES, CaseRegistry
from gateway.state.spool import QueueState, Spool, SpoolEnvelope
from tests.cli.conftest import write_config

POLICY = """\
organisation:
  conduct_address: conduct@example.org
  members:
    - name: Ada Quill
      addresses: [ada@example.org]
    - name: Ben Ink
      addresses: [ben@example.org]
rules:
  - rule: reporter-protection
    action: hold
cases:
  - code: paper kite
    reporters:
      - id: blue owl
        names: [Ola Policy]
"""
SECRETS = ("Jin Park", "jin.park@example.net", "jinpark42", "Jinny")
OTHER = "Mila Stone"


def registry_cases(expunge_on: datetime.date | None = None) -> list[Case]:
    jin = Person(
        id="quiet heron",
        names=("Jin Park",),
        aliases=("Jinny",),
        addresses=("jin.park@example.net",),
        usernames=("jinpark42",),
    )
    return [
        Case(code="home shelf", reporters=(jin,), expunge_on=expunge_on),
        Case(code="stunned bulb", reporters=(Person(id="red fox", names=(OTHER,)),)),
    ]


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("CONDUCT_REGISTRY_KEY", raising=False)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    path = write_config(tmp_path, f"policy:\n  path: {policy}\n")
    CaseRegistry.from_settings(load_settings(path)).write(registry_cases())
    return path


def mail(body: str, to: str, message_id: str, name: str = "Olive Out") -> bytes:
    return (
        f"From: Ada Quill <ada@example.org>\r\nTo: {name} <{to}>\r\nSubject: About it\r\n"
        f"Message-ID: <{message_id}>\r\n\r\n{body}\r\n"
    ).encode()


async def populate(config: Path) -> None:
    """Every store gets something about the case: a hold, a delivered mail, ledger rows, fingerprints."""
    settings = load_settings(config)
    spool = Spool(settings.state_dir / "spool")
    with PolicyScreener.from_settings(settings) as screener:
        assert "home shelf" in {case.code for case in screener.source.policy.document.cases}
        screens = [
            ("Q1", "olive@example.net", mail("Jinny (jinpark42) reported it.", "olive@example.net", "m1@x")),
            (
                "Q2",
                "jin.park@example.net",
                mail("Dear Jin Park, thank you.", "jin.park@example.net", "m2@x", "Jin Park"),
            ),
            ("Q3", "ben@example.org", mail(f"{OTHER} wrote again.", "ben@example.org", "m3@x")),
        ]
        for qid, rcpt, content in screens:
            sub = Submission(qid, "ada@example.org", (rcpt,), "ada@example.org", content)
            result = screener.screen(sub)
            assert isinstance(result, Accept), result
            screener.accepted(sub, result)
            if result.verdict != "hold":
                envelope = SpoolEnvelope(qid, "ada@example.org", result.rcpt_tos, "ada@example.org", 0.0)
                await spool.commit(envelope, result.content)
                spool.path(qid, QueueState.INCOMING).rename(spool.path(qid, QueueState.DONE))  # delivered
        assert screener.review is not None and screener.review.store.get("Q1").status == "held"
        # A reporter's own words, learnt from the journal; and an inbound copy in the ledger.
        report = mail(
            "I want to report what happened at the meetup last week in detail.", "conduct@example.org", "r1@x"
        )
        screener.fingerprint_store.learn_message("home shelf", parse_message(report), person="quiet heron")  # type: ignore[union-attr]
        screener.ledger.record("<inbound@x>", from_=(parse_message(report).from_[0],), to=(), case=None)
        screener.ledger.record("<inbound2@x>", from_=(), case="home shelf")


def run(config: Path, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--config", str(config)])


def state_files(state: Path) -> list[Path]:
    return [path for path in state.rglob("*") if path.is_file()]


def decrypted_registry(config: Path) -> str:
    registry = CaseRegistry.from_settings(load_settings(config))
    data = registry.path.read_bytes()
    nonce = data[len(MAGIC) : len(MAGIC) + NONCE_BYTES]
    return AESGCM(registry.key().secret).decrypt(nonce, data[len(MAGIC) + NONCE_BYTES :], MAGIC).decode()


def found_anywhere(config: Path, values: tuple[str, ...]) -> list[str]:
    state = load_settings(config).state_dir
    hits = []
    for path in state_files(state):
        data = path.read_bytes().lower()
        hits += [f"{path.relative_to(state)}: {v}" for v in values if v.lower().encode() in data]
    text = decrypted_registry(config).lower()
    hits += [f"registry: {v}" for v in values if v.lower() in text]
    return hits


async def test_expunge_removes_the_case_s_identities_from_every_store(config: Path) -> None:
    await populate(config)
    assert found_anywhere(config, SECRETS)  # the test can see them before
    state = load_settings(config).state_dir
    before = verify(audit_dir(state))
    assert before.ok and before.entries >= 3

    result = run(config, "case", "expunge", "home shelf", "--yes")
    assert result.exit_code == 0, result.output
    assert "Case home shelf expunged." in result.output and "held messages removed: 1" in result.output

    assert found_anywhere(config, SECRETS) == []
    after = verify(audit_dir(state))
    assert after.ok and after.entries == before.entries  # nothing deleted from the chain
    salts = read_salts(audit_dir(state))
    about = entries_about(audit_dir(state), "home shelf", {"Q1", "Q2"})
    assert about and all(salts[seq] is None for seq in about)
    assert any(salt is not None for salt in salts.values())  # unrelated entries keep theirs
    # The other case, its mail and its thread are untouched; the code name stays.
    assert OTHER in decrypted_registry(config)
    assert Spool(state / "spool").find("Q3").state is QueueState.DONE
    with Ledger.open(ledger_path(state)) as ledger:
        assert ledger.lookup_parent(("<m3@x>",), ()).parent_known
        assert not ledger.lookup_parent(("<m2@x>",), ()).parent_known
    with FingerprintStore.open(state) as fingerprints:
        assert "home shelf" not in fingerprints.cases()
    [case] = [c for c in CaseRegistry.from_settings(load_settings(config)).cases() if c.code == "home shelf"]
    assert is_expunged(case) and case.status == "closed" and case.reporters[0].names == ("Expunged",)

    # The gateway starts again with the expunged case, and "Expunged" is never a protected identity.
    with PolicyScreener.from_settings(load_settings(config)) as screener:
        content = mail("The record says: Expunged.", "olive@example.net", "m9@x")
        sub = Submission("Q9", "ada@example.org", ("olive@example.net",), "ada@example.org", content)
        assert screener.screen(sub).verdict == "deliver"  # type: ignore[union-attr]

    again = run(config, "case", "expunge", "home shelf", "--yes")  # idempotent
    assert again.exit_code == 0 and "already expunged" in again.output, again.output


def test_expunge_removes_the_overrides_of_the_case_and_those_naming_its_people(config: Path) -> None:
    state = open_state(load_settings(config))
    made = {}
    with state.overrides.open() as overrides:
        for number, (queue_id, case, why) in enumerate(
            [
                ("Q1", "home shelf", "sent in the case's own thread, as asked"),
                ("Q5", None, "Jinny asked me to forward it unchanged"),
                ("Q6", "stunned bulb", "the other case's thread, as asked"),
            ]
        ):
            token = f"EXPUNGE{number}"
            overrides.issue(token, "ada@example.org", ("communication",), 1_800_000_000.0)
            done = overrides.redeem(
                token,
                sender="ada@example.org",
                message=f"<o{number}@x>",
                rules=("communication",),
                justification=why,
                quotas={"communication": (9, 86400.0)},
                now=1_800_000_000.0,
                queue_id=queue_id,
                case=case,
            )
            made[queue_id] = done.reference
    assert found_anywhere(config, ("forward it unchanged", "case's own thread"))  # the test sees them

    result = run(config, "case", "expunge", "home shelf", "--yes")
    assert result.exit_code == 0, result.output
    assert "overrides and their justifications removed: 2" in result.output
    # Gone from every file of the state folder (the override store's write-ahead log too).
    assert found_anywhere(config, ("Jinny", "forward it unchanged", "case's own thread")) == []
    with state.overrides.open() as overrides:
        assert [overrides.find(str(made[q])) is not None for q in ("Q1", "Q5", "Q6")] == [False, False, True]


def test_a_case_in_the_policy_file_is_refused_with_advice(config: Path) -> None:
    result = run(config, "case", "expunge", "paper kite", "--yes")
    assert result.exit_code == 2
    assert "never rewrites" in result.output and "case import-policy --remove-from-policy" in result.output
    assert "Traceback" not in result.output


def test_an_unknown_case_is_a_clear_error(config: Path) -> None:
    result = run(config, "case", "expunge", "no such case", "--yes")
    assert result.exit_code == 2 and "no case 'no such case' in the case registry" in result.output


async def test_while_the_gateway_owns_the_trail_it_finishes_the_audit_part(config: Path) -> None:
    await populate(config)
    settings = load_settings(config)
    directory = audit_dir(settings.state_dir)
    with AuditTrail.open(directory) as trail:  # a running gateway holds the lock
        report = expunge_case("home shelf", Stores(open_state(settings)))
        assert report.audit_deferred and list(open_state(settings).layout.audit_later.glob("*.json"))
        assert open_state(settings).audit.drain_later(trail) == 1
    assert not list(open_state(settings).layout.audit_later.glob("*.json"))
    assert found_anywhere(config, SECRETS) == []
    assert verify(directory).ok


async def test_the_running_gateway_expunges_cases_past_their_date(config: Path) -> None:
    settings = load_settings(config)
    registry = CaseRegistry.from_settings(settings)
    registry.write(registry_cases(expunge_on=datetime.date(2025, 3, 1)))
    await populate(config)
    with AuditTrail.open(audit_dir(settings.state_dir)) as trail:
        early = DueExpunger(
            Stores(open_state(settings), trail),
            settings.policy.path,
            lambda: datetime.date(2025, 2, 28),
        )
        assert early.run() == []
        due = DueExpunger(
            Stores(open_state(settings), trail),
            settings.policy.path,
            lambda: datetime.date(2025, 3, 1),
        )
        [report] = due.run()
        assert report.case == "home shelf" and report.registry and not report.audit_deferred
        assert due.run() == []  # done once
    assert found_anywhere(config, SECRETS) == []
    assert verify(audit_dir(settings.state_dir)).ok


def test_a_name_split_across_quoted_lines_is_recognised() -> None:
    names = _Names(registry_cases()[0])
    assert names.in_message(mail("> > We met Jin\n> Park at the venue.", "x@example.net", "q@example.org"))
    assert not names.in_message(
        mail("> We met Jin.\n>\n> Park opens at nine.", "x@example.net", "r@example.org")
    )
