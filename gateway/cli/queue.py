"""`conduct-gateway queue list|show|retry|delete`: look at and act on the spool.

What `queue show` prints, and why: an administrator runs the gateway, but the mail belongs to the
committee and may name reporters. So `show` prints the envelope and the delivery state (what an
administrator needs to fix delivery), the names of all header fields, and the values of only those
fields that carry no names and no words of the sender: dates, message ids, MIME type, mailer.
Address fields (From, To, Cc, Reply-To, Sender) show bare addresses, never display names; every
other value -- Subject first of all -- is shown as hidden. The body and attachment names never are.
"""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email import policy
from email.message import Message
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import click

from gateway.cli import config_option
from gateway.cli.tables import emit, json_option
from gateway.errors import SpoolError
from gateway.mail.notices import NOTICE_HEADER
from gateway.policy.address_header import MalformedAddressHeader, read_mailboxes
from gateway.settings import load_settings
from gateway.state.delivery_status import DeliveryStatus
from gateway.state.opening import open_state
from gateway.state.ports import QueuePort
from gateway.state.spool_records import QueueState, SpoolEntry, SpoolMessage

# Header values shown as they are: none can hold a person's name or the sender's words.
SHOWN_HEADERS = frozenset(
    {
        "date",
        "message-id",
        "in-reply-to",
        "references",
        "mime-version",
        "content-transfer-encoding",
        "auto-submitted",
        "user-agent",
        "x-mailer",
    }
)
# Header values shown as bare addresses (display names dropped).
ADDRESS_HEADERS = frozenset({"from", "sender", "reply-to", "to", "cc", "return-path"})
MAX_SHOWN = 200
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")


@click.group()
def queue() -> None:
    """Look at the spool and act on it: list, show, retry, delete.

    Works while the gateway runs: a retried message is picked up at the next delivery poll.
    """


def _spool(config_path: Path | None) -> QueuePort:
    state = open_state(load_settings(config_path))
    if not state.queue.exists():
        raise SpoolError(f"no spool at {state.layout.spool} yet: the gateway has not run with these settings")
    return state.queue.open()


@queue.command("list")
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice([s.value for s in QueueState]),
    help="Only messages in this state (repeatable). Default: every state but done.",
)
@click.option("--all", "show_all", is_flag=True, help="Include delivered (done) messages.")
@json_option
@config_option
def list_(states: tuple[str, ...], show_all: bool, as_json: bool, config_path: Path | None) -> None:
    """List queued messages, oldest first: id, state, age, size, sender, recipients, attempts."""
    spool = _spool(config_path)
    wanted = [QueueState(s) for s in states] or [
        s for s in QueueState if show_all or s is not QueueState.DONE
    ]
    entries = [entry for state in wanted for entry in spool.entries(state)]
    now = time.time()
    records = [_record(spool, entry, now) for entry in entries]
    emit(LIST_HEADER, [_row(record) for record in records], records, as_json)
    counts = spool.statistics().messages
    summary = ", ".join(f"{counts.get(s.value, 0)} {s.value}" for s in QueueState)
    # On stderr, so that stdout holds only the table (for grep and scripts).
    click.echo(f"{len(entries)} message(s) listed. In the spool: {summary}.", err=True)


LIST_HEADER = ("QUEUE ID", "STATE", "AGE", "SIZE", "ATTEMPTS", "RECIPIENTS", "SENDER / PROBLEM")


def _record(spool: QueuePort, entry: SpoolEntry, now: float) -> dict[str, Any]:
    """One listed message as data: what the table shows and ``--json`` prints."""
    envelope = entry.envelope
    record: dict[str, Any] = {"queue_id": entry.queue_id, "state": entry.state.value, "size": entry.size}
    if envelope is None:
        return record | {"problem": entry.problem}
    progress = _progress(entry.state, envelope.rcpt_tos, entry.status)
    return record | {
        "age_seconds": max(0, int(now - envelope.received_at)),
        "attempts": progress.attempts,
        "recipients": progress.counts,
        "sender": envelope.mail_from,
        "generated": _generated_kind(spool, entry) if not envelope.authenticated_as else None,
    }


def _row(record: dict[str, Any]) -> tuple[str, ...]:
    if "problem" in record:
        return (record["queue_id"], record["state"], "-", _size(record["size"]), "-", "-", record["problem"])
    sender = record["sender"] or "<>"
    if record["generated"]:
        sender += f" ({record['generated']})"
    counts = ", ".join(f"{number} {state}" for state, number in record["recipients"].items())
    return (
        record["queue_id"],
        record["state"],
        _age(record["age_seconds"]),
        _size(record["size"]),
        str(record["attempts"]),
        counts,
        sender,
    )


@dataclass(frozen=True)
class _Progress:
    attempts: int
    counts: dict[str, int]  # recipients by state: delivered, waiting, failed
    states: dict[str, str]  # each recipient's state as shown


def _progress(state: QueueState, rcpt_tos: Sequence[str], status: DeliveryStatus | None) -> _Progress:
    """Where delivery stands. A message delivered to everyone at its first attempt keeps no status file
    (one fsync less per message), so done/ without one means exactly that."""
    unique = list(dict.fromkeys(rcpt_tos))
    if status is None:
        shown = "delivered" if state is QueueState.DONE else "waiting"
        attempts = 1 if state is QueueState.DONE else 0
        return _Progress(attempts, {shown: len(unique)}, dict.fromkeys(unique, shown))
    results = {r.address: r.state for r in status.recipients}
    states = {address: _SHOWN_STATE[results.get(address, "pending")] for address in unique}
    counts: dict[str, int] = {}
    for shown in states.values():
        counts[shown] = counts.get(shown, 0) + 1
    return _Progress(status.attempts, counts, states)


_SHOWN_STATE = {"pending": "waiting", "deferred": "waiting", "delivered": "delivered", "failed": "failed"}


def _generated_kind(spool: QueuePort, entry: SpoolEntry) -> str:
    """What a message the gateway wrote itself is: a notice of some kind, or a delivery report."""
    try:
        content = spool.load(entry.queue_id).content
    except (SpoolError, OSError):
        return "generated by the gateway"
    headers = BytesParser(policy=policy.compat32).parsebytes(content, headersonly=True)
    kind = headers.get(NOTICE_HEADER)
    if kind:
        return f"gateway notice: {_clean(str(kind))}"
    if headers.get_content_type() == "multipart/report":
        return "delivery report"
    return "generated by the gateway"


@queue.command()
@click.argument("queue_id")
@config_option
def show(queue_id: str, config_path: Path | None) -> None:
    """Show one message: envelope, delivery state per recipient, and a header summary.

    Never the body. Header values that can carry names or the sender's words (the Subject first
    of all) are hidden: the mail belongs to the committee, not to whoever runs the gateway.
    """
    spool = _spool(config_path)
    entry = spool.find(queue_id)
    if entry.state is QueueState.CORRUPT or entry.envelope is None:
        click.echo(f"Queue id:    {entry.queue_id}")
        click.echo(f"State:       {entry.state.value} ({entry.problem})")
        click.echo(f"Size:        {_size(entry.size)}")
        return
    message = spool.load(queue_id)
    for line in describe(message, time.time()):
        click.echo(line)


def describe(message: SpoolMessage, now: float) -> list[str]:
    """The text of `queue show`: envelope, recipients' delivery state, header summary, MIME outline."""
    envelope, status = message.envelope, message.status
    received = _when(envelope.received_at)
    by = f", authenticated as {envelope.authenticated_as}" if envelope.authenticated_as else " (generated)"
    client = f" from {envelope.client_address}" if envelope.client_address else ""
    lines = [
        f"Queue id:    {envelope.queue_id}",
        f"State:       {message.state.value}{_attempts(message, now)}",
        f"Received:    {received} ({_age(now - envelope.received_at)} ago){client}{by}",
        f"Size:        {_size(len(message.content))}",
        f"Sender:      {envelope.mail_from or '<> (a delivery status notification)'}",
        f"Recipients:  {len(dict.fromkeys(envelope.rcpt_tos))}",
    ]
    results = {r.address: r for r in status.recipients} if status is not None else {}
    progress = _progress(message.state, envelope.rcpt_tos, status)
    for address in dict.fromkeys(envelope.rcpt_tos):
        result = results.get(address)
        if result is None or result.state == "pending":
            lines.append(f"  {address}  {progress.states[address]}")
            continue
        remote = f" [{result.remote}]" if result.remote else ""
        expired = " (retry lifetime ran out)" if result.expired else ""
        lines.append(f"  {address}  {result.state}{expired}: {_clean(result.reply)}{remote}")
    parsed = BytesParser(policy=policy.compat32).parsebytes(message.content)
    lines.append("Headers (values that can carry names or content are hidden; the body is never shown):")
    lines += [f"  {line}" for line in header_summary(parsed.items())]
    lines.append(f"Structure:   {mime_outline(parsed)}")
    return lines


def header_summary(items: Iterable[tuple[str, object]]) -> list[str]:
    """One line per header field: its name, and its value only when it cannot identify anyone."""
    lines = []
    for name, raw in items:
        value = str(raw)
        key = name.lower()
        if key in SHOWN_HEADERS:
            shown = _clean(value)
        elif key in ADDRESS_HEADERS:
            try:
                addresses = [address for _name, address in read_mailboxes((value,)) if address]
            except MalformedAddressHeader as malformed:
                shown = f"(malformed: {malformed})"
            else:
                shown = _clean(", ".join(addresses)) if addresses else "(no address)"
        elif key == "content-type":
            shown = _content_type(value)
        else:
            shown = f"(hidden, {len(value.encode('utf-8', 'replace'))} bytes)"
        lines.append(f"{_clean(name)}: {shown}")
    return lines


def mime_outline(message: Message) -> str:
    """The MIME types of the message's parts, without names, filenames or content."""
    leaves = [part.get_content_type() for part in message.walk() if not part.is_multipart()]
    if not message.is_multipart():
        return message.get_content_type()
    return f"{message.get_content_type()}: {', '.join(leaves)} ({len(leaves)} parts)"


def _content_type(value: str) -> str:
    # Only the media type and charset: a name= or filename parameter can carry a person's name.
    holder = Message()
    holder["Content-Type"] = value
    charset = holder.get_content_charset()
    return holder.get_content_type() + (f"; charset={_clean(charset)}" if charset else "")


@queue.command()
@click.argument("queue_ids", nargs=-1)
@click.option("--all", "retry_all", is_flag=True, help="Retry every deferred message.")
@config_option
def retry(queue_ids: tuple[str, ...], retry_all: bool, config_path: Path | None) -> None:
    """Try the deferred messages QUEUE_IDS (or --all) again at once, ignoring their backoff."""
    if not queue_ids and not retry_all:
        raise click.UsageError("name at least one QUEUE_ID, or use --all")
    spool = _spool(config_path)
    if retry_all:
        click.echo(f"{spool.retry_all()} deferred message(s) sent back for immediate delivery.")
    for queue_id in queue_ids:
        spool.retry(queue_id)
        click.echo(f"{queue_id}: sent back for immediate delivery.")


@queue.command()
@click.argument("queue_ids", nargs=-1, required=True)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@config_option
def delete(queue_ids: tuple[str, ...], yes: bool, config_path: Path | None) -> None:
    """Delete the messages QUEUE_IDS from the spool for good. The senders are not told."""
    spool = _spool(config_path)
    entries = [spool.find(queue_id) for queue_id in queue_ids]  # all must exist before any goes
    for entry in entries:
        about = _row(_record(spool, entry, time.time()))
        question = f"Delete {entry.queue_id} ({entry.state.value}, {about[3]}, sender {about[-1]})?"
        if not yes and not click.confirm(question, default=False):
            click.echo(f"{entry.queue_id}: kept.")
            continue
        state = spool.delete(entry.queue_id)
        click.echo(f"{entry.queue_id}: deleted (was {state.value}).")


# --- formatting ---------------------------------------------------------------------------------------


def _attempts(message: SpoolMessage, now: float) -> str:
    status = message.status
    if status is None and message.state is QueueState.DONE:
        return ", delivered to every recipient at the first attempt"
    if status is None or not status.attempts:
        return ", not tried yet"
    text = f", {status.attempts} attempt(s), last {_age(now - status.last_attempt_at)} ago"
    if message.state in (QueueState.INCOMING, QueueState.DEFERRED) and status.next_attempt_at:
        wait = status.next_attempt_at - now
        text += f", next in {_age(wait)}" if wait > 0 else ", next at the coming poll"
    return text


def _when(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _age(seconds: float) -> str:
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / (1024 * 1024):.1f} MiB"


def _clean(text: str) -> str:
    flat = _UNPRINTABLE.sub(" ", " ".join(text.split()))
    return flat if len(flat) <= MAX_SHOWN else flat[: MAX_SHOWN - 1] + "…"
