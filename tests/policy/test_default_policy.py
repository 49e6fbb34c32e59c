"""The shipped policy: valid, fictional, implementing the guidelines, and working end to end."""

from __future__ import annotations

import email.policy
import re
from dataclasses import replace
from email.message import EmailMessage
from pathlib import Path

import pytest

from gateway.policy.engine import CompiledPolicy, compile_policy, evaluate
from gateway.policy.loader import read_policy
from gateway.policy.mime import parse_message
from gateway.policy.model import Address, Envelope, Outcome, ThreadFacts, Verdict
from gateway.policy.rewrite import apply_rewrite

REPO = Path(__file__).resolve().parents[2]
DEFAULT = REPO / "gateway" / "data" / "default-policy.yaml"
RESERVED = re.compile(r"(^|\.)(example|example\.(org|com|net)|test)$")

ADA = "ada.quill@example.org"
CONDUCT = "conduct@example.org"
REPORTER = Address("Robin Castellano", "robin.castellano@mail.example.net")
MODS = "mods@forum.example.com"


@pytest.fixture(scope="module")
def policy() -> CompiledPolicy:
    document, source = read_policy(DEFAULT)
    return compile_policy(document, source)


def test_default_policy_implements_the_guidelines(policy: CompiledPolicy) -> None:
    document = policy.document
    assert document.organisation.conduct_address == CONDUCT
    assert 3 <= len(document.organisation.members) <= 4
    assert document.on_error == "tempfail"
    rules = {entry.rule: entry for entry in document.rules}
    assert all(entry.enabled for entry in document.rules)
    assert rules["conduct-cc"].action == "rewrite"
    assert rules["conduct-cc"].params.scope == "all"  # type: ignore[attr-defined]
    assert rules["recipient-banner"].action == "rewrite"
    assert rules["recipient-banner"].action_for("BCC_ON_CASE_THREAD") == "reject"
    assert rules["reporter-protection"].action_for("PROTECTED_IDENTITY") == "reject"
    assert rules["reporter-protection"].action_for("UNINSPECTABLE_CONTENT") == "hold"
    assert rules["protected-content"].action == "reject"
    assert rules["protected-content"].params.consent_lifts is False  # type: ignore[attr-defined]
    (case,) = document.cases
    assert case.reporters and case.witnesses and case.reported and len(case.consents) == 1
    assert rules["code-names"].action == "warn"


def test_default_policy_uses_reserved_domains_only(policy: CompiledPolicy) -> None:
    text = DEFAULT.read_text(encoding="utf-8")
    domains = {match.lower() for match in re.findall(r"[\w.+-]+@([\w.-]+)", text)}
    assert domains, "no addresses found"
    assert all(RESERVED.search(domain) for domain in domains), sorted(domains)


# --- end to end: parse -> evaluate -> rewrite -> parse again ------------------------------------------


def build(
    *,
    sender: str = ADA,
    to: tuple[str, ...] = (MODS,),
    cc: tuple[str, ...] = (CONDUCT,),
    body: str = "Hello,\n\nthank you for your message.\n",
    html: str | None = None,
    subject: str = "About the event",
) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(to)
    if cc:
        message["Cc"] = ", ".join(cc)
    message["Subject"] = subject
    message["Message-ID"] = "<reply-1@example.org>"
    message["In-Reply-To"] = "<parent-1@example.org>"
    message.set_content(body)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message.as_bytes(policy=email.policy.SMTP)


def envelope(raw: bytes, *extra: str) -> Envelope:
    parsed = parse_message(raw)
    rcpts = tuple(box.address for box in (*parsed.to, *parsed.cc)) + extra
    return Envelope(mail_from=ADA, rcpt_tos=rcpts, authenticated_as=ADA)


NO_THREAD = ThreadFacts()


def run(policy: CompiledPolicy, raw: bytes, env: Envelope, thread: ThreadFacts = NO_THREAD) -> Verdict:
    return evaluate(parse_message(raw), env, policy, thread)


def relay(
    policy: CompiledPolicy, raw: bytes, env: Envelope, thread: ThreadFacts
) -> tuple[Verdict, bytes, Envelope]:
    """What the screener does: evaluate, then apply the rewrite to content and envelope."""
    verdict = run(policy, raw, env, thread)
    if verdict.outcome is not Outcome.REWRITE:
        return verdict, raw, env
    present = {r.lower() for r in env.rcpt_tos}
    added = tuple(r for r in verdict.rewrite.add_envelope_recipients if r.lower() not in present)
    return verdict, apply_rewrite(raw, verdict.rewrite), replace(env, rcpt_tos=env.rcpt_tos + added)


def codes(verdict: Verdict) -> list[str]:
    return [decision.finding.code for decision in verdict.decisions]


def test_conduct_address_added_and_the_result_passes(policy: CompiledPolicy) -> None:
    raw = build(cc=())
    verdict, out, env = relay(policy, raw, envelope(raw), ThreadFacts())
    assert (verdict.outcome, codes(verdict)) == (Outcome.REWRITE, ["CONDUCT_ADDRESS_MISSING"])
    assert CONDUCT in env.rcpt_tos
    assert parse_message(out).cc == (Address("Conduct Committee", CONDUCT),)
    assert run(policy, out, env).outcome is Outcome.DELIVER


def test_conduct_address_in_cc_but_not_in_the_envelope(policy: CompiledPolicy) -> None:
    raw = build()
    env = Envelope(mail_from=ADA, rcpt_tos=(MODS,), authenticated_as=ADA)
    verdict, out, fixed = relay(policy, raw, env, ThreadFacts())
    assert codes(verdict) == ["CONDUCT_ADDRESS_NOT_RECIPIENT"]
    assert out == raw
    assert fixed.rcpt_tos == (MODS, CONDUCT)


PARENT = ThreadFacts(
    parent_known=True,
    parent_participants=(Address("Ada Quill", ADA), Address("", MODS), Address("", CONDUCT)),
)


@pytest.mark.parametrize(
    "html",
    [
        pytest.param(None, id="plain"),
        pytest.param("<html><body><p>Hello,</p><p>thank you.</p></body></html>", id="alternative"),
    ],
)
def test_banner_inserted_and_the_result_passes(policy: CompiledPolicy, html: str | None) -> None:
    raw = build(to=(MODS, "Maya Example <maya@example.com>"), html=html)
    verdict, out, env = relay(policy, raw, envelope(raw), PARENT)
    assert (verdict.outcome, codes(verdict)) == (Outcome.REWRITE, ["BANNER_MISSING"])
    assert verdict.rewrite.banner_lines == ("[+ Maya Example]",)
    parsed = parse_message(out)
    assert all(text.lstrip().startswith("[+ Maya Example]") for text in parsed.leading_text)
    assert run(policy, out, env, PARENT).outcome is Outcome.DELIVER


def test_banner_after_an_html_title_is_recognised(policy: CompiledPolicy) -> None:
    html = "<html><head><title>Re: event</title></head><body><p>Hello</p></body></html>"
    raw = build(to=(MODS, "Maya Example <maya@example.com>"), html=html)
    _verdict, out, env = relay(policy, raw, envelope(raw), PARENT)
    assert run(policy, out, env, PARENT).outcome is Outcome.DELIVER


def test_banner_written_by_the_sender_passes(policy: CompiledPolicy) -> None:
    raw = build(
        to=("Maya Example <maya@example.com>",), body="[+ Maya]\n[- mods@forum.example.com]\n\nHello\n"
    )
    assert run(policy, raw, envelope(raw), PARENT).outcome is Outcome.DELIVER


def test_wrong_banner_is_refused_with_the_lines_to_paste(policy: CompiledPolicy) -> None:
    raw = build(to=(MODS, "Maya Example <maya@example.com>"), body="[+ Alex]\n\nHello\n")
    verdict = run(policy, raw, envelope(raw), PARENT)
    assert (verdict.outcome, codes(verdict)) == (Outcome.REJECT, ["BANNER_MISSING"])
    assert "[+ Maya Example]" in verdict.decisions[0].finding.advice


def test_bcc_on_a_case_thread_is_refused(policy: CompiledPolicy) -> None:
    raw = build()
    verdict = run(policy, raw, envelope(raw, "someone@example.com"), replace(PARENT, case="home shelf"))
    assert verdict.outcome is Outcome.REJECT
    assert "BCC_ON_CASE_THREAD" in codes(verdict)


def test_signed_message_needing_a_cc_is_refused(policy: CompiledPolicy) -> None:
    signed = (
        f"From: {ADA}\r\nTo: {MODS}\r\nSubject: signed\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/signed; protocol="application/pgp-signature"; micalg=pgp-sha256;\r\n'
        ' boundary="s"\r\n\r\n--s\r\nContent-Type: text/plain\r\n\r\nHello\r\n'
        "--s\r\nContent-Type: application/pgp-signature\r\n\r\n"
        "-----BEGIN PGP SIGNATURE-----\r\nAAAA\r\n-----END PGP SIGNATURE-----\r\n--s--\r\n"
    ).encode()
    verdict = run(policy, signed, envelope(signed))
    assert (verdict.outcome, codes(verdict)) == (Outcome.REJECT, ["SIGNED_MESSAGE_NEEDS_CHANGE"])


def test_ambiguous_message_is_refused(policy: CompiledPolicy) -> None:
    raw = build().replace(b"Subject: About the event\r\n", b"Subject: About the event\r\nSubject: Other\r\n")
    verdict = run(policy, raw, envelope(raw))
    assert (verdict.outcome, codes(verdict)) == (Outcome.REJECT, ["AMBIGUOUS_MESSAGE"])


def test_reporter_named_to_an_outsider_is_refused(policy: CompiledPolicy) -> None:
    raw = build(body="Robbie told us what happened at the social.\n")
    verdict = run(policy, raw, envelope(raw))
    assert verdict.outcome is Outcome.REJECT
    assert "PROTECTED_IDENTITY" in codes(verdict)


def test_witness_named_with_consent_to_that_recipient_only(policy: CompiledPolicy) -> None:
    body = "Sam Okonkwo-Reyes saw it and agreed to be named.\n"
    organisers = build(to=("organisers@events.example.com",), body=body)
    # Consent lifts the identity finding (and is audited); mail to organisers is still held for review.
    verdict = run(policy, organisers, envelope(organisers))
    assert (verdict.outcome, codes(verdict)) == (Outcome.HOLD, ["NEEDS_SECOND_REVIEW", "CONSENT_RELIED_ON"])
    mods = build(to=(MODS,), body=body)
    assert run(policy, mods, envelope(mods)).outcome is Outcome.REJECT


def test_reporter_named_inside_the_committee_is_fine(policy: CompiledPolicy) -> None:
    raw = build(to=("bram.oduya@example.org",), body=f"{REPORTER.name} wrote again.\n")
    assert run(policy, raw, envelope(raw)).outcome is Outcome.DELIVER


@pytest.mark.parametrize(
    ("thread", "expected"),
    [
        # Messages with pictures or unreadable attachments are held for review (UNINSPECTABLE_CONTENT).
        pytest.param(NO_THREAD, {Outcome.REWRITE, Outcome.REJECT, Outcome.HOLD}, id="new-thread"),
        # Nobody is in To/Cc of these messages as sent to MODS: Bcc on a case thread, always refused.
        pytest.param(replace(PARENT, case="home shelf"), {Outcome.REJECT}, id="case-thread"),
    ],
)
def test_every_real_message_gets_a_verdict_without_internal_error(
    policy: CompiledPolicy, real_mail_dir: Path, thread: ThreadFacts, expected: set[Outcome]
) -> None:
    envelope = Envelope(mail_from=ADA, rcpt_tos=(MODS, CONDUCT), authenticated_as=ADA)
    outcomes = set()
    for path in sorted(real_mail_dir.rglob("*.eml")):
        verdict = evaluate(parse_message(path.read_bytes()), envelope, policy, thread)
        assert verdict.outcome is not Outcome.TEMPFAIL, (path, codes(verdict))
        assert "RULE_ERROR" not in codes(verdict), path
        outcomes.add(verdict.outcome)
    assert outcomes == expected


# --- audiences, anonymisation, communication -----------------------------------------------------

MODERATOR = "team@forum.example.net"
REPORTED = "pat.vandermeer@example.com"


def test_default_policy_reviews_and_anonymises_the_guidelines_audiences(policy: CompiledPolicy) -> None:
    rules = {entry.rule: entry for entry in policy.document.rules}
    assert rules["audience-review"].action == "hold"
    assert rules["anonymisation"].action == "hold"
    assert rules["anonymisation"].action_for("GENDERED_LANGUAGE") == "warn"
    assert rules["communication"].action == "warn"
    assert (
        rules["communication"].when is not None
        and "committee" not in rules["communication"].when.recipient_roles
    )
    assert policy.audiences.roles(MODERATOR) == {"moderator"}
    assert policy.audiences.roles("orga@events.example.com") == {"organiser"}
    assert policy.audiences.roles("sysadmins@infra.example.net") == {"admin"}
    assert policy.audiences.roles(REPORTED) == {"reported"}


@pytest.mark.parametrize(
    ("to", "body", "outcome", "expected"),
    [
        pytest.param(
            (MODERATOR,), "Hello,\n\nthank you.\n", Outcome.HOLD, {"NEEDS_SECOND_REVIEW"}, id="moderator-held"
        ),
        pytest.param(
            (REPORTED,),
            "We received a report about the meet-up.\n",
            Outcome.HOLD,
            {"NEEDS_SECOND_REVIEW"},
            id="reported-held",
        ),
        pytest.param(
            (MODERATOR,),
            "She says it happened on Tuesday 3 March at 21:45.\n",
            Outcome.HOLD,
            {"NEEDS_SECOND_REVIEW", "PRECISE_TIMESTAMP", "GENDERED_LANGUAGE"},
            id="moderator-not-anonymised",
        ),
        pytest.param(
            ("bram.oduya@example.org",),
            "She says it happened on Tuesday 3 March at 21:45; just a misunderstanding?\n",
            Outcome.DELIVER,
            set(),
            id="committee-only-nothing",
        ),
        pytest.param(
            (MODS,),
            "It was just a misunderstanding at 21:45.\n",
            Outcome.DELIVER,
            {"MINIMISING_LANGUAGE"},
            id="other-outsider-warned-not-anonymised",
        ),
        pytest.param(
            ("orga@events.example.com",),
            "Please don't invite this person again.\n",
            Outcome.HOLD,
            {"NEEDS_SECOND_REVIEW", "DIRECTIVE_TO_ORGANISER"},
            id="organiser-directive",
        ),
    ],
)
def test_audiences_end_to_end(
    policy: CompiledPolicy, to: tuple[str, ...], body: str, outcome: Outcome, expected: set[str]
) -> None:
    raw = build(to=to, body=body)
    verdict = run(policy, raw, envelope(raw))
    assert (verdict.outcome, set(codes(verdict))) == (outcome, expected)


def test_warnings_name_the_recipients_and_never_the_text(policy: CompiledPolicy) -> None:
    raw = build(to=(MODERATOR,), body="Her message came at 21:45.\n")
    verdict = run(policy, raw, envelope(raw))
    actions = {d.finding.code: (d.action, d.finding.recipients) for d in verdict.decisions}
    assert actions["GENDERED_LANGUAGE"] == ("warn", (MODERATOR,))
    assert actions["PRECISE_TIMESTAMP"] == ("hold", (MODERATOR,))
    assert all("21:45" not in d.finding.advice for d in verdict.decisions)


def test_decision_notice_to_the_reported_party(policy: CompiledPolicy) -> None:
    complete = (
        "What happened:\nAt the meet-up you commented on a participant's appearance several times.\n"
        "Impact:\nSeveral people left early.\n"
        "What we expect from you:\nDo not comment on anyone's appearance at community events.\n"
        "Consequences:\nYou may not attend the next two meet-ups.\n"
    )
    raw = build(to=(REPORTED,), body=complete, subject="[Decision] Code of Conduct report")
    assert set(codes(run(policy, raw, envelope(raw)))) == {"NEEDS_SECOND_REVIEW"}
    partial = complete.split("Consequences:")[0].replace("Impact:\nSeveral people left early.\n", "")
    raw = build(to=(REPORTED,), body=partial, subject="[Decision] Code of Conduct report")
    verdict = run(policy, raw, envelope(raw))
    missing = sorted(
        d.finding.kind for d in verdict.decisions if d.finding.code == "DECISION_COMPONENT_MISSING"
    )
    assert missing == ["consequences", "impact"]
    assert verdict.outcome is Outcome.HOLD


# --- code names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("to", "subject", "expected"),
    [
        pytest.param(
            ("bram.oduya@example.org",), "Notes about Robin Castellano", ["warn"], id="committee-name"
        ),
        pytest.param(("bram.oduya@example.org",), "Re: what Robbie said", ["warn"], id="committee-alias"),
        pytest.param(("bram.oduya@example.org",), "Notes on home shelf / quiet-heron", [], id="code-names"),
        pytest.param(("bram.oduya@example.org",), "Notes from rcastellano", [], id="username-not-a-name"),
    ],
)
def test_real_names_in_subjects_are_warned_even_inside_the_committee(
    policy: CompiledPolicy, to: tuple[str, ...], subject: str, expected: list[str]
) -> None:
    raw = build(to=to, subject=subject, body="See the notes of the last meeting.\n")
    verdict = run(policy, raw, envelope(raw))
    assert verdict.outcome is Outcome.DELIVER
    found = [d for d in verdict.decisions if d.finding.rule == "code-names"]
    assert [d.action.value for d in found] == expected
    for decision in found:
        assert "quiet-heron" in decision.finding.advice and "Robin" not in decision.finding.advice
