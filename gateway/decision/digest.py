"""The committee digest: a daily or weekly mail of counts, built from the audit trail and the queue only.

It says what the gateway did in one period: messages by verdict and by rule and outcome, holds and
how long they waited for a decision, expiries, overrides (every audit event whose name contains
``override``, with its reference ids), "false positive" reports on refusal notices (by reference),
reloads and refusals of the policy, and delivery failures. Nothing else: no subject, body, address,
Message-ID or protected identity ever reaches it, because nothing but event names, rule names,
finding codes, verdicts, times and reference ids is read.

Each period is sent once, through the normal queue, under a queue id derived from the period: a
restart never sends a period twice (the queue knows the id, the audit trail records a ``digest``
event) and never skips one (missed periods are sent at the next round, oldest first). The very first
start records a baseline: the first digest is of the period the gateway first ran in.
"""

from __future__ import annotations

import datetime
import hashlib
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.mail.notices import Letter, NoticeKind

DIGEST_EVENT = "digest"
POLICY_EVENT = "policy"  # a reload of the policy in force, or a refused one (``action``)
FALSE_POSITIVE_EVENT = "false-positive-report"  # gateway.decision.refusal_notice
REVIEW_EVENT = "review"
REVIEW_DECISIONS = frozenset({"approve", "reject", "cancel"})
# A gateway down for longer than this many periods gets only the most recent ones on its return.
MAX_CATCH_UP = 60
# Fields of override events shown as reference ids (whatever the override's helper calls them).
_REFERENCE_FIELDS = ("reference", "queue_id", "justification", "justification_id", "justification_ref")

Period = Literal["daily", "weekly"]


@dataclass(frozen=True)
class Window:
    """One digest period, [start, end) in UTC."""

    kind: Period
    start: datetime.datetime
    end: datetime.datetime

    @property
    def queue_id(self) -> str:
        """The queue id its mail is spooled under: the same for the same period, across restarts."""
        micros = int(self.end.timestamp() * 1_000_000)
        tag = hashlib.sha256(f"digest {self.kind} {self.start.isoformat()}".encode()).hexdigest()[:8]
        return f"{micros:014X}{tag.upper()}"

    def holds(self, moment: datetime.datetime) -> bool:
        return self.start <= moment < self.end


def _length(kind: Period) -> datetime.timedelta:
    return datetime.timedelta(days=1 if kind == "daily" else 7)


def last_completed(kind: Period, now: datetime.datetime) -> Window:
    """The most recent period that has ended by ``now`` (days from midnight UTC, weeks from Monday)."""
    midnight = now.astimezone(datetime.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    end = midnight if kind == "daily" else midnight - datetime.timedelta(days=midnight.weekday())
    return Window(kind, end - _length(kind), end)


def due(kind: Period, last_end: datetime.datetime | None, now: datetime.datetime) -> list[Window]:
    """The periods to send, oldest first: each one that ended after ``last_end`` (the end of the last
    period sent), or only the last completed one when none was ever sent."""
    latest = last_completed(kind, now)
    if last_end is None:
        return [latest]
    windows: list[Window] = []
    end = latest.end
    while end > last_end and len(windows) < MAX_CATCH_UP:
        windows.append(Window(kind, end - _length(kind), end))
        end -= _length(kind)
    return windows[::-1]


@dataclass
class DigestCounts:
    """What one digest reports (counts and reference ids only)."""

    verdicts: Counter[str] = field(default_factory=Counter)
    rule_outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (rule, action)
    holds: int = 0
    decisions: Counter[str] = field(default_factory=Counter)  # approve / reject / cancel
    waits: list[float] = field(default_factory=list)  # seconds from hold to decision
    expiries: int = 0
    overrides: Counter[str] = field(default_factory=Counter)  # by event name
    override_references: list[str] = field(default_factory=list)
    false_positives: list[str] = field(default_factory=list)  # references of refused messages
    reloads: int = 0
    reload_refusals: int = 0
    delivery_failures: int = 0
    events: Counter[str] = field(default_factory=Counter)  # every event in the period, by name


def _when(fields: Mapping[str, Any]) -> datetime.datetime | None:
    value = fields.get("time")
    if not isinstance(value, str):
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def count(
    entries: Iterable[Mapping[str, Any]], window: Window, failures: Iterable[datetime.datetime] = ()
) -> DigestCounts:
    """The digest of ``window`` from audit entries (all of them: a hold made before the period and
    decided in it still counts its wait) and the times of failed deliveries."""
    counts = DigestCounts()
    held_at: dict[str, datetime.datetime] = {}
    for fields in entries:
        when = _when(fields)
        if when is None:
            continue
        event = str(fields.get("event", ""))
        if event == "decision" and fields.get("verdict") == "hold":
            held_at[str(fields.get("queue_id", ""))] = when
        if not window.holds(when):
            continue
        counts.events[event] += 1
        _count_one(counts, event, fields, when, held_at)
    counts.delivery_failures = sum(1 for moment in failures if window.holds(moment))
    return counts


def _count_one(
    counts: DigestCounts,
    event: str,
    fields: Mapping[str, Any],
    when: datetime.datetime,
    held_at: Mapping[str, datetime.datetime],
) -> None:
    if event == "decision":
        verdict = str(fields.get("verdict", ""))
        counts.verdicts[verdict] += 1
        counts.holds += verdict == "hold"
        findings = fields.get("findings")
        for finding in findings if isinstance(findings, list) else ():
            if isinstance(finding, Mapping):
                counts.rule_outcomes[(str(finding.get("rule", "")), str(finding.get("action", "")))] += 1
    elif event == REVIEW_EVENT:
        step = str(fields.get("review", ""))
        if step in REVIEW_DECISIONS:
            counts.decisions[step] += 1
            started = held_at.get(str(fields.get("queue_id", "")))
            if started is not None and step != "cancel":
                counts.waits.append((when - started).total_seconds())
        elif step == "expire":
            counts.expiries += 1
    elif "override" in event:
        counts.overrides[event] += 1
        # One reference per override: the first of its reference fields (the override helper's
        # ``reference``; ``queue_id`` only when there is none).
        found = next(
            (fields[key] for key in _REFERENCE_FIELDS if isinstance(fields.get(key), str | int)), None
        )
        if found is not None:
            counts.override_references.append(str(found))
    elif event == FALSE_POSITIVE_EVENT:
        counts.false_positives.append(str(fields.get("reference", "")))
    elif event == POLICY_EVENT:
        action = fields.get("action")
        counts.reloads += action == "reloaded"
        counts.reload_refusals += action == "refused"


def _duration(seconds: float) -> str:
    if seconds < 3600:
        return f"{max(1, round(seconds / 60))} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _rows(pairs: Sequence[tuple[str, int]], empty: str = "  none") -> list[str]:
    if not pairs:
        return [empty]
    width = max(len(label) for label, _ in pairs)
    return [f"  {label.ljust(width)}  {value}" for label, value in pairs]


def digest_text(window: Window, counts: DigestCounts) -> str:
    """The digest as plain text (counts, rule names and reference ids only)."""
    day = datetime.timedelta(days=1)
    span = f"{window.start.date().isoformat()} to {(window.end - day).date().isoformat()} (UTC)"
    waits = counts.waits
    wait_line = (
        f"  time to decision: median {_duration(statistics.median(waits))}, longest {_duration(max(waits))}"
        if waits
        else "  time to decision: no decisions"
    )
    lines = [
        f"What the conduct gateway did, {window.kind}, {span}.",
        "Counts only: no message content and no names are ever included.",
        "",
        "Messages by verdict:",
        *_rows(sorted(counts.verdicts.items())),
        "",
        "Findings by rule and outcome:",
        *_rows([(f"{rule} -> {action}", n) for (rule, action), n in sorted(counts.rule_outcomes.items())]),
        "",
        "Held for review:",
        f"  held: {counts.holds}",
        *(f"  {step}: {n}" for step, n in sorted(counts.decisions.items())),
        wait_line,
        f"  expired undecided: {counts.expiries}",
        "",
        f"Overrides: {sum(counts.overrides.values())}",
        *(f"  {event}: {n}" for event, n in sorted(counts.overrides.items())),
        *([f"  references: {', '.join(counts.override_references)}"] if counts.override_references else []),
        "",
        f'"False positive" reports on refusals: {len(counts.false_positives)}',
        *([f"  references: {', '.join(counts.false_positives)}"] if counts.false_positives else []),
        "",
        f"Policy: {counts.reloads} reload(s), {counts.reload_refusals} refused reload(s)",
        f"Delivery failures: {counts.delivery_failures}",
        "",
        "All audit events in the period:",
        *_rows(sorted(counts.events.items())),
        "",
        "Look up a reference with: conduct-gateway audit show --json (and grep the reference)",
    ]
    return "\n".join(lines)


def digest_letter(to: str, window: Window, counts: DigestCounts) -> Letter:
    last = (window.end - datetime.timedelta(days=1)).date()
    span = f"{window.start.date()}" if window.kind == "daily" else f"{window.start.date()} to {last}"
    subject = f"Conduct gateway {window.kind} digest, {span}"
    return Letter(NoticeKind.DIGEST, to, subject, digest_text(window, counts))
