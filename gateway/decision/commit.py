"""The end of a submission: screen it, make the outcome durable, and only then say what the client hears.

Intake hands over a complete, checked submission; ``SubmissionCommitter`` screens it, stores what the
screener accepted (the submission, possibly rewritten, and the gateway's own messages) in one group
commit, records the decision, and returns the reply. A message is answered 250 only after the spool
has it on disk and the decision is recorded. The commit runs as a tracked task of its own that hands
its outcome to the transaction on a separate future: a client that hangs up, or a timer that fires,
can no longer cancel a commit halfway, and ``wait_for_commits()`` lets a stopping gateway finish
every commit first.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway import replies
from gateway.decision.screening import Accept, Screener, Submission
from gateway.errors import GatewayError
from gateway.logs import describe_error, log_event
from gateway.replies import Reply
from gateway.state.spool import FollowUp, Spool, SpoolEnvelope

logger = logging.getLogger(__name__)

ThreadRunner = Callable[[Callable[[], None]], Awaitable[None]]  # runs a blocking call off the event loop


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


def _flush_logged(flush: Callable[[], None]) -> None:
    """A screener's blocking decision flush, run in a spool batch: failures are logged, the messages
    are stored either way."""
    try:
        flush()
    except Exception as exc:
        log_event(logger, "smtp.record_failed", logging.ERROR, error=describe_error(exc))


class SharedFlush:
    """Runs a blocking flush in a thread for many waiting transactions: one run at a time.

    A transaction that asks while a run is under way waits for the next run (the one under way may
    have started before its records were written); everyone who asked meanwhile shares that run.
    """

    def __init__(self, flush: Callable[[], None], run: ThreadRunner = asyncio.to_thread) -> None:
        self._flush = flush
        self._run = run  # how the flush reaches a thread (the spool's next batch, see SubmissionCommitter)
        self._next: asyncio.Future[None] | None = None  # the run not started yet, that callers join
        self._running = False

    async def __call__(self) -> None:
        """Return once everything written before this call is flushed; raise what the flush raised."""
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
            if not self._running:
                self._running = True
                asyncio.get_running_loop().call_soon(self._start)
        # One caller's cancellation must not cancel the run the others are waiting for.
        await asyncio.shield(self._next)

    def _start(self) -> None:
        batch, self._next = self._next, None
        if batch is None:
            self._running = False
            return
        running = asyncio.ensure_future(self._run(self._flush))
        running.add_done_callback(lambda done: self._finished(batch, done))

    def _finished(self, batch: asyncio.Future[None], done: asyncio.Future[None]) -> None:
        if not batch.done():
            if done.cancelled():
                batch.set_exception(GatewayError("the flush was cancelled"))
            elif (error := done.exception()) is not None:
                batch.set_exception(error)
            else:
                batch.set_result(None)
            batch.exception()  # retrieved: a batch nobody waits for any more must not warn
        self._start()


class SubmissionCommitter:
    """Screens complete submissions and commits their outcome before the client is answered."""

    def __init__(self, spool: Spool, screener: Screener) -> None:
        self.spool = spool
        self.screener = screener
        self._commits: set[asyncio.Task[Committed]] = set()
        batches = screener.records_in_batches
        # A refusal's decision is flushed with the spool's next batch, so the two share one thread
        # hand-off instead of taking one each; an acceptance's is recorded and flushed in the batch
        # that stores its message (``_follow_up``).
        flush = screener.flush_decisions
        self.flush_decisions = SharedFlush(flush, spool.run_with_next_batch) if batches else None
        # One callable for every batch, so the batch runs it once however many messages it holds.
        self.flush_in_batch = functools.partial(_flush_logged, flush) if batches else None

    @property
    def commits_in_flight(self) -> int:
        return len(self._commits)

    async def wait_for_commits(self) -> None:
        """Return once every commit started so far has finished (its client got its reply)."""
        await asyncio.gather(*self._commits, return_exceptions=True)

    async def decide(self, submission: Submission, received_header: bytes, finish: Finish) -> Reply:
        """Screen ``submission``, commit what was decided, and return the reply ``finish`` made of it.

        ``received_header`` is prepended to the stored copy of an accepted submission. ``finish`` runs
        once for every transaction, even one whose client has gone meanwhile.
        """
        queue_id = submission.queue_id
        try:
            verdict = await self._screen(submission)
        except Exception as exc:
            log_event(
                logger, "smtp.screener_failed", logging.ERROR, queue_id=queue_id, error=describe_error(exc)
            )
            return finish(Committed(replies.INTERNAL_ERROR))
        if not isinstance(verdict, Accept):
            if not await self._flush(queue_id):
                return finish(Committed(replies.INTERNAL_ERROR))
            return finish(Committed(_refusal_reply(verdict, queue_id)))
        if verdict.spool_submission and not verdict.rcpt_tos:
            log_event(logger, "smtp.screener_unusable", logging.ERROR, queue_id=queue_id)
            return finish(Committed(replies.INTERNAL_ERROR))
        stored = received_header + verdict.content if verdict.spool_submission else b""
        # The commit runs as a task of its own that nothing cancels; this transaction waits for its
        # reply on a future of its own, which is all a hang-up cancels. (Cheaper than awaiting the
        # task through asyncio.shield, which takes one more turn of the event loop to answer.)
        answer: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(self._commit_and_answer(answer, submission, verdict, stored, finish))
        self._commits.add(task)
        task.add_done_callback(self._commits.discard)
        return await answer

    async def refused_at_intake(self, submission: Submission, reply: Reply, code: str) -> Reply:
        """Refuse a message the policy never saw; the decision still goes to the audit trail."""
        try:
            self.screener.refused_at_intake(submission, reply.code, reply.status, code)
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
        if not await self._flush(submission.queue_id):
            return replies.INTERNAL_ERROR
        return reply

    async def _commit_and_answer(
        self,
        answer: asyncio.Future[Reply],
        submission: Submission,
        accept: Accept,
        content: bytes,
        finish: Finish,
    ) -> Committed:
        try:
            committed = await self._commit(submission, accept, content)
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

    async def _screen(self, submission: Submission) -> Accept | Reply:
        # Awaited: a screener may evaluate elsewhere (policy worker processes) meanwhile.
        return await self.screener.screen_async(submission)

    async def _commit(self, submission: Submission, accept: Accept, content: bytes) -> Committed:
        """Store, record; runs to the end even if the client has gone (its task is shielded)."""
        queue_id = submission.queue_id
        envelope = SpoolEnvelope(
            queue_id=queue_id,
            mail_from=submission.mail_from,
            rcpt_tos=accept.rcpt_tos,
            authenticated_as=submission.authenticated_as,
            received_at=time.time(),
            client_address=submission.client_address,
        )
        # The submission and the gateway's own messages (notices, review requests, a released held
        # message) are committed together, so one group commit covers them all.
        follow_up = self._follow_up(submission, accept)
        stores: list[tuple[str, bool, Awaitable[None]]] = []
        if accept.spool_submission:
            stores.append((queue_id, True, self.spool.commit(envelope, content, follow_up)))
        for outgoing in accept.extra:
            generated = SpoolEnvelope(
                queue_id=outgoing.queue_id,
                mail_from=outgoing.mail_from,
                rcpt_tos=outgoing.rcpt_tos,
                authenticated_as=outgoing.authenticated_as,
                received_at=envelope.received_at,
            )
            stores.append(
                (outgoing.queue_id, outgoing.essential, self.spool.commit(generated, outgoing.content))
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
            try:
                self.screener.not_stored(submission, accept)
            except Exception as exc:
                log_event(
                    logger,
                    "smtp.undo_failed",
                    logging.ERROR,
                    queue_id=queue_id,
                    error=describe_error(exc),
                )
            return Committed(replies.STORE_FAILED)
        if follow_up is None:
            self._record_accepted(submission, accept)
            await self._flush(queue_id)  # logged if it fails; the message is spooled either way
        reply = Reply(250, "2.0.0", accept.reply_lines) if accept.reply_lines else None
        reply = reply or replies.queued(queue_id, accept.changes)
        return Committed(reply, len(accept.rcpt_tos), len(content))

    def _follow_up(self, submission: Submission, accept: Accept) -> FollowUp | None:
        """Record the acceptance on the spool's I/O thread, in the batch that stores the message,
        when the screener allows it (one thread hand-off and one batch per message instead of two).

        Not when an essential extra message must be stored too: the acceptance is recorded only once
        everything is, and the extras may land in another batch.
        """
        flush = self.flush_in_batch
        if (
            flush is None
            or not accept.spool_submission
            or any(outgoing.essential for outgoing in accept.extra)
            or not self.screener.can_record_off_loop(accept)
        ):
            return None
        return FollowUp(functools.partial(self._record_accepted, submission, accept), flush)

    def _record_accepted(self, submission: Submission, accept: Accept) -> None:
        try:
            self.screener.accepted(submission, accept)
        except Exception as exc:
            # The message is on disk and will be delivered; saying 4xx now would only make a duplicate.
            log_event(
                logger,
                "smtp.record_failed",
                logging.ERROR,
                queue_id=submission.queue_id,
                error=describe_error(exc),
            )

    async def _flush(self, queue_id: str) -> bool:
        """Make the screener's records of this decision durable before the client hears of it.

        A screener that batches its audit writes offers ``flush_decisions()`` (blocking): it runs in
        a thread, and concurrent transactions share one run (``SharedFlush``) instead of an fsync each.
        """
        flush = self.flush_decisions
        if flush is None:
            return True
        try:
            await flush()
        except Exception as exc:
            log_event(
                logger, "smtp.record_failed", logging.ERROR, queue_id=queue_id, error=describe_error(exc)
            )
            return False
        return True


def _refusal_reply(refusal: Reply, queue_id: str) -> Reply:
    code, status = refusal.code, refusal.status
    if not 400 <= code < 600 or status[:1] != str(code)[0]:
        log_event(logger, "smtp.screener_bad_reply", logging.ERROR, queue_id=queue_id, code=code)
        return replies.INTERNAL_ERROR
    return replies.multiline(code, status, refusal.lines or ("Message refused by policy",))
