"""The seam between SMTP intake and the policy: a submission goes in, accept or refuse comes out.

The SMTP layer knows nothing about rules; it hands every complete, well-formed submission to a
``Screener`` before answering DATA, and either spools what the screener accepted (possibly
rewritten content and recipients) or sends the screener's refusal (a ``replies.Reply``) to the client.
``Screener`` is the whole contract: the gateway calls nothing else on a screener, and looks nothing up.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from gateway.decision.policy_source import ReloadResult
from gateway.mail.messages import Outgoing, Submission
from gateway.policy.model import Outcome
from gateway.replies import Reply

if TYPE_CHECKING:
    from gateway.decision.commit import DecisionStores
    from gateway.decision.disposition import Disposition
    from gateway.decision.policy_source import PolicySource

# Submission and Outgoing live in gateway.mail.messages (the review desk uses them too).
__all__ = [
    "Accept",
    "Outgoing",
    "PassThrough",
    "RoundTask",
    "Ruling",
    "Screener",
    "StatisticsSource",
    "Submission",
]

StatisticsSource = Callable[[], Any]  # a statistics() snapshot, as gateway.metrics reads them


class RoundTask(Protocol):
    """Blocking work for the review round (``gateway.decision.expunge.DueExpunger``)."""

    def run(self) -> object: ...


class Ruling(StrEnum):
    """What an acceptance is: the policy core's outcomes that accept, and a consumed review decision."""

    DELIVER = Outcome.DELIVER.value
    REWRITE = Outcome.REWRITE.value
    HOLD = Outcome.HOLD.value
    REVIEW = "review"  # a reviewer's decision (or a cancel) sent to the gateway: consumed, never relayed

    @property
    def consumed_by_review(self) -> bool:
        """Whether the review desk confirms (or undoes) what this acceptance prepared."""
        return self in (Ruling.HOLD, Ruling.REVIEW)


@dataclass(frozen=True)
class Accept:
    """Spool and relay ``content`` to ``rcpt_tos``. ``changes`` says, in plain words, what changed.

    ``extra`` messages are spooled in the same transaction, before the 250. With
    ``spool_submission=False`` the submission itself is not spooled (a held message, or a review
    decision the gateway consumed); ``reply_lines``, when set, replace the "queued as" text of the 250.
    """

    content: bytes
    rcpt_tos: tuple[str, ...]
    changes: tuple[str, ...] = ()
    verdict: Ruling = Ruling.DELIVER
    findings: tuple[str, ...] = field(default=())
    extra: tuple[Outgoing, ...] = ()
    spool_submission: bool = True
    reply_lines: tuple[str, ...] = ()


class Screener(Protocol):
    """Decides what happens to a submission, and records it. Must not block the event loop for long."""

    async def start(self) -> None:
        """Start what screening needs besides the event loop (policy worker processes)."""
        ...

    async def stop(self) -> None:
        """Stop what ``start`` started."""
        ...

    def close(self) -> None:
        """Close the stores (once the gateway has stopped)."""
        ...

    async def decide(self, submission: Submission) -> Disposition:
        """Decide what becomes of ``submission``; a refusal's record is appended before it is returned
        (``gateway.decision.commit`` applies the rest, and flushes)."""
        ...

    def refused_at_intake(self, submission: Submission, reply: Reply, reason: str) -> Disposition:
        """The disposition of a refusal the SMTP layer made before screening (malformed, too big,
        From not the member's): its record is in it. If this raises, the client gets 451 instead."""
        ...

    @property
    def stores(self) -> DecisionStores:
        """Where ``commit`` records this screener's dispositions."""
        ...

    def reload(self) -> ReloadResult:
        """SIGHUP: re-read the policy."""
        ...

    def reload_if_changed(self) -> ReloadResult:
        """Polled: re-read the policy if its files changed."""
        ...

    def metric_sources(self) -> Mapping[str, StatisticsSource]:
        """The statistics the metrics endpoint exports, by family (``policy``, ``policy_workers``)."""
        ...

    def review_housekeeping(self) -> tuple[Outgoing, ...]:
        """Periodic (blocking): the review round; the notices it made, to spool."""
        ...

    def unreleased_holds(self) -> list[tuple[str, Outgoing]]:
        """Approved held messages whose release a crash kept out of the spool: (reference, release)."""
        ...

    def release_recovered(self, reference: str) -> None:
        """The recovered release of ``reference`` is in the spool now (blocking)."""
        ...

    @property
    def policy_source(self) -> PolicySource | None:
        """The policy in force, shared with the journal listener (None: no policy)."""
        ...

    @property
    def expunger(self) -> RoundTask | None:
        """Expunges cases past their expunge date in the review round (None: nothing to expunge)."""
        ...


class PassThrough:
    """Accept everything unchanged (relay core without a policy, and the bare-relay benchmarks)."""

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def close(self) -> None:
        return None

    def screen(self, submission: Submission) -> Accept | Reply:
        return Accept(content=submission.content, rcpt_tos=submission.rcpt_tos)

    async def decide(self, submission: Submission) -> Disposition:
        from gateway.decision.disposition import of  # disposition imports this module

        return of(submission, self.screen(submission))

    def refused_at_intake(self, submission: Submission, reply: Reply, reason: str) -> Disposition:
        from gateway.decision.disposition import refused

        return refused(reply)

    @property
    def stores(self) -> DecisionStores:
        from gateway.decision.commit import DecisionStores  # commit imports this module

        return DecisionStores()

    def reload(self) -> ReloadResult:
        return ReloadResult.UNCHANGED

    def reload_if_changed(self) -> ReloadResult:
        return ReloadResult.UNCHANGED

    def metric_sources(self) -> Mapping[str, StatisticsSource]:
        return {}

    def review_housekeeping(self) -> tuple[Outgoing, ...]:
        return ()

    def unreleased_holds(self) -> list[tuple[str, Outgoing]]:
        return []

    def release_recovered(self, reference: str) -> None:
        return None

    @property
    def policy_source(self) -> PolicySource | None:
        return None

    @property
    def expunger(self) -> RoundTask | None:
        return None


if TYPE_CHECKING:
    # mypy checks here that PassThrough is a complete Screener (PolicyScreener: gateway.decision.build).
    _PASS_THROUGH_IS_A_SCREENER: Screener = PassThrough()
