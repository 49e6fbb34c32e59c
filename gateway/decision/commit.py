"""The end of a submission: decide it, apply the decision, and only then say what the client hears.

Intake hands over a complete, checked submission; ``SubmissionCommitter`` has the screener decide it
(a ``Disposition``) and ``commit`` applies that: the review desk's hold, the spool's group commit
(the submission, possibly rewritten, and the gateway's own messages), the audit flush, the thread
ledger, in that order, and it is the only code that does. A message is answered 250 only after the spool
has it on disk and the decision is recorded. The commit runs as a tracked task of its own that hands
its outcome to the transaction on a separate future: a client that hangs up, or a timer that fires,
can no longer cancel a commit halfway, and ``wait_for_commits()`` lets a stopping gateway finish
every commit first.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from gateway import replies
from gateway.decision.disposition import Disposition
from gateway.decision.screening import Screener, Submission
from gateway.decision.thread_steps import ThreadSteps
from gateway.errors import SpoolError
from gateway.logs import describe_error, log_event
from gateway.replies import Reply
from gateway.state.audit import DecisionRecord
from gateway.state.spool import FollowUp, SpoolEnvelope

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Committed:
    """How a transaction ended: the reply, and for a queued message its recipients and size."""

    reply: Reply
    recipients: int | None = None
    accepted_bytes: int = 0


Finish = Callable[[Committed], Reply]  # counts and logs the end of a transaction; returns the reply


async def _outcome(store: Awaitable[None]) -> BaseException | None:
    """What ``asyncio.gather(..., return_exceptions=True)`` gives for one awaitable."""
    try:
        await store
    except Exception as exc:
        return exc
    return None


class SpoolPort(Protocol):
    """What the commit step needs of the queue (``gateway.state.spool.Spool``)."""

    async def commit(
        self, envelope: SpoolEnvelope, content: bytes, follow_up: FollowUp | None = None
    ) -> None:
        """Store a message; return once it is durable (``follow_up`` runs in its batch)."""
        ...

    async def run_with_next_batch(self, task: Callable[[], None]) -> None:
        """Run blocking ``task`` on the spool's I/O thread, after its next batch."""
        ...


class AuditPort(Protocol):
    """What the commit step needs of the audit trail (``gateway.state.audit.AuditTrail``)."""

    def record_decision(self, record: DecisionRecord) -> object:
        """Append a decision; raises when it cannot."""
        ...

    def flush(self) -> None:
        """Make every decision appended so far durable (blocking)."""
        ...


class HoldPort(Protocol):
    """What the commit step needs of the review desk: its holds and decisions, per transaction key."""

    def confirm(self, key: str) -> None:
        """The transaction's messages are spooled: the hold (or decision) stands (blocking)."""
        ...

    def undo(self, key: str) -> None:
        """The transaction's essential messages could not be spooled: roll the hold back."""
        ...


@dataclass(frozen=True)
class DecisionStores:
    """Where dispositions are recorded: None, nowhere (a screener that records nothing)."""

    audit: AuditPort | None = None
    threads: ThreadSteps | None = None  # the thread ledger's pending steps, written by each flush
    holds: HoldPort | None = None

    def flush(self) -> None:
        """Make the recorded decisions durable, then teach the ledger the accepted messages (blocking)."""
        if self.audit is not None:
            self.audit.flush()
        if self.threads is not None:
            self.threads.write()

    def flush_logged(self) -> None:
        """``flush``, run in a spool batch: failures are logged, the messages are stored either way."""
        try:
            self.flush()
        except Exception as exc:
            log_event(logger, "smtp.record_failed", logging.ERROR, error=describe_error(exc))


@dataclass(frozen=True)
class CommitState:
    """The stores ``commit`` writes to, and the flush that concurrent commits share."""

    spool: SpoolPort
    stores: DecisionStores
    # Makes every decision recorded so far durable, on the spool's I/O thread with its next batch;
    # None: nothing to flush (no audit trail).
    shared_flush: Callable[[], Awaitable[None]] | None
    # One callable for every batch, so the batch runs it once however many messages it holds.
    flush_in_batch: Callable[[], None]

    @classmethod
    def of(cls, spool: SpoolPort, stores: DecisionStores) -> CommitState:
        # A refusal's decision is flushed with the spool's next batch, so the two share one thread
        # hand-off instead of taking one each; an acceptance's is recorded and flushed in the batch
        # that stores its message (``_in_batch``). The same flush callable for every caller: a batch
        # runs it once for all the refusals it carries (``batching.run_tasks``), and a refusal
        # recorded while a batch runs waits for the next, whose flush covers it.
        recording = stores.audit is not None
        flush_task = stores.flush
        shared = functools.partial(spool.run_with_next_batch, flush_task) if recording else None
        return cls(spool, stores, shared, stores.flush_logged)


class SubmissionCommitter:
    """Decides complete submissions and commits their disposition before the client is answered."""

    def __init__(self, spool: SpoolPort, screener: Screener, stores: DecisionStores | None = None) -> None:
        self.spool = spool
        self.screener = screener
        self.state = CommitState.of(spool, stores if stores is not None else screener.stores)
        self._commits: set[asyncio.Task[Committed]] = set()

    @property
    def commits_in_flight(self) -> int:
        return len(self._commits)

    async def wait_for_commits(self) -> None:
        """Return once every commit started so far has finished (its client got its reply)."""
        await asyncio.gather(*self._commits, return_exceptions=True)

    async def decide(self, submission: Submission, received_header: bytes, finish: Finish) -> Reply:
        """Decide ``submission``, commit the disposition, and return the reply ``finish`` made of it.

        ``received_header`` is prepended to the stored copy of an accepted submission. ``finish`` runs
        once for every transaction, even one whose client has gone meanwhile.
        """
        queue_id = submission.queue_id
        try:
            disposition = await self.screener.decide(submission)
        except Exception as exc:
            log_event(
                logger, "smtp.screener_failed", logging.ERROR, queue_id=queue_id, error=describe_error(exc)
            )
            return finish(Committed(replies.INTERNAL_ERROR))
        if not disposition.accepted:
            if not await flush(self.state, queue_id):
                return finish(Committed(replies.INTERNAL_ERROR))
            await _spool_notices(self.state, disposition, queue_id)
            return finish(Committed(_refusal_reply(disposition.reply, queue_id)))
        relay = disposition.relay
        if relay is not None and not relay.rcpt_tos:
            log_event(logger, "smtp.screener_unusable", logging.ERROR, queue_id=queue_id)
            return finish(Committed(replies.INTERNAL_ERROR))
        # The commit runs as a task of its own that nothing cancels; this transaction waits for its
        # reply on a future of its own, which is all a hang-up cancels. (Cheaper than awaiting the
        # task through asyncio.shield, which takes one more turn of the event loop to answer.)
        answer: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        committing = commit(disposition, self.state, submission, received_header)
        task = asyncio.ensure_future(self._commit_and_answer(answer, committing, finish))
        self._commits.add(task)
        task.add_done_callback(self._commits.discard)
        return await answer

    async def refused_at_intake(self, submission: Submission, reply: Reply, code: str) -> Reply:
        """Refuse a message the policy never saw; the decision still goes to the audit trail."""
        try:
            disposition = self.screener.refused_at_intake(submission, reply, code)
            record(disposition, self.state.stores)
        except Exception as exc:
            # A refusal that cannot be recorded must not become an acceptance: defer instead.
            log_event(
                logger,
                "smtp.record_failed",
                logging.ERROR,
                queue_id=submission.queue_id,
                error=describe_error(exc),
            )
            return replies.INTERNAL_ERROR
        if not await flush(self.state, submission.queue_id):
            return replies.INTERNAL_ERROR
        return reply

    async def _commit_and_answer(
        self, answer: asyncio.Future[Reply], committing: Awaitable[Committed], finish: Finish
    ) -> Committed:
        try:
            committed = await committing
            reply = finish(committed)
        except asyncio.CancelledError:
            answer.cancel()
            raise
        except Exception as exc:
            if not answer.done():
                answer.set_exception(exc)
                answer.exception()  # retrieved here: the transaction may have been cancelled meanwhile
            return Committed(replies.INTERNAL_ERROR)
        if not answer.done():
            answer.set_result(reply)
        return committed


async def commit(
    disposition: Disposition, state: CommitState, submission: Submission, received_header: bytes = b""
) -> Committed:
    """Apply an acceptance: the only code that does. Runs to the end even if the client has gone.

    In order: the hold (stored by the review desk when it decided) stands or falls with the spool's
    group commit of every message; then the audit records and ledger steps are written and flushed.
    An essential message that cannot be stored undoes the hold, and the client hears 451: nothing
    is recorded as accepted. Records of an acceptance with nothing else to wait for are written on
    the spool's I/O thread, in the batch that stores the message (one thread hand-off, not two), and
    flushed with the message's own data before it is renamed into the queue: one durable step for
    both, and a message is never in the queue without its decision on disk.
    """
    queue_id = submission.queue_id
    received_at = time.time()
    relay = disposition.relay
    in_batch = _in_batch(disposition, state, queue_id)
    # The submission and the gateway's own messages (notices, review requests, a released held
    # message) are committed together, so one group commit covers them all.
    stores: list[tuple[str, bool, Awaitable[None]]] = []
    content = b""
    if relay is not None:
        content = received_header + relay.content
        envelope = SpoolEnvelope(
            queue_id=queue_id,
            mail_from=submission.mail_from,
            rcpt_tos=relay.rcpt_tos,
            authenticated_as=submission.authenticated_as,
            received_at=received_at,
            client_address=submission.client_address,
        )
        stores.append((queue_id, True, state.spool.commit(envelope, content, in_batch)))
    for outgoing in disposition.outgoing:
        generated = SpoolEnvelope(
            queue_id=outgoing.queue_id,
            mail_from=outgoing.mail_from,
            rcpt_tos=outgoing.rcpt_tos,
            authenticated_as=outgoing.authenticated_as,
            received_at=received_at,
        )
        stores.append(
            (outgoing.queue_id, outgoing.essential, state.spool.commit(generated, outgoing.content))
        )
    if len(stores) == 1:  # the usual case: awaited directly, a task and two loop turns sooner
        results: list[BaseException | None] = [await _outcome(stores[0][2])]
    else:
        awaited = (store for _id, _essential, store in stores)
        results = list(await asyncio.gather(*awaited, return_exceptions=True))
    failed_essential = False
    for (stored_id, essential, _store), result in zip(stores, results, strict=True):
        if isinstance(result, BaseException):
            failed_essential = failed_essential or essential
            log_event(
                logger,
                "smtp.store_failed",
                logging.ERROR,
                queue_id=queue_id,
                stored_id=stored_id,
                essential=essential,
                error=describe_error(result),
            )
    if failed_essential:
        _undo(disposition, state.stores, queue_id)
        return Committed(replies.STORE_FAILED)
    if in_batch is None:
        try:
            _confirm_and_record(disposition, state.stores)
        except Exception as exc:
            # The message is on disk and will be delivered; saying 4xx now would only make a duplicate.
            log_event(
                logger, "smtp.record_failed", logging.ERROR, queue_id=queue_id, error=describe_error(exc)
            )
        await flush(state, queue_id)  # logged if it fails; the message is spooled either way
    return Committed(disposition.reply, len(disposition.rcpt_tos), len(content))


async def _spool_notices(state: CommitState, disposition: Disposition, queue_id: str) -> None:
    """Spool a refusal's notices (the "what to fix" mail): best effort, the refusal stands either way."""
    for outgoing in disposition.outgoing:
        envelope = SpoolEnvelope(
            queue_id=outgoing.queue_id,
            mail_from=outgoing.mail_from,
            rcpt_tos=outgoing.rcpt_tos,
            authenticated_as=outgoing.authenticated_as,
            received_at=time.time(),
        )
        failed = await _outcome(state.spool.commit(envelope, outgoing.content))
        if failed is not None:
            log_event(
                logger,
                "smtp.store_failed",
                logging.ERROR,
                queue_id=queue_id,
                stored_id=outgoing.queue_id,
                essential=False,
                error=describe_error(failed),
            )


async def flush(state: CommitState, queue_id: str) -> bool:
    """Make the recorded decisions durable before the client hears of them (False: they are not).

    The flush runs on the spool's I/O thread with its next batch, and concurrent transactions share
    one run instead of an fsync each.
    """
    shared = state.shared_flush
    if shared is None:
        return True
    try:
        await shared()
    except Exception as exc:
        log_event(logger, "smtp.record_failed", logging.ERROR, queue_id=queue_id, error=describe_error(exc))
        return False
    return True


def _in_batch(disposition: Disposition, state: CommitState, queue_id: str) -> FollowUp | None:
    """The acceptance's records as work for the spool's I/O thread, in the batch that stores the
    message (written with it, flushed with it, withdrawn if it then fails to be stored); None when
    they are written on the event loop after the commit instead.

    Not for a hold or a review decision (the review store belongs to the event loop's thread), not
    when an essential generated message must be stored too (the acceptance is recorded only once
    everything is, and those may land in another batch), and not when nothing records.
    """
    stores = state.stores
    if (
        state.shared_flush is None
        or disposition.relay is None
        or disposition.hold is not None
        or disposition.essential_outgoing
    ):
        return None
    return FollowUp(
        functools.partial(_record_logged, disposition, stores, queue_id),
        state.flush_in_batch,
        functools.partial(_withdraw_logged, disposition, stores, queue_id),
    )


def record(disposition: Disposition, stores: DecisionStores) -> None:
    """Append the disposition's audit records and queue its ledger steps (blocking); raises."""
    if stores.audit is not None:
        for entry in disposition.audit:
            stores.audit.record_decision(entry)
    if stores.threads is not None:
        for step in disposition.ledger:
            stores.threads.add(step.queue_id, step.thread, step.case)


def _record_logged(disposition: Disposition, stores: DecisionStores, queue_id: str) -> None:
    try:
        record(disposition, stores)
    except Exception as exc:
        # The message is on disk and will be delivered; saying 4xx now would only make a duplicate.
        log_event(logger, "smtp.record_failed", logging.ERROR, queue_id=queue_id, error=describe_error(exc))


def _withdraw_logged(disposition: Disposition, stores: DecisionStores, queue_id: str) -> None:
    """The acceptance was recorded, then its message could not be stored (the client hears 451):
    a second entry for the same queue id says so, so the trail never claims a 250 that was not sent."""
    if stores.audit is None:
        return
    reply = f"{replies.STORE_FAILED.code} {replies.STORE_FAILED.status}"
    try:
        for entry in disposition.audit:
            stores.audit.record_decision(
                dataclasses.replace(entry, verdict="tempfail", reply=reply, error=SpoolError.__name__)
            )
    except Exception as exc:
        log_event(logger, "smtp.record_failed", logging.ERROR, queue_id=queue_id, error=describe_error(exc))


def record_accepted(disposition: Disposition, stores: DecisionStores) -> None:
    """Confirm the hold, append the records, queue the ledger steps: what ``commit`` does once the
    messages are spooled, on the event loop (also for tools and tests that spool nothing). Raises."""
    _confirm_and_record(disposition, stores)


def _confirm_and_record(disposition: Disposition, stores: DecisionStores) -> None:
    if disposition.hold is not None and stores.holds is not None:
        stores.holds.confirm(disposition.hold)
    record(disposition, stores)


def _undo(disposition: Disposition, stores: DecisionStores, queue_id: str) -> None:
    if disposition.undo is None or stores.holds is None:
        return
    try:
        stores.holds.undo(disposition.undo)
    except Exception as exc:
        log_event(logger, "smtp.undo_failed", logging.ERROR, queue_id=queue_id, error=describe_error(exc))


def _refusal_reply(refusal: Reply, queue_id: str) -> Reply:
    code, status = refusal.code, refusal.status
    if not 400 <= code < 600 or status[:1] != str(code)[0]:
        log_event(logger, "smtp.screener_bad_reply", logging.ERROR, queue_id=queue_id, code=code)
        return replies.INTERNAL_ERROR
    return replies.multiline(code, status, refusal.lines or ("Message refused by policy",))
