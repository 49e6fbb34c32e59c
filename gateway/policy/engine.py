"""Compile a policy document once, then evaluate messages against it: findings in, one verdict out.

The engine, not the rules, decides: every finding gets the action its policy entry names, and the most
severe outcome wins (TEMPFAIL > REJECT > HOLD > REWRITE > DELIVER), whatever order the rules run in.
A rule that raises becomes the policy's ``on_error`` action (default tempfail), never a pass.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from pydantic import BaseModel

from gateway.policy.audiences import NO_AUDIENCES, Audiences, Membership, Role
from gateway.policy.committee import Roster, committee_in_force, differences
from gateway.policy.config import AUDIENCE_ROLES, IDENTITY_FIELDS, PolicyDocument
from gateway.policy.consent import consent_decisions
from gateway.policy.loader import RegistryCases, merge_cases
from gateway.policy.matcher import IdentityMatcher
from gateway.policy.model import (
    NO_FINGERPRINTS,
    Action,
    Address,
    Consent,
    ContentFingerprints,
    Decision,
    Envelope,
    Finding,
    IdentityFinder,
    Outcome,
    ParsedMessage,
    ProtectedIdentity,
    Rewrite,
    RuleContext,
    ThreadFacts,
    Verdict,
)
from gateway.policy.registry import RuleModule, rules_by_name

ENGINE_RULE = "message-structure"  # the rule name of the engine's own checks
# What an expunged case keeps in place of identities (gateway.decision.expunge); never matched.
EXPUNGED_MARK = "expunged"

_OUTCOME_OF = {
    Action.AUDIT: Outcome.DELIVER,
    Action.WARN: Outcome.DELIVER,
    Action.REWRITE: Outcome.REWRITE,
    Action.HOLD: Outcome.HOLD,
    Action.REJECT: Outcome.REJECT,
    Action.TEMPFAIL: Outcome.TEMPFAIL,
}
_SEVERITY = {outcome: rank for rank, outcome in enumerate(Outcome)}  # Outcome lists mildest first

_ERROR_ADVICE = {
    Action.TEMPFAIL: (
        "The gateway could not check this message (an internal error), so it has not sent it. "
        "Try again later; if this keeps happening, tell the gateway's administrators."
    ),
    Action.REJECT: (
        "The gateway could not check this message (an internal error), so it has not sent it. "
        "Tell the gateway's administrators; do not try to send it another way."
    ),
    Action.HOLD: (
        "The gateway could not check this message (an internal error), so it is held until "
        "another committee member has reviewed it."
    ),
}

FinderFactory = Callable[[Iterable[ProtectedIdentity]], IdentityFinder]


@dataclass(frozen=True)
class CompiledRule:
    """A rule in force: its module, validated options and the actions its findings lead to."""

    module: RuleModule
    name: str
    params: BaseModel
    action: Action
    actions: Mapping[str, Action]
    # The entry's ``when.recipient_roles``: the rule runs only for messages with such a recipient.
    when_roles: frozenset[Role] = frozenset()

    def action_for(self, code: str) -> Action:
        return self.actions.get(code, self.action)


@dataclass(frozen=True)
class CompiledPolicy:
    """A policy ready to evaluate messages: built once per load, shared read-only."""

    document: PolicyDocument
    version: str  # short sha256 of the policy file bytes; recorded with every verdict
    digest: str  # the full sha256 hex
    finder: IdentityFinder
    rules: tuple[CompiledRule, ...]
    on_error: Action
    conduct_address: str
    committee: frozenset[str]
    member_names: tuple[tuple[str, str], ...]
    internal_domains: frozenset[str]
    consents: frozenset[Consent]
    identities: tuple[ProtectedIdentity, ...]
    # (address, banner name) of members with a configured ``banner_name``.
    banner_names: tuple[tuple[str, str], ...] = ()
    # Where the policy's members and the accounts disagree (committee.differences); logged on load.
    committee_notes: tuple[str, ...] = ()
    audiences: Audiences = NO_AUDIENCES
    # Case code name -> every address of each member conflicted on it (lower-cased).
    conflicts: Mapping[str, frozenset[str]] = field(default_factory=lambda: MappingProxyType({}))
    # Case code name -> "normal" | "severe" (review quorum).
    severities: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


def compile_policy(
    document: PolicyDocument,
    source: bytes,
    *,
    build_finder: FinderFactory | None = None,
    registry: RegistryCases | None = None,
    accounts: Roster | None = None,
) -> CompiledPolicy:
    """Prepare ``document`` (read from ``source``) for evaluation; builds the identity matcher once.

    ``registry`` adds the case registry's cases (ConfigError if they clash with the policy's); the
    version then covers the registry's version too, so every case change is a new policy version.
    ``accounts`` (the users file; None: there is none) decides which members are in force
    (``gateway.policy.committee``); the version covers it too, so ``user remove`` is a new version.
    """
    if build_finder is None:
        build_finder = functools.partial(IdentityMatcher.build, titles=document.name_forms.all_titles())
    hashed = source
    if registry is not None:
        document = merge_cases(document, registry)
        hashed = source + b"\0case-registry:" + registry.digest.encode("ascii")
    notes = differences(document.organisation.members, accounts)
    if accounts is not None:
        document = committee_in_force(document, accounts)
        hashed += b"\0accounts:" + accounts.digest.encode("ascii")
    identities = protected_identities(document)
    digest = hashlib.sha256(hashed).hexdigest()
    modules = rules_by_name()
    rules = tuple(
        CompiledRule(
            module=modules[entry.rule],
            name=entry.rule,
            params=entry.params,
            action=Action(entry.action),
            actions=MappingProxyType({code: Action(action) for code, action in entry.actions.items()}),
            when_roles=frozenset(entry.when.recipient_roles) if entry.when else frozenset(),
        )
        for entry in document.rules
        if entry.enabled
    )
    organisation = document.organisation
    return CompiledPolicy(
        document=document,
        version=digest[:16],
        digest=digest,
        finder=build_finder(identities),
        rules=rules,
        on_error=Action(document.on_error),
        conduct_address=organisation.conduct_address.lower(),
        committee=frozenset(
            address.lower() for member in organisation.members for address in member.addresses
        ),
        member_names=tuple(
            (address.lower(), member.name) for member in organisation.members for address in member.addresses
        ),
        banner_names=tuple(
            (address.lower(), member.banner_name)
            for member in organisation.members
            if member.banner_name
            for address in member.addresses
        ),
        committee_notes=notes,
        internal_domains=frozenset(organisation.internal_domains),
        consents=frozenset(
            Consent(
                case=case.code,
                person=consent.person,
                recipient=consent.recipient.lower(),
                reference=consent.reference,
                date=consent.date.isoformat(),
                expires=consent.expires.isoformat() if consent.expires else None,
                withdrawn=consent.withdrawn.isoformat() if consent.withdrawn else None,
            )
            for case in document.cases
            for consent in case.consents
        ),
        identities=identities,
        audiences=audiences(document),
        conflicts=conflicts(document),
        severities=MappingProxyType({case.code: case.severity for case in document.cases}),
    )


def conflicts(document: PolicyDocument) -> Mapping[str, frozenset[str]]:
    """Each case's conflicted members, by every address of theirs (a conflict follows the person)."""
    addresses_of = {
        address.lower(): frozenset(a.lower() for a in member.addresses)
        for member in document.organisation.members
        for address in member.addresses
    }
    found: dict[str, frozenset[str]] = {}
    for case in document.cases:
        members: set[str] = set()
        for address in case.conflicts:
            members |= addresses_of.get(address.lower(), frozenset({address.lower()}))
        if members:
            found[case.code] = frozenset(members)
    return MappingProxyType(found)


def protected_identities(document: PolicyDocument) -> tuple[ProtectedIdentity, ...]:
    """Every string that identifies a reporter or witness of any case."""
    found: dict[ProtectedIdentity, None] = {}
    for case in document.cases:
        for person in case.protected():
            for key, kind in IDENTITY_FIELDS:
                for value in getattr(person, key):
                    if value.strip().casefold() == EXPUNGED_MARK:
                        continue  # an expunged person: the placeholder identifies nobody
                    found[
                        ProtectedIdentity(
                            case=case.code,
                            person=person.id,
                            kind=kind,
                            value=value,
                            weak_forms=person.weak_forms,
                            everyday_words=person.everyday_words,
                        )
                    ] = None
    return tuple(found)


def audiences(document: PolicyDocument) -> Audiences:
    """Who every address is: the committee, case parties, and the policy's audience lists."""
    organisation = document.organisation
    case_roles = (("reporters", Role.REPORTER), ("witnesses", Role.WITNESS), ("reported", Role.REPORTED))
    addresses = [
        (address, Membership(role, case.code))
        for case in document.cases
        for key, role in case_roles
        for person in getattr(case, key)
        for address in person.addresses
    ]
    domains: list[tuple[str, Membership]] = []
    for key, role in AUDIENCE_ROLES:
        group = getattr(document.audiences, key)
        addresses.extend((address, Membership(role)) for address in group.addresses)
        domains.extend((domain, Membership(role)) for domain in group.domains)
    return Audiences.build(
        conduct_address=organisation.conduct_address,
        committee=(address for member in organisation.members for address in member.addresses),
        addresses=addresses,
        domains=domains,
    )


def rule_context(
    policy: CompiledPolicy,
    thread: ThreadFacts,
    *,
    protected_content: ContentFingerprints = NO_FINGERPRINTS,
    today: datetime.date | None = None,
) -> RuleContext:
    """The facts rules read, for one message on ``thread`` judged on ``today`` (UTC).

    Rules see only the consents in force on ``today``: withdrawn and expired ones lift nothing.
    """
    return RuleContext(
        conduct_address=policy.conduct_address,
        committee=policy.committee,
        member_names=policy.member_names,
        internal_domains=policy.internal_domains,
        finder=policy.finder,
        consents=frozenset(c for c in policy.consents if c.status(today) == "in-force"),
        today=today,
        thread=thread,
        audiences=policy.audiences,
        protected_content=protected_content,
        conflicts=policy.conflicts,
        banner_names=policy.banner_names,
    )


def evaluate(
    message: ParsedMessage,
    envelope: Envelope,
    policy: CompiledPolicy,
    thread: ThreadFacts,
    *,
    protected_content: ContentFingerprints = NO_FINGERPRINTS,
    today: datetime.date | None = None,
) -> Verdict:
    """Run every rule in force and combine their findings into one verdict.

    ``protected_content`` holds the fingerprints of reporters' own messages (looked up by the caller);
    ``today`` is the day (UTC) consents are judged on (None: consents that can expire count as expired).
    """
    if message.ambiguities:
        return Verdict(
            outcome=Outcome.REJECT,
            decisions=tuple(
                Decision(_ambiguity(reason), Action.REJECT) for reason in dict.fromkeys(message.ambiguities)
            ),
            policy_version=policy.version,
        )
    context = rule_context(policy, thread, protected_content=protected_content, today=today)
    decisions: list[Decision] = []
    for rule in policy.rules:
        decisions.extend(_run(rule, message, envelope, context, policy.on_error))
    decisions.extend(consent_decisions(message, envelope, policy.consents, context))
    decisions = [_unfixable_rewrite_refused(decision) for decision in decisions]
    if message.signed:
        decisions = [_signed_refused(decision) for decision in decisions]
    decisions = _rewrites_that_disclose_refused(decisions, envelope, context)
    return _combine(decisions, policy.version)


def scoped_recipients(rule: CompiledRule, envelope: Envelope, context: RuleContext) -> tuple[str, ...] | None:
    """The envelope recipients a rule's ``when`` selects; None when the rule applies to every message."""
    if not rule.when_roles:
        return None
    chosen: dict[str, str] = {}
    for recipient in envelope.rcpt_tos:
        if context.roles_of(recipient) & rule.when_roles:
            chosen.setdefault(recipient.lower(), recipient)
    return tuple(chosen.values())


def _run(
    rule: CompiledRule, message: ParsedMessage, envelope: Envelope, context: RuleContext, on_error: Action
) -> list[Decision]:
    scoped = scoped_recipients(rule, envelope, context)
    if scoped == ():
        return []  # the rule's ``when`` selects no recipient of this message
    try:
        findings = rule.module.check(message, envelope, context, rule.params)
        if not isinstance(findings, list) or not all(isinstance(item, Finding) for item in findings):
            raise TypeError("check() must return a list of Finding")
        if scoped:
            # A scoped rule's findings concern the recipients its ``when`` selected (unless it says).
            findings = [item if item.recipients else replace(item, recipients=scoped) for item in findings]
    except Exception as exc:  # a failing rule must never let a message pass unchecked
        return [
            Decision(
                Finding(
                    rule=rule.name,
                    code="RULE_ERROR",
                    where=f"rule {rule.name}",
                    kind=type(exc).__name__,
                    advice=_ERROR_ADVICE[on_error],
                ),
                on_error,
            )
        ]
    return [Decision(finding, rule.action_for(finding.code)) for finding in findings]


def _ambiguity(reason: str) -> Finding:
    return Finding(
        rule=ENGINE_RULE,
        code="AMBIGUOUS_MESSAGE",
        where="message",
        kind="structure",
        advice=(
            f"The message can be read in more than one way ({reason}), and the gateway refuses such "
            "messages because filters can be bypassed that way. Send it again from an ordinary mail "
            "client, without hand-edited headers or attachments."
        ),
    )


def _changes_content(rewrite: Rewrite | None) -> bool:
    return rewrite is not None and bool(rewrite.add_cc or rewrite.banner_lines)


def _is_empty(rewrite: Rewrite | None) -> bool:
    return rewrite is None or not (rewrite.add_cc or rewrite.add_envelope_recipients or rewrite.banner_lines)


def _unfixable_rewrite_refused(decision: Decision) -> Decision:
    # "rewrite" on a finding the gateway cannot correct by itself must not deliver it unchanged.
    if decision.action is Action.REWRITE and _is_empty(decision.finding.rewrite):
        return Decision(decision.finding, Action.REJECT)
    return decision


def _signed_refused(decision: Decision) -> Decision:
    finding = decision.finding
    if decision.action is not Action.REWRITE or not _changes_content(finding.rewrite):
        return decision
    return Decision(
        replace(
            finding,
            code="SIGNED_MESSAGE_NEEDS_CHANGE",
            kind="signature",
            rewrite=None,
            advice=(
                "The message is signed (S/MIME or PGP/MIME) and the gateway will not change a signed "
                f"message, because that would break the signature. Make the change yourself: {finding.advice}"
            ),
        ),
        Action.REJECT,
    )


def _rewrites_that_disclose_refused(
    decisions: list[Decision], envelope: Envelope, context: RuleContext
) -> list[Decision]:
    """A rewrite must never put a protected person's name in front of someone outside the committee."""
    if not any(_rewrite_texts(d) for d in decisions):
        return decisions
    added = [
        recipient
        for decision in decisions
        if decision.action is Action.REWRITE and decision.finding.rewrite is not None
        for recipient in decision.finding.rewrite.add_envelope_recipients
    ]
    # Committee members conflicted on a case count as outsiders for that case's people.
    candidates = {
        r.lower()
        for r in (*envelope.rcpt_tos, *added)
        if not context.is_committee(r) or context.conflicted_cases(r)
    }
    if not candidates:
        return decisions
    consented = {(consent.case, consent.person, consent.recipient) for consent in context.consents}
    result = []
    for decision in decisions:
        texts = _rewrite_texts(decision)
        if texts and any(
            (identity.case, identity.person, outsider) not in consented
            and not context.is_inside(outsider, identity.case)
            for text in texts
            for identity in context.finder.find(text)
            for outsider in candidates
        ):
            decision = Decision(
                replace(
                    decision.finding,
                    code="REWRITE_NAMES_PROTECTED_PERSON",
                    rewrite=None,
                    advice=(
                        "The change the gateway would make to this message would name a person the "
                        "committee protects to someone outside the committee. Start a new message "
                        "instead of replying, and do not name them."
                    ),
                ),
                Action.REJECT,
            )
        result.append(decision)
    return result


def _rewrite_texts(decision: Decision) -> list[str]:
    """The words a REWRITE decision would add to the message."""
    rewrite = decision.finding.rewrite
    if decision.action is not Action.REWRITE or rewrite is None:
        return []
    return [*rewrite.banner_lines, *(mailbox.name for mailbox in rewrite.add_cc if mailbox.name)]


def combine(decisions: Iterable[Decision], version: str) -> Verdict:
    """One verdict from decisions: the most severe outcome, and the rewrites it applies."""
    return _combine(list(decisions), version)


def _combine(decisions: list[Decision], version: str) -> Verdict:
    ordered = tuple(sorted(decisions, key=_decision_order))
    outcome = max(
        (_OUTCOME_OF[d.action] for d in ordered), key=_SEVERITY.__getitem__, default=Outcome.DELIVER
    )
    rewrite = Rewrite()
    if outcome in (Outcome.REWRITE, Outcome.HOLD):
        rewrite = merge_rewrites(
            d.finding.rewrite for d in ordered if d.action is Action.REWRITE and d.finding.rewrite is not None
        )
    return Verdict(outcome=outcome, decisions=ordered, policy_version=version, rewrite=rewrite)


def _decision_order(decision: Decision) -> tuple[int, str, str, str, str, tuple[str, ...], str]:
    finding = decision.finding
    severity = _SEVERITY[_OUTCOME_OF[decision.action]]
    return (
        -severity,
        finding.rule,
        finding.code,
        finding.where,
        finding.kind,
        finding.recipients,
        repr(finding),
    )


def merge_rewrites(rewrites: Iterable[Rewrite]) -> Rewrite:
    """One rewrite doing everything the given ones ask, without duplicates, in a canonical order."""
    cc: dict[str, Address] = {}
    recipients: dict[str, str] = {}
    banner: dict[str, None] = {}
    for rewrite in rewrites:
        # Where two rewrites spell one address differently, the choice must not depend on rule order.
        for mailbox in rewrite.add_cc:
            current = cc.get(mailbox.address.lower())
            if current is None or (mailbox.name, mailbox.address) > (current.name, current.address):
                cc[mailbox.address.lower()] = mailbox
        for recipient in rewrite.add_envelope_recipients:
            recipients[recipient.lower()] = min(recipients.get(recipient.lower(), recipient), recipient)
        banner.update(dict.fromkeys(rewrite.banner_lines))
    return Rewrite(
        add_cc=tuple(cc[key] for key in sorted(cc)),
        add_envelope_recipients=tuple(recipients[key] for key in sorted(recipients)),
        banner_lines=tuple(sorted(banner, key=lambda line: (line[:2], line.casefold(), line))),
    )
