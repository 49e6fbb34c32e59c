"""The engine: actions from the policy, most severe outcome wins, failures never pass."""

from __future__ import annotations

import hashlib
import textwrap
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from gateway.policy.audiences import Role
from gateway.policy.engine import (
    CompiledPolicy,
    CompiledRule,
    compile_policy,
    evaluate,
    merge_rewrites,
    rule_context,
)
from gateway.policy.loader import parse_policy_text
from gateway.policy.model import (
    Action,
    Address,
    Envelope,
    Finding,
    IdentityKind,
    Outcome,
    ParsedMessage,
    ProtectedIdentity,
    Rewrite,
    RuleContext,
    SegmentKind,
    TextSegment,
    ThreadFacts,
)
from gateway.policy.rules import conduct_cc

POLICY = """\
organisation:
  conduct_address: Conduct@Example.org
  members:
    - name: Ada Quill
      addresses: [Ada@example.org, ada@home.test]
    - name: Bram Oduya
      addresses: [bram@example.org]
  internal_domains: [example.org]
rules:
  - rule: conduct-cc
    action: rewrite
  - rule: recipient-banner
    action: rewrite
    enabled: false
cases:
  - code: home shelf
    reporters:
      - id: quiet-heron
        names: [Robin Castellano]
        addresses: [robin@example.net]
    consents:
      - person: quiet-heron
        recipient: Mods@Example.com
        reference: mail
        date: 2024-03-02
"""
SEVERITY = list(Outcome)


def compiled(text: str = POLICY) -> CompiledPolicy:
    text = textwrap.dedent(text)
    return compile_policy(parse_policy_text(text, Path("p.yaml")), text.encode())


def message(**changes: Any) -> ParsedMessage:
    base = ParsedMessage(
        raw=b"",
        message_id="<m@example.org>",
        in_reply_to=(),
        references=(),
        from_=(Address("Ada Quill", "ada@example.org"),),
        to=(Address("", "mods@example.com"),),
        cc=(),
        bcc=(),
        subject="Hi",
        segments=(),
        uninspectable=(),
        ambiguities=(),
        signed=False,
        leading_text=("Hi",),
    )
    return replace(base, **changes)


ENVELOPE = Envelope(
    mail_from="ada@example.org", rcpt_tos=("mods@example.com",), authenticated_as="ada@example.org"
)


class NoParams(BaseModel):
    pass


@dataclass(frozen=True)
class FakeRule:
    """A rule module stand-in that returns fixed findings or raises."""

    NAME: str
    findings: tuple[Finding, ...] = ()
    error: type[Exception] | None = None
    Params: type[BaseModel] = NoParams

    def check(
        self, message: ParsedMessage, envelope: Envelope, context: RuleContext, params: Any
    ) -> list[Finding]:
        if self.error is not None:
            raise self.error("secret message content Robin Castellano")
        return list(self.findings)


def with_rules(policy: CompiledPolicy, *rules: tuple[FakeRule, Action, dict[str, Action]]) -> CompiledPolicy:
    return replace(
        policy,
        rules=tuple(
            CompiledRule(module=module, name=module.NAME, params=NoParams(), action=action, actions=actions)
            for module, action, actions in rules
        ),
    )


def finding(rule: str, code: str = "CODE", rewrite: Rewrite | None = None) -> Finding:
    return Finding(rule=rule, code=code, where="body", kind="k", advice="Do this.", rewrite=rewrite)


# --- compile ---------------------------------------------------------------------------------------


def test_compile_policy_prepares_the_facts_rules_read() -> None:
    policy = compiled()
    assert policy.version == hashlib.sha256(textwrap.dedent(POLICY).encode()).hexdigest()[:16]
    assert policy.digest.startswith(policy.version)
    assert [rule.name for rule in policy.rules] == ["conduct-cc"]  # the disabled rule is not compiled
    assert policy.conduct_address == "conduct@example.org"
    assert policy.committee == frozenset({"ada@example.org", "ada@home.test", "bram@example.org"})
    assert ("ada@home.test", "Ada Quill") in policy.member_names
    assert {(c.case, c.person, c.recipient, c.date) for c in policy.consents} == {
        ("home shelf", "quiet-heron", "mods@example.com", "2024-03-02")
    }
    assert {(i.kind, i.value) for i in policy.identities} == {
        (IdentityKind.NAME, "Robin Castellano"),
        (IdentityKind.ADDRESS, "robin@example.net"),
    }
    assert policy.finder.find("write to Robin  Castellano") == [
        ProtectedIdentity("home shelf", "quiet-heron", IdentityKind.NAME, "Robin Castellano")
    ]


def test_version_changes_with_the_file() -> None:
    assert compiled().version != compiled(POLICY + "# a comment\n").version


def test_rule_context_carries_the_thread() -> None:
    thread = ThreadFacts(parent_known=True, case="home shelf")
    context = rule_context(compiled(), thread)
    assert context.thread is thread
    assert context.is_committee("ADA@example.org") and context.is_committee("conduct@EXAMPLE.org")
    assert not context.is_committee("mods@example.com")


# --- evaluate --------------------------------------------------------------------------------------


def test_deliver_when_nothing_is_found() -> None:
    verdict = evaluate(
        message(cc=(Address("", "conduct@example.org"),)),
        replace(ENVELOPE, rcpt_tos=("mods@example.com", "conduct@example.org")),
        compiled(),
        ThreadFacts(),
    )
    assert (verdict.outcome, verdict.decisions, verdict.rewrite) == (Outcome.DELIVER, (), Rewrite())


def test_real_rule_rewrite() -> None:
    verdict = evaluate(message(), ENVELOPE, compiled(), ThreadFacts())
    assert verdict.outcome is Outcome.REWRITE
    assert verdict.rewrite == Rewrite(
        add_cc=(Address("", "conduct@example.org"),), add_envelope_recipients=("conduct@example.org",)
    )
    assert verdict.policy_version == compiled().version


def test_ambiguous_message_is_refused_before_rules_run() -> None:
    policy = with_rules(compiled(), (FakeRule("boom", error=RuntimeError), Action.REWRITE, {}))
    verdict = evaluate(
        message(ambiguities=("two Subject headers", "two Subject headers", "bad base64")),
        ENVELOPE,
        policy,
        ThreadFacts(),
    )
    assert verdict.outcome is Outcome.REJECT
    assert [(d.finding.rule, d.finding.code, d.action) for d in verdict.decisions] == [
        ("message-structure", "AMBIGUOUS_MESSAGE", Action.REJECT)
    ] * 2
    assert "two Subject headers" in verdict.decisions[0].finding.advice


@pytest.mark.parametrize(
    ("on_error", "outcome", "advice"),
    [
        ("tempfail", Outcome.TEMPFAIL, "Try again later"),
        ("reject", Outcome.REJECT, "Tell the gateway's administrators"),
        ("hold", Outcome.HOLD, "held until"),
    ],
)
def test_a_rule_that_raises_never_passes(on_error: str, outcome: Outcome, advice: str) -> None:
    policy = compiled(POLICY.replace("rules:", f"on_error: {on_error}\nrules:"))
    policy = with_rules(
        policy, (FakeRule("boom", error=KeyError), Action.AUDIT, {}), (FakeRule("fine"), Action.REJECT, {})
    )
    verdict = evaluate(message(), ENVELOPE, policy, ThreadFacts())
    assert verdict.outcome is outcome
    (decision,) = verdict.decisions
    assert (decision.finding.rule, decision.finding.code, decision.finding.kind) == (
        "boom",
        "RULE_ERROR",
        "KeyError",
    )
    assert advice in decision.finding.advice
    assert "secret" not in repr(decision) and "Robin" not in repr(decision)


def test_a_rule_returning_garbage_is_an_error_too() -> None:
    class Garbage(FakeRule):
        def check(self, *args: Any) -> list[Finding]:
            return ["not a finding"]  # type: ignore[list-item]

    verdict = evaluate(
        message(), ENVELOPE, with_rules(compiled(), (Garbage("bad"), Action.AUDIT, {})), ThreadFacts()
    )
    assert verdict.outcome is Outcome.TEMPFAIL
    assert verdict.decisions[0].finding.kind == "TypeError"


@pytest.mark.parametrize(
    ("action", "outcome"),
    [
        (Action.AUDIT, Outcome.DELIVER),
        (Action.WARN, Outcome.DELIVER),
        (Action.REWRITE, Outcome.REWRITE),
        (Action.HOLD, Outcome.HOLD),
        (Action.REJECT, Outcome.REJECT),
    ],
)
def test_actions_map_to_outcomes(action: Action, outcome: Outcome) -> None:
    rule = FakeRule("r", (finding("r", rewrite=Rewrite(banner_lines=("[+ Maya]",))),))
    verdict = evaluate(message(), ENVELOPE, with_rules(compiled(), (rule, action, {})), ThreadFacts())
    assert verdict.outcome is outcome
    assert verdict.decisions[0].action is action
    expected_rewrite = Rewrite(banner_lines=("[+ Maya]",)) if action is Action.REWRITE else Rewrite()
    assert verdict.rewrite == expected_rewrite


def test_a_held_message_carries_the_rewrites_to_apply_on_release() -> None:
    fix = FakeRule("fix", (finding("fix", rewrite=Rewrite(banner_lines=("[+ Maya]",))),))
    hold = FakeRule("hold", (finding("hold"),))
    policy = with_rules(compiled(), (fix, Action.REWRITE, {}), (hold, Action.HOLD, {}))
    verdict = evaluate(message(), ENVELOPE, policy, ThreadFacts())
    assert (verdict.outcome, verdict.rewrite) == (Outcome.HOLD, Rewrite(banner_lines=("[+ Maya]",)))


def test_per_code_actions_override_the_rule_action() -> None:
    rule = FakeRule("r", (finding("r", "MILD"), finding("r", "BAD")))
    verdict = evaluate(
        message(), ENVELOPE, with_rules(compiled(), (rule, Action.WARN, {"BAD": Action.HOLD})), ThreadFacts()
    )
    assert verdict.outcome is Outcome.HOLD
    assert [(d.finding.code, d.action) for d in verdict.decisions] == [
        ("BAD", Action.HOLD),
        ("MILD", Action.WARN),
    ]


def test_rewrite_without_anything_to_rewrite_refuses() -> None:
    rule = FakeRule("r", (finding("r"),))
    verdict = evaluate(message(), ENVELOPE, with_rules(compiled(), (rule, Action.REWRITE, {})), ThreadFacts())
    assert verdict.outcome is Outcome.REJECT


def test_signed_message_that_needs_changes_is_refused_with_an_explanation() -> None:
    verdict = evaluate(message(signed=True), ENVELOPE, compiled(), ThreadFacts())
    assert verdict.outcome is Outcome.REJECT
    (decision,) = verdict.decisions
    assert (decision.finding.rule, decision.finding.code) == ("conduct-cc", "SIGNED_MESSAGE_NEEDS_CHANGE")
    assert "signed" in decision.finding.advice and "conduct@example.org" in decision.finding.advice
    assert verdict.rewrite == Rewrite()


def test_signed_message_needing_only_an_envelope_change_is_rewritten() -> None:
    msg = message(signed=True, cc=(Address("", "conduct@example.org"),))
    verdict = evaluate(msg, ENVELOPE, compiled(), ThreadFacts())
    assert verdict.outcome is Outcome.REWRITE
    assert verdict.rewrite == Rewrite(add_envelope_recipients=("conduct@example.org",))


def test_rewrites_are_merged_without_duplicates() -> None:
    one = FakeRule(
        "one",
        (
            finding(
                "one",
                rewrite=Rewrite(add_cc=(Address("", "c@example.org"),), banner_lines=("[+ B]", "[- A]")),
            ),
        ),
    )
    two = FakeRule(
        "two",
        (
            finding(
                "two",
                rewrite=Rewrite(
                    add_cc=(Address("C", "C@example.org"),),
                    add_envelope_recipients=("c@example.org",),
                    banner_lines=("[+ B]",),
                ),
            ),
        ),
    )
    verdict = evaluate(
        message(),
        ENVELOPE,
        with_rules(compiled(), (one, Action.REWRITE, {}), (two, Action.REWRITE, {})),
        ThreadFacts(),
    )
    assert verdict.rewrite == Rewrite(
        add_cc=(Address("C", "C@example.org"),),
        add_envelope_recipients=("c@example.org",),
        banner_lines=("[+ B]", "[- A]"),
    )


def test_a_rewrite_that_would_name_a_protected_person_to_an_outsider_is_refused() -> None:
    rule = FakeRule("r", (finding("r", rewrite=Rewrite(banner_lines=("[- Robin Castellano]",))),))
    policy = with_rules(compiled(), (rule, Action.REWRITE, {}))
    outsider = replace(ENVELOPE, rcpt_tos=("someone@example.com",))
    verdict = evaluate(message(), outsider, policy, ThreadFacts())
    assert verdict.outcome is Outcome.REJECT
    assert verdict.decisions[0].finding.code == "REWRITE_NAMES_PROTECTED_PERSON"
    # mods@example.com holds Robin's written consent; committee members need none.
    for rcpts in (("mods@example.com",), ("bram@example.org",)):
        assert (
            evaluate(message(), replace(ENVELOPE, rcpt_tos=rcpts), policy, ThreadFacts()).outcome
            is Outcome.REWRITE
        )


def test_merge_rewrites_is_canonical() -> None:
    a = Rewrite(
        add_cc=(Address("", "x@example.org"),),
        add_envelope_recipients=("X@example.org",),
        banner_lines=("[- Z]", "[+ Y]"),
    )
    b = Rewrite(
        add_cc=(Address("X", "x@example.org"),),
        add_envelope_recipients=("x@example.org",),
        banner_lines=("[+ a]",),
    )
    assert merge_rewrites([a, b]) == merge_rewrites([b, a])
    assert merge_rewrites([a, b]).banner_lines == ("[+ a]", "[+ Y]", "[- Z]")


# --- properties ----------------------------------------------------------------------------------

CODES = ("A", "B", "C")
rewrites = st.builds(
    Rewrite,
    add_cc=st.lists(
        st.builds(
            Address,
            st.sampled_from(["", "X", "Y"]),
            st.sampled_from(["x@example.org", "X@example.org", "y@example.org"]),
        ),
        max_size=2,
    ).map(tuple),
    add_envelope_recipients=st.lists(st.sampled_from(["x@example.org", "X@Example.org"]), max_size=2).map(
        tuple
    ),
    banner_lines=st.lists(st.sampled_from(["[+ Maya]", "[- Alex]", "[+ alex]"]), max_size=2).map(tuple),
)
findings_st = st.lists(
    st.builds(lambda code, rw: (code, rw), st.sampled_from(CODES), st.none() | rewrites), max_size=3
)
actions = st.sampled_from(list(Action)[:5])


@st.composite
def fake_rules(draw: st.DrawFn) -> list[tuple[FakeRule, Action, dict[str, Action]]]:
    count = draw(st.integers(min_value=0, max_value=5))
    rules = []
    for index in range(count):
        name = f"rule-{index}"
        error = draw(st.sampled_from([None, None, None, ValueError]))
        found = tuple(finding(name, code, rewrite) for code, rewrite in draw(findings_st))
        per_code = draw(st.dictionaries(st.sampled_from(CODES), actions, max_size=2))
        rules.append((FakeRule(name, found, error), draw(actions), per_code))
    return rules


msg_st = st.builds(lambda signed: message(signed=signed), st.booleans())


@settings(max_examples=150, deadline=None)
@given(rules=fake_rules(), data=st.data(), msg=msg_st)
def test_rule_order_never_changes_the_verdict(
    rules: list[Any], data: st.DataObject, msg: ParsedMessage
) -> None:
    base = compiled()
    shuffled = data.draw(st.permutations(rules))
    assert evaluate(msg, ENVELOPE, with_rules(base, *rules), ThreadFacts()) == evaluate(
        msg, ENVELOPE, with_rules(base, *shuffled), ThreadFacts()
    )


@settings(max_examples=150, deadline=None)
@given(rules=fake_rules(), extra=fake_rules(), msg=msg_st, position=st.integers(min_value=0, max_value=5))
def test_adding_a_rule_never_relaxes_the_verdict(
    rules: list[Any], extra: list[Any], msg: ParsedMessage, position: int
) -> None:
    base = compiled()
    before = evaluate(msg, ENVELOPE, with_rules(base, *rules), ThreadFacts())
    renamed = [
        (replace(rule, NAME=f"extra-{rule.NAME}"), action, per_code) for rule, action, per_code in extra
    ]
    combined = rules[:position] + renamed + rules[position:]
    after = evaluate(msg, ENVELOPE, with_rules(base, *combined), ThreadFacts())
    assert SEVERITY.index(after.outcome) >= SEVERITY.index(before.outcome)
    assert set(before.decisions) <= set(after.decisions)
    if after.outcome is before.outcome and after.outcome in (Outcome.REWRITE, Outcome.HOLD):
        assert {a.address.lower() for a in before.rewrite.add_cc} <= {
            a.address.lower() for a in after.rewrite.add_cc
        }
        assert set(before.rewrite.banner_lines) <= set(after.rewrite.banner_lines)


@settings(max_examples=100, deadline=None)
@given(rules=fake_rules(), msg=msg_st)
def test_a_signed_message_is_never_rewritten_in_content(rules: list[Any], msg: ParsedMessage) -> None:
    verdict = evaluate(msg, ENVELOPE, with_rules(compiled(), *rules), ThreadFacts())
    if msg.signed:
        assert not verdict.rewrite.add_cc and not verdict.rewrite.banner_lines


def test_registry_rule_is_a_real_module() -> None:
    assert compiled().rules[0].module is conduct_cc


# --- rules scoped by recipient role (``when``) --------------------------------------------------

SCOPED_POLICY = """\
organisation:
  conduct_address: conduct@example.org
  members:
    - name: Ada Quill
      addresses: [ada@example.org]
audiences:
  moderators:
    domains: [forum.example.net]
rules:
  - rule: anonymisation
    action: hold
    when: {recipient_roles: [reported, moderator]}
cases:
  - code: home shelf
    reported:
      - id: loud-kettle
        addresses: [pat@example.com]
"""


@pytest.mark.parametrize(
    ("rcpts", "outcome", "recipients"),
    [
        pytest.param(("ada@example.org", "conduct@example.org"), Outcome.DELIVER, None, id="committee-only"),
        pytest.param(("someone@example.net",), Outcome.DELIVER, None, id="other"),
        pytest.param(
            ("mods@forum.example.net", "x@example.net"), Outcome.HOLD, ("mods@forum.example.net",), id="mod"
        ),
        pytest.param(
            ("Pat@Example.com", "mods@forum.example.net", "ada@example.org"),
            Outcome.HOLD,
            ("Pat@Example.com", "mods@forum.example.net"),
            id="reported-and-mod",
        ),
    ],
)
def test_when_scopes_a_rule_to_recipient_roles(
    rcpts: tuple[str, ...], outcome: Outcome, recipients: tuple[str, ...] | None
) -> None:
    policy = compiled(SCOPED_POLICY)
    assert policy.rules[0].when_roles == {Role.REPORTED, Role.MODERATOR}
    parsed = message(
        segments=(TextSegment("part 1 (text/plain)", SegmentKind.TEXT, "She left at 21:45."),),
    )
    envelope = Envelope(mail_from="ada@example.org", rcpt_tos=rcpts, authenticated_as="ada@example.org")
    verdict = evaluate(parsed, envelope, policy, ThreadFacts())
    assert verdict.outcome is outcome
    if recipients is None:
        assert verdict.decisions == ()
    else:
        assert {d.finding.code for d in verdict.decisions} == {"PRECISE_TIMESTAMP", "GENDERED_LANGUAGE"}
        assert all(d.finding.recipients == recipients for d in verdict.decisions)


def test_a_rule_without_when_runs_for_every_message() -> None:
    policy = compiled(SCOPED_POLICY.replace("    when: {recipient_roles: [reported, moderator]}\n", ""))
    parsed = message(segments=(TextSegment("part 1 (text/plain)", SegmentKind.TEXT, "at 21:45"),))
    envelope = Envelope(
        mail_from="ada@example.org", rcpt_tos=("ada@example.org",), authenticated_as="ada@example.org"
    )
    verdict = evaluate(parsed, envelope, policy, ThreadFacts())
    assert verdict.outcome is Outcome.HOLD
    assert verdict.decisions[0].finding.recipients == ()
