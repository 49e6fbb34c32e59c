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

from gateway.cli import config_option
from gateway.errors import ConfigError, GatewayError, LedgerError, PolicyError
from gateway.fingerprints import FingerprintStore, fingerprints_path, key_path
from gateway.ledger import Ledger, ledger_path
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
from gateway.policy.rewrite import apply_rewrite
from gateway.policy_screener import load_compiled_policy
from gateway.registry import CaseRegistry
from gateway.screening import Refuse
from gateway.settings import CONFIG_VARIABLE, DEFAULT_CONFIG, SYSTEM_CONFIG, GatewaySettings, load_settings
from gateway.verdict_replies import (
    change_descriptions,
    change_labels,
    refusal,
    relay_header,
    rewrite_impossible,
)

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
    verdict: Verdict
    thread: ThreadFacts | None  # None: no ledger to look in
    rcpt_tos: tuple[str, ...]
    changes: tuple[str, ...]
    reply: Refuse | None
    relayed: bytes | None  # the message as it would be relayed (DELIVER/REWRITE)


def run_check(
    content: bytes,
    envelope: Envelope,
    policy: CompiledPolicy,
    ledger: Ledger | None,
    protected_content: ContentFingerprints = NO_FINGERPRINTS,
) -> CheckResult:
    """Evaluate exactly as the screener would, but record nothing."""
    message = parse_message(content)
    thread = ledger.lookup(message) if ledger is not None else None
    verdict = evaluate(
        message,
        envelope,
        policy,
        thread or ThreadFacts(),
        protected_content=protected_content,
        today=datetime.datetime.now(datetime.UTC).date(),
    )
    outcome = verdict.outcome
    if outcome not in (Outcome.DELIVER, Outcome.REWRITE):
        return CheckResult(outcome, verdict, thread, envelope.rcpt_tos, (), refusal(verdict, REFERENCE), None)
    rewrite = verdict.rewrite if outcome is Outcome.REWRITE else Rewrite()
    try:
        relayed = apply_rewrite(content, rewrite) if outcome is Outcome.REWRITE else content
    except PolicyError as exc:
        reply = rewrite_impossible(verdict, str(exc), REFERENCE)
        return CheckResult(Outcome.REJECT, verdict, thread, envelope.rcpt_tos, (), reply, None)
    present = {r.lower() for r in envelope.rcpt_tos}
    rcpt_tos = (*envelope.rcpt_tos, *(r for r in rewrite.add_envelope_recipients if r.lower() not in present))
    header = relay_header(REFERENCE, change_labels(rewrite))
    return CheckResult(
        outcome, verdict, thread, rcpt_tos, change_descriptions(rewrite), None, header + relayed
    )


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


def _open_fingerprints(settings: GatewaySettings | None) -> tuple[FingerprintStore | None, str]:
    # Only an existing store is opened: `check` must not create the store or its key.
    if settings is None:
        return None, "no settings file: protected content (fingerprints) not consulted"
    state = settings.state_dir
    if not (fingerprints_path(state).exists() and key_path(state).exists()):
        return None, ""
    try:
        return FingerprintStore.open(state), ""
    except GatewayError as exc:
        return None, f"{exc}; protected content (fingerprints) not consulted"


def _open_ledger(settings: GatewaySettings | None) -> tuple[Ledger | None, str]:
    if settings is None:
        return None, "no settings file: thread history not consulted"
    path = ledger_path(settings.state_dir)
    try:
        ledger = Ledger.open_read_only(path)
    except LedgerError as exc:
        return None, f"{exc}; thread history not consulted"
    if ledger is None:
        return None, f"{path} does not exist yet: no thread history"
    return ledger, ""


@click.command()
@click.argument("message_file", metavar="MESSAGE.eml", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--from", "mail_from", required=True, help="Envelope sender (MAIL FROM).")
@click.option("--to", "rcpt_tos", required=True, multiple=True, help="Envelope recipient; repeat for each.")
@click.option("--as", "member", default=None, help="Authenticated member (default: the --from address).")
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
    registry = CaseRegistry.from_settings(settings) if settings is not None else None
    users_file = settings.auth.users_file if settings is not None else None
    policy, _stamp = load_compiled_policy(policy_path, registry, users_file)
    ledger, ledger_note = _open_ledger(settings)
    fingerprints, fingerprints_note = _open_fingerprints(settings)
    envelope = Envelope(mail_from=mail_from, rcpt_tos=rcpt_tos, authenticated_as=member or mail_from)
    try:
        result = run_check(
            content, envelope, policy, ledger, fingerprints if fingerprints is not None else NO_FINGERPRINTS
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
    for note in (ledger_note, fingerprints_note):
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
    verdict = result.verdict
    out: dict[str, Any] = {
        "verdict": result.outcome.value,
        "policy_version": policy.version,
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
            for d in verdict.decisions
        ],
        "recipients": list(result.rcpt_tos),
        "changes": list(result.changes),
        "reply": (
            {"code": result.reply.code, "status": result.reply.status, "lines": list(result.reply.lines)}
            if result.reply is not None
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
    verdict = result.verdict
    reply = result.reply
    answer = f"{reply.code} {reply.status}" if reply is not None else "250 (accepted and relayed)"
    click.echo(f"Verdict: {result.outcome.value} (a mail client would get {answer})")
    click.echo(f"Policy version: {policy.version}")
    thread = result.thread
    if thread is None:
        click.echo("Thread: no ledger consulted")
    elif thread.parent_known:
        case = f", case {thread.case}" if thread.case else ""
        click.echo(
            f"Thread: reply to a message the gateway relayed ({len(thread.parent_participants)} people{case})"
        )
    else:
        click.echo("Thread: no known parent message")
    click.echo(f"Recipients: {', '.join(result.rcpt_tos)}")
    if not verdict.decisions:
        click.echo("Findings: none")
    else:
        click.echo(f"Findings ({len(verdict.decisions)}):")
    for number, decision in enumerate(verdict.decisions, start=1):
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
    if reply is not None:
        click.echo("Reply the mail client would show:")
        for index, line in enumerate(reply.lines):
            separator = " " if index == len(reply.lines) - 1 else "-"
            click.echo(f"  {reply.code}{separator}{reply.status} {line}")
