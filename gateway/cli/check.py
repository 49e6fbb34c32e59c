"""`conduct-gateway check`: run the full policy on a message file, without sending or recording it."""

from __future__ import annotations

import datetime
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from gateway import replies
from gateway.cli import config_option
from gateway.decision.evaluation import thread_facts
from gateway.decision.policy_source import load_compiled_policy
from gateway.errors import ConfigError, GatewayError, LedgerError, PolicyError
from gateway.intake.submission_checks import IntakeRefusal, check_submitted, missing_headers, too_big
from gateway.mail.verdict_replies import (
    change_descriptions,
    change_labels,
    held_lines,
    refusal,
    relay_header,
    rewrite_impossible,
)
from gateway.policy.engine import CompiledPolicy, evaluate
from gateway.policy.mime import parse_message
from gateway.policy.model import (
    NO_FINGERPRINTS,
    ContentFingerprints,
    Envelope,
    Outcome,
    Rewrite,
    ThreadFacts,
    Verdict,
)
from gateway.policy.reviewers import AccountCheck, ReviewPlan, plan_review
from gateway.policy.rewrite import apply_rewrite
from gateway.replies import Reply
from gateway.review.rights import account_check
from gateway.settings import (
    CONFIG_VARIABLE,
    DEFAULT_CONFIG,
    SYSTEM_CONFIG,
    GatewaySettings,
    LimitsSettings,
    load_settings,
)
from gateway.state.opening import open_state
from gateway.state.ports import FingerprintsPort, LedgerPort

REFERENCE = "check"
EXIT_INTERNAL_ERROR = 3
_BARE_LF = re.compile(rb"(?<!\r)\n")


def as_submitted(raw: bytes) -> bytes:
    """The bytes a mail client would have sent: no mbox ``From `` line, CRLF line endings, final CRLF."""
    if raw.startswith(b"From "):
        newline = raw.find(b"\n")
        raw = raw[newline + 1 :] if newline >= 0 else b""
    raw = _BARE_LF.sub(b"\r\n", raw)
    if raw and not raw.endswith(b"\r\n"):
        raw += b"\r\n"
    return raw


@dataclass(frozen=True)
class CheckResult:
    """Everything ``check`` reports about one message."""

    outcome: Outcome  # what the gateway would do (a rewrite it cannot make safely is a reject)
    verdict: Verdict | None  # None: refused at intake, before the policy ran
    thread: ThreadFacts | None  # None: no ledger to look in
    rcpt_tos: tuple[str, ...]
    changes: tuple[str, ...]
    reply: Reply  # exactly what a mail client would be answered (the queue id reads "check")
    relayed: bytes | None  # the message as it would be relayed (DELIVER/REWRITE)
    intake_refusal: str | None = None  # MESSAGE_TOO_BIG, MALFORMED_MESSAGE, HEADER_ADDRESS_NOT_MEMBER
    review: ReviewPlan | None = None  # for a hold: who would be asked, how many must approve


@dataclass(frozen=True)
class IntakeLimits:
    """The settings intake checks a submission against (``limits.*``, ``server.hostname``)."""

    max_message_size: int
    max_line_length: int
    hostname: str

    @classmethod
    def of(cls, settings: GatewaySettings | None) -> IntakeLimits:
        limits = settings.limits if settings is not None else LimitsSettings()
        hostname = settings.server.hostname if settings is not None else "localhost"
        return cls(limits.max_message_size, limits.max_line_length, hostname)


def run_check(
    content: bytes,
    envelope: Envelope,
    policy: CompiledPolicy,
    ledger: LedgerPort | None,
    protected_content: ContentFingerprints = NO_FINGERPRINTS,
    *,
    limits: IntakeLimits | None = None,
    allowed: frozenset[str] | None = None,
    has_account: AccountCheck | None = None,
) -> CheckResult:
    """Decide exactly as the live gateway would, from intake checks to the reply, but record nothing.

    ``allowed`` are the logged-in member's addresses (the sender binding); None skips that check.
    """
    limits = limits or IntakeLimits.of(None)
    member = envelope.authenticated_as
    checked = (
        too_big(limits.max_message_size)
        if len(content) > limits.max_message_size
        else check_submitted(content, member=member, allowed=allowed, max_line_length=limits.max_line_length)
    )
    if isinstance(checked, IntakeRefusal):
        return CheckResult(
            Outcome.REJECT,
            None,
            None,
            envelope.rcpt_tos,
            (),
            checked.reply,
            None,
            intake_refusal=checked.code,
        )
    content = missing_headers(checked, limits.hostname, datetime.datetime.now(datetime.UTC)) + content
    message = parse_message(content)
    thread = thread_facts(ledger, message, envelope.rcpt_tos) if ledger is not None else None
    verdict = evaluate(
        message,
        envelope,
        policy,
        thread or ThreadFacts(),
        protected_content=protected_content,
        today=datetime.datetime.now(datetime.UTC).date(),
    )
    outcome = verdict.outcome
    if outcome is Outcome.HOLD:
        return _held(verdict, thread, envelope, policy, has_account)
    if outcome not in (Outcome.DELIVER, Outcome.REWRITE):
        refused = refusal(verdict, REFERENCE)
        return CheckResult(outcome, verdict, thread, envelope.rcpt_tos, (), _reply(refused), None)
    rewrite = verdict.rewrite if outcome is Outcome.REWRITE else Rewrite()
    try:
        relayed = apply_rewrite(content, rewrite) if outcome is Outcome.REWRITE else content
    except PolicyError as exc:
        refused = rewrite_impossible(verdict, str(exc), REFERENCE)
        return CheckResult(Outcome.REJECT, verdict, thread, envelope.rcpt_tos, (), _reply(refused), None)
    present = {r.lower() for r in envelope.rcpt_tos}
    rcpt_tos = (*envelope.rcpt_tos, *(r for r in rewrite.add_envelope_recipients if r.lower() not in present))
    header = relay_header(REFERENCE, change_labels(rewrite))
    changes = change_descriptions(rewrite)
    reply = replies.queued(REFERENCE, changes)
    return CheckResult(outcome, verdict, thread, rcpt_tos, changes, reply, header + relayed)


def _held(
    verdict: Verdict,
    thread: ThreadFacts | None,
    envelope: Envelope,
    policy: CompiledPolicy,
    has_account: AccountCheck | None,
) -> CheckResult:
    """A hold answers 250 (held), or 550 when too few members may review it: as the review desk does."""
    cases = sorted({d.finding.case for d in verdict.decisions if d.finding.case})
    if thread is not None and thread.case and thread.case not in cases:
        cases.append(thread.case)
    plan = plan_review(
        policy,
        authenticated_as=envelope.authenticated_as,
        mail_from=envelope.mail_from,
        cases=cases,
        has_account=has_account,
    )
    if plan.refusal is not None:
        reply = replies.multiline(550, "5.7.1", (plan.refusal, f"Reference: {REFERENCE}"))
        return CheckResult(Outcome.REJECT, verdict, thread, envelope.rcpt_tos, (), reply, None, review=plan)
    held_codes = dict.fromkeys(d.finding.code for d in verdict.decisions if d.action.value == "hold")
    reasons = ", ".join(held_codes) or ", ".join(dict.fromkeys(d.finding.code for d in verdict.decisions))
    notified = envelope.mail_from.lower() in policy.committee | {policy.conduct_address.lower()}
    lines = held_lines(reasons or "review required", REFERENCE, notified=notified, sender=envelope.mail_from)
    reply = replies.multiline(250, "2.0.0", lines)
    return CheckResult(Outcome.HOLD, verdict, thread, envelope.rcpt_tos, (), reply, None, review=plan)


def _reply(refused: Reply) -> Reply:
    return replies.multiline(refused.code, refused.status, refused.lines)


def _settings(config_path: Path | None, policy_path: Path | None) -> GatewaySettings | None:
    # With --policy and no settings file anywhere, check against the policy alone (no ledger).
    if (
        policy_path is not None
        and config_path is None
        and CONFIG_VARIABLE not in os.environ
        and not DEFAULT_CONFIG.exists()
        and not SYSTEM_CONFIG.exists()
    ):
        return None
    return load_settings(config_path)


def _account(
    settings: GatewaySettings | None, member: str
) -> tuple[frozenset[str] | None, AccountCheck | None, str]:
    """The member's own addresses (for the sender binding) and the account check reviewers need."""
    if settings is None:
        return None, None, "no users file: From:/Sender: not checked against an account"
    try:
        opener = open_state(settings).accounts
        if not opener.exists():
            return None, None, "no accounts: From:/Sender: not checked against an account"
        accounts = opener.open()
    except GatewayError as exc:
        return None, None, f"{exc}; From:/Sender: not checked against an account"
    allowed = accounts.addresses_of(member)
    if not allowed:
        # The live gateway would not have let this login in at all.
        return (
            frozenset(),
            account_check(accounts),
            f"{member} has no account: the gateway would refuse its login",
        )
    return allowed, account_check(accounts), ""


def _open_fingerprints(settings: GatewaySettings | None) -> tuple[FingerprintsPort | None, str]:
    # Only an existing store is opened: `check` must not create the store or its key.
    if settings is None:
        return None, "no settings file: protected content (fingerprints) not consulted"
    fingerprints = open_state(settings).fingerprints
    if not fingerprints.exists():
        return None, ""
    try:
        return fingerprints.open(), ""
    except GatewayError as exc:
        return None, f"{exc}; protected content (fingerprints) not consulted"


def _open_ledger(settings: GatewaySettings | None) -> tuple[LedgerPort | None, str]:
    if settings is None:
        return None, "no settings file: thread history not consulted"
    state = open_state(settings)
    path = state.layout.ledger
    try:
        ledger = state.ledger.open_read_only()
    except LedgerError as exc:
        return None, f"{exc}; thread history not consulted"
    if ledger is None:
        return None, f"{path} does not exist yet: no thread history"
    return ledger, ""


@click.command()
@click.argument("message_file", metavar="MESSAGE.eml", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--from", "mail_from", required=True, help="Envelope sender (MAIL FROM).")
@click.option("--to", "rcpt_tos", required=True, multiple=True, help="Envelope recipient; repeat for each.")
@click.option(
    "--login",
    "--as",
    "member",
    default=None,
    help=(
        "The member logged in (default: the --from address). With a users file, From: and Sender: "
        "are checked against this account's addresses, as the gateway does."
    ),
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@click.option("--show-rewrite", is_flag=True, help="Also print the message exactly as it would be relayed.")
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Check against this policy file instead of the one the settings name (try an edit first).",
)
@config_option
def check(
    message_file: Path,
    mail_from: str,
    rcpt_tos: tuple[str, ...],
    member: str | None,
    as_json: bool,
    show_rewrite: bool,
    policy_path: Path | None,
    config_path: Path | None,
) -> None:
    """Run the policy on MESSAGE.eml as if it were submitted, without sending or recording anything.

    Prints the verdict (deliver, rewrite, reject, hold or tempfail), every finding with what it
    matched (this is your own message, so the matched text is shown here and nowhere else), and
    the reply a mail client would get. Exit status 0 whatever the verdict; 2 for unusable input
    (missing file, invalid policy or settings); 3 if the policy engine failed internally.
    """
    try:
        raw = message_file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{message_file}: cannot read the message: {exc.strerror}") from None
    content = as_submitted(raw)
    settings = _settings(config_path, policy_path)
    if policy_path is None and settings is not None:
        policy_path = settings.policy.path
    assert policy_path is not None  # _settings returns None only when --policy was given
    state = open_state(settings) if settings is not None else None
    registry = state.cases if state is not None else None
    policy, _stamp = load_compiled_policy(policy_path, registry, state.accounts if state else None)
    ledger, ledger_note = _open_ledger(settings)
    fingerprints, fingerprints_note = _open_fingerprints(settings)
    envelope = Envelope(mail_from=mail_from, rcpt_tos=rcpt_tos, authenticated_as=member or mail_from)
    allowed, has_account, accounts_note = _account(settings, envelope.authenticated_as)
    try:
        result = run_check(
            content,
            envelope,
            policy,
            ledger,
            fingerprints if fingerprints is not None else NO_FINGERPRINTS,
            limits=IntakeLimits.of(settings),
            allowed=allowed,
            has_account=has_account,
        )
    except Exception as exc:
        click.echo(
            f"conduct-gateway: internal error in the policy engine ({type(exc).__name__}) while checking "
            f"{message_file}; the gateway would answer 451 4.3.0 (try again later). Please report it.",
            err=True,
        )
        sys.exit(EXIT_INTERNAL_ERROR)
    finally:
        if ledger is not None:
            ledger.close()
        if fingerprints is not None:
            fingerprints.close()
    for note in (ledger_note, fingerprints_note, accounts_note):
        if note:
            click.echo(f"note: {note}", err=True)
    if as_json:
        click.echo(json.dumps(_as_json(result, policy, show_rewrite), indent=2, ensure_ascii=False))
        return
    _print_text(result, policy)
    if show_rewrite and result.relayed is not None:
        click.echo("\nMessage as it would be relayed:\n")
        click.echo(result.relayed, nl=False)


def _as_json(result: CheckResult, policy: CompiledPolicy, show_rewrite: bool) -> dict[str, Any]:
    decisions = result.verdict.decisions if result.verdict is not None else ()
    out: dict[str, Any] = {
        "verdict": result.outcome.value,
        "policy_version": policy.version,
        "refused_at_intake": result.intake_refusal,
        "findings": [
            {
                "rule": d.finding.rule,
                "code": d.finding.code,
                "action": d.action.value,
                "where": d.finding.where,
                "kind": d.finding.kind,
                "advice": d.finding.advice,
                "recipients": list(d.finding.recipients),
                "case": d.finding.case,
                "detail": d.finding.private_detail,
            }
            for d in decisions
        ],
        "recipients": list(result.rcpt_tos),
        "changes": list(result.changes),
        "reply": {
            "code": result.reply.code,
            "status": result.reply.status,
            "lines": list(result.reply.lines),
        },
        "review": (
            {
                "reviewers": [r.address for r in result.review.reviewers],
                "required_approvals": result.review.required_approvals,
            }
            if result.review is not None
            else None
        ),
        "thread": (
            {"parent_known": result.thread.parent_known, "case": result.thread.case}
            if result.thread is not None
            else None
        ),
    }
    if show_rewrite:
        out["relayed"] = result.relayed.decode("utf-8", "replace") if result.relayed is not None else None
    return out


def _print_text(result: CheckResult, policy: CompiledPolicy) -> None:
    reply = result.reply
    click.echo(f"Verdict: {result.outcome.value} (a mail client would get {reply.code} {reply.status})")
    click.echo(f"Policy version: {policy.version}")
    if result.intake_refusal is not None:
        click.echo(f"Refused before the policy ran ({result.intake_refusal}), as the gateway's intake would.")
    thread = result.thread
    if result.verdict is None:
        pass
    elif thread is None:
        click.echo("Thread: no ledger consulted")
    elif thread.parent_known:
        case = f", case {thread.case}" if thread.case else ""
        click.echo(
            f"Thread: reply to a message the gateway relayed ({len(thread.parent_participants)} people{case})"
        )
    else:
        click.echo("Thread: no known parent message")
    click.echo(f"Recipients: {', '.join(result.rcpt_tos)}")
    decisions = result.verdict.decisions if result.verdict is not None else ()
    if result.verdict is not None:
        click.echo(f"Findings ({len(decisions)}):" if decisions else "Findings: none")
    for number, decision in enumerate(decisions, start=1):
        finding = decision.finding
        click.echo(f"  {number}. {finding.rule} {finding.code} -> {decision.action.value}")
        click.echo(f"     where: {finding.where}")
        if finding.kind:
            click.echo(f"     kind: {finding.kind}")
        if finding.case:
            click.echo(f"     case: {finding.case}")
        if finding.private_detail:
            click.echo(f"     matched: {finding.private_detail}")
        if finding.recipients:
            click.echo(f"     recipients: {', '.join(finding.recipients)}")
        if finding.advice:
            click.echo(f"     advice: {finding.advice}")
        banner = finding.rewrite.banner_lines if finding.rewrite is not None else ()
        for line in banner:
            click.echo(f"     banner: {line}")
    for change in result.changes:
        click.echo(f"Change: {change}")
    if result.review is not None and result.outcome is Outcome.HOLD:
        asked = ", ".join(r.address for r in result.review.reviewers)
        click.echo(
            f"Review: {asked} would be asked; {result.review.required_approvals} approval(s) release it."
        )
    click.echo("Reply the mail client would show:")
    for line in str(reply).split("\r\n"):
        click.echo(f"  {line}")
