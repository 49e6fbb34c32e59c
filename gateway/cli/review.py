"""`conduct-gateway review list|show|claim|unclaim|approve|reject|expire`: holds awaiting a second member.

Privacy follows `queue show`: whoever runs the gateway may not be on the committee, so `show`
prints the findings, the changes the gateway will make and a header summary whose values that can
carry names or the sender's words (the Subject first of all) are hidden; never the body. Committee
members read the message itself in the review request they were sent.

`approve` and `reject` record a decision as the member named with `--as` (never the sender), with
the same rules as a reply by mail: the first decision wins. They work while the gateway runs: a
released message is picked up at the next delivery poll, and the decision reaches the audit trail
at the gateway's next review round (the running gateway holds the trail's lock).
"""

from __future__ import annotations

import asyncio
import time
from email import policy as email_policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any, Literal

import click

from gateway.cli import config_option
from gateway.cli.auditing import audit_sink
from gateway.cli.queue import header_summary, mime_outline
from gateway.cli.tables import emit, json_option
from gateway.decision.facts import learn_release
from gateway.decision.policy_source import load_policy_for
from gateway.policy.engine import CompiledPolicy
from gateway.policy.reviewers import Member, member_of
from gateway.review.auditing import AUDIT_EVENT, AuditSink
from gateway.review.desk import ReviewDesk
from gateway.review.outgoing import spool_outgoing
from gateway.review.rights import account_check
from gateway.settings import GatewaySettings, load_settings
from gateway.state.holds_port import HoldRecord, HoldsPort, ReviewError
from gateway.state.opening import State, open_state

_UNDO_KEY = "cli"


@click.group()
def review() -> None:
    """Held messages waiting for a second member: list, show, claim, unclaim, approve, reject, expire."""


def _open(config_path: Path | None) -> tuple[GatewaySettings, CompiledPolicy, HoldsPort]:
    settings, policy, _state, store = _open_state(config_path)
    return settings, policy, store


def _open_state(config_path: Path | None) -> tuple[GatewaySettings, CompiledPolicy, State, HoldsPort]:
    settings = load_settings(config_path)
    # The policy with the case registry's cases: their conflicts and severities bind reviewers too.
    policy, _stamp = load_policy_for(settings)
    state = open_state(settings)
    return settings, policy, state, state.holds.open()


def _desk(state: State, settings: GatewaySettings, store: HoldsPort, sink: AuditSink) -> ReviewDesk:
    # Review rights end with the account (`user remove`), as for replies by mail.
    has_account = account_check(state.accounts.open())
    return ReviewDesk(store, settings.review, settings.server.hostname, sink, has_account=has_account)


@review.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include decided and expired holds.")
@json_option
@config_option
def list_(show_all: bool, as_json: bool, config_path: Path | None) -> None:
    """List held messages, oldest first: reference, status, age, expiry, sender, approvals, reasons."""
    _settings, _policy, store = _open(config_path)
    records = [r for r in store.records() if show_all or r.status == "held"]
    now = time.time()
    listed: list[dict[str, Any]] = [
        {
            "reference": record.reference,
            "status": record.status,
            "age_seconds": max(0, int(now - record.created_at)),
            "expires_in_seconds": max(0, int(record.expires_at - now)) if record.status == "held" else None,
            "sender": record.sender,
            "approvals": len({d.member for d in record.approvals}),
            "required_approvals": record.required_approvals,
            "reasons": record.reasons(),
            "claimed_by": record.claimed_by.member if record.claimed_by else None,
        }
        for record in records
    ]
    rows = [
        (
            item["reference"],
            item["status"],
            _age(item["age_seconds"]),
            "-" if item["expires_in_seconds"] is None else _age(item["expires_in_seconds"]),
            item["sender"],
            f"{item['approvals']}/{item['required_approvals']}",
            item["claimed_by"] or "-",
            item["reasons"],
        )
        for item in listed
    ]
    emit(
        ("REFERENCE", "STATUS", "AGE", "EXPIRES IN", "SENDER", "APPROVALS", "CLAIMED BY", "REASONS"),
        rows,
        listed,
        as_json,
    )
    held = sum(1 for r in store.records() if r.status == "held")
    click.echo(f"{len(records)} listed; {held} waiting for review.", err=True)


@review.command()
@click.argument("reference")
@config_option
def show(reference: str, config_path: Path | None) -> None:
    """Show one held message: findings, changes, reviewers, decisions and a header summary.

    Never the body; header values that can carry names or words (the Subject first) are hidden.
    """
    _settings, _policy, store = _open(config_path)
    record = store.get(reference)
    for line in describe(record, store.original(reference), time.time()):
        click.echo(line)


def describe(record: HoldRecord, original: bytes, now: float) -> list[str]:
    lines = [
        f"Reference:   {record.reference}",
        f"Status:      {record.status}" + (" (release spooled)" if record.released else ""),
        f"Held:        {_when(record.created_at)} ({_age(now - record.created_at)} ago)",
        f"Expires:     {_when(record.expires_at)}",
        f"Sender:      {record.sender} (authenticated as {record.sender_account})",
        f"Recipients:  {', '.join(record.release_rcpt_tos)}",
        f"Approvals:   {len({d.member for d in record.approvals})} of {record.required_approvals} needed",
        f"Reviewers:   {', '.join(f'{r.name} <{r.address}>' for r in record.reviewers)}",
    ]
    claim = record.claimed_by
    if claim is not None:
        lines.append(f"Claimed by:  {claim.name} <{claim.member}> {_when(claim.at)} via {claim.via}")
    if record.reminded_at is not None:
        lines.append(f"Reminded:    {_when(record.reminded_at)}")
    lines.append("Findings:")
    for finding in record.findings:
        lines.append(f"  {finding.rule}: {finding.code} [{finding.action}] {finding.where} ({finding.kind})")
        if finding.advice:
            lines.append(f"    {finding.advice}")
    lines.append("Changes on release:")
    lines += [f"  {change}" for change in record.changes] or ["  none"]
    if record.decisions:
        lines.append("Decisions:")
        for decision in record.decisions:
            who = f"{decision.name} <{decision.member}>" if decision.member else "the gateway"
            lines.append(f"  {_when(decision.at)}  {decision.decision} by {who} via {decision.via}")
    parsed = BytesParser(policy=email_policy.compat32).parsebytes(original)
    lines.append("Headers (values that can carry names or content are hidden; the body is never shown):")
    lines += [f"  {line}" for line in header_summary(parsed.items())]
    lines.append(f"Structure:   {mime_outline(parsed)}")
    return lines


def _decide(
    reference: str,
    member_address: str,
    command: Literal["approve", "reject"],
    reason: str,
    config_path: Path | None,
) -> None:
    settings, policy, state, store = _open_state(config_path)
    member = _reviewer(settings, policy, store, reference, member_address)
    with audit_sink(state, AUDIT_EVENT) as sink:
        desk = _desk(state, settings, store, sink)
        result = desk.decide(reference, member, command, reason, policy, via="cli", undo_key=_UNDO_KEY)
        if result.outgoing:
            failed = asyncio.run(spool_outgoing(state.queue.open(), result.outgoing))
            essential = {m.queue_id for m in result.outgoing if m.essential}
            if essential & set(failed):
                desk.not_stored(_UNDO_KEY)
                raise ReviewError(
                    f"could not store the released message in the spool; {reference} is still held"
                )
        released = desk.accepted(_UNDO_KEY)
    if released is not None:
        _learn_release(state, store, released)
    for line in result.lines:
        click.echo(line)


def _reviewer(
    settings: GatewaySettings, policy: CompiledPolicy, store: HoldsPort, reference: str, address: str
) -> Member:
    """The member acting as ``address``, who must not be the sender of the held message."""
    member = member_of(policy, address)
    if member is None:
        raise ReviewError(
            f"{address} is not a committee member in force: not in organisation.members of "
            f"{settings.policy.path}, or no longer has an account (`user remove`)"
        )
    record = store.get(reference)
    sender = member_of(policy, record.sender_account) or member_of(policy, record.sender)
    if sender == member or record.sender.lower() in member.addresses:
        raise ReviewError(f"{member.name} sent message {reference} and cannot review it; another member must")
    return member


def _learn_release(state: State, store: HoldsPort, released: HoldRecord) -> None:
    """The released message joins its thread in the ledger, as when released by mail."""
    try:
        with state.ledger.open() as ledger:
            learn_release(ledger, store, released)
    except Exception as exc:  # the message is released already; a lost thread step is not fatal
        click.echo(f"Warning: the thread ledger could not record the released message ({exc}).", err=True)


@review.command()
@click.argument("reference")
@click.option("--as", "member", required=True, help="The committee member claiming (an address of theirs).")
@config_option
def claim(reference: str, member: str, config_path: Path | None) -> None:
    """Claim held message REFERENCE as MEMBER: the other reviewers are told it is taken.

    Anyone eligible may still decide; the sender's letter then says who had claimed it.
    """
    settings, policy, state, store = _open_state(config_path)
    actor = _reviewer(settings, policy, store, reference, member)
    with audit_sink(state, AUDIT_EVENT) as sink:
        lines, outgoing = _desk(state, settings, store, sink).claim(reference, actor, policy, via="cli")
        if outgoing:
            asyncio.run(spool_outgoing(state.queue.open(), outgoing))
    for line in lines:
        click.echo(line)


@review.command()
@click.argument("reference")
@click.option("--as", "member", required=True, help="The committee member giving back their claim.")
@config_option
def unclaim(reference: str, member: str, config_path: Path | None) -> None:
    """Give back MEMBER's claim on held message REFERENCE: the other reviewers are told it waits."""
    settings, policy, state, store = _open_state(config_path)
    actor = _reviewer(settings, policy, store, reference, member)
    with audit_sink(state, AUDIT_EVENT) as sink:
        desk = _desk(state, settings, store, sink)
        lines, outgoing = desk.claim(reference, actor, policy, via="cli", give_back=True)
        if outgoing:
            asyncio.run(spool_outgoing(state.queue.open(), outgoing))
    for line in lines:
        click.echo(line)


@review.command()
@click.argument("reference")
@click.option("--as", "member", required=True, help="The committee member approving (an address of theirs).")
@click.option("--comment", default="", help="A comment for the sender (told to them, never audited).")
@config_option
def approve(reference: str, member: str, comment: str, config_path: Path | None) -> None:
    """Approve held message REFERENCE as MEMBER; released once enough members approved."""
    _decide(reference, member, "approve", " ".join(comment.split()), config_path)


@review.command()
@click.argument("reference")
@click.option("--as", "member", required=True, help="The committee member rejecting (an address of theirs).")
@click.option("--reason", "--comment", "reason", required=True, help="Why; the sender is told.")
@config_option
def reject(reference: str, member: str, reason: str, config_path: Path | None) -> None:
    """Reject held message REFERENCE as MEMBER; the sender gets it back with the reason."""
    if not reason.strip():
        raise click.UsageError("--reason must not be empty: the sender is told why")
    _decide(reference, member, "reject", " ".join(reason.split()), config_path)


@review.command()
@config_option
def expire(config_path: Path | None) -> None:
    """Expire held messages past their time now, and send due reminders (the gateway also does this)."""
    settings, policy, state, store = _open_state(config_path)
    with audit_sink(state, AUDIT_EVENT) as sink:
        notices = _desk(state, settings, store, sink).expire_due(policy)
        if notices:
            asyncio.run(spool_outgoing(state.queue.open(), notices))
    click.echo(
        f"Expiry checked: {len(notices)} notice(s) spooled "
        "(to senders of expired messages, and reminders to reviewers of holds about to expire)."
    )


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


def _age(seconds: float) -> str:
    whole = max(0, int(seconds))
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"
