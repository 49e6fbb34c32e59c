"""Who a message is judged as, and failing closed: the judge and the server with stand-in screeners."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from kilter.protocol import Accept, ReplyCode, TemporaryFailure

from gateway import replies
from gateway.decision.commit import CommitState, DecisionStores
from gateway.decision.disposition import Disposition
from gateway.decision.screening import PassThrough, Submission
from gateway.errors import ConfigError
from gateway.milter.judging import Judge, Verdict
from gateway.milter.server import MilterServer, SocketSpec
from gateway.milter.session import Envelope
from gateway.settings import MilterSettings
from tests.milter.mta import conversation, responses

COMMITTEE = frozenset({"ada@example.org"})
CONTENT = b"From: ada@example.org\r\nTo: olive@example.net\r\n\r\nHi\r\n"


class Recording(PassThrough):
    """Accepts everything unchanged and remembers what it was asked."""

    def __init__(self, error: Exception | None = None) -> None:
        self.seen: list[Submission] = []
        self.error = error

    async def decide(self, submission: Submission) -> Disposition:
        self.seen.append(submission)
        if self.error is not None:
            raise self.error
        return await super().decide(submission)


async def _nothing() -> None:
    return None


def judge(screener: Recording, **settings: Any) -> Judge:
    return Judge(
        screener,
        CommitState.of(object(), DecisionStores()),  # type: ignore[arg-type]  # nothing is spooled here
        MilterSettings(**settings),
        committee=lambda: COMMITTEE,
        held_release=lambda _reference: None,
        release=_nothing,
        max_size=1000,
        review_address=lambda address: address.startswith("review+"),
    )


def envelope(sender: str, login: str = "", rcpt: str = "olive@example.net", **extra: Any) -> Envelope:
    macros = {"i": "4F1A2B"} | ({"auth_authen": login} if login else {})
    fields = (("From", f" {sender}".encode()), ("To", f" {rcpt}".encode()))
    return Envelope(sender, (rcpt,), macros, fields, b"Hi\r\n", **extra)


async def test_mail_from_outside_the_committee_without_a_login_passes_untouched() -> None:
    screener = Recording()
    verdict = await judge(screener).judge(envelope("visitor@example.net"))
    assert [type(action) for action in verdict.actions] == [Accept] and verdict.outcome == "passed"
    assert screener.seen == []  # never judged, never recorded


@pytest.mark.parametrize(
    ("sender", "login", "mode", "member"),
    [
        pytest.param("Ada@Example.org", "", "pass", "ada@example.org", id="claims-a-committee-address"),
        pytest.param("home@example.net", "Ada@example.org", "pass", "ada@example.org", id="logged-in"),
        pytest.param("visitor@example.net", "", "screen", "visitor@example.net", id="screen-everyone"),
    ],
)
async def test_who_a_message_is_judged_as(sender: str, login: str, mode: str, member: str) -> None:
    screener = Recording()
    verdict = await judge(screener, unauthenticated=mode).judge(envelope(sender, login))
    [submission] = screener.seen
    assert submission.authenticated_as == member
    assert submission.queue_id == "4F1A2B"  # Postfix's queue id is the reference
    assert submission.content.endswith(b"\r\n\r\nHi\r\n")
    assert verdict.outcome == "accepted"


async def test_a_review_decision_without_a_login_is_refused_before_anything_is_decided() -> None:
    screener = Recording()
    verdict = await judge(screener).judge(envelope("ada@example.org", rcpt="review+abc@example.org"))
    assert verdict.actions == [ReplyCode(str(replies.REVIEW_NEEDS_LOGIN).encode() + b"\0")]
    assert screener.seen == []
    logged_in = await judge(screener).judge(
        envelope("ada@example.org", "ada@example.org", "review+abc@example.org")
    )
    assert logged_in.outcome == "accepted" and len(screener.seen) == 1


async def test_a_screener_that_fails_defers_the_message() -> None:
    verdict = await judge(Recording(RuntimeError("boom"))).judge(envelope("ada@example.org"))
    assert verdict.actions == [ReplyCode(str(replies.INTERNAL_ERROR).encode() + b"\0")]
    assert verdict.outcome == "deferred"


async def test_an_oversized_message_is_refused_552() -> None:
    verdict = await judge(Recording()).judge(envelope("ada@example.org", oversized=True))
    assert verdict.actions == [ReplyCode(str(replies.message_size_exceeds(1000)).encode() + b"\0")]


async def test_a_queue_id_unfit_for_a_reference_is_replaced_by_our_own() -> None:
    screener = Recording()
    odd = envelope("ada@example.org")
    odd.macros["i"] = "../etc"
    await judge(screener).judge(odd)
    assert screener.seen[0].queue_id != "../etc" and screener.seen[0].queue_id.isalnum()


class Stuck(Judge):
    async def judge(self, envelope: Envelope) -> Verdict:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


@pytest.mark.parametrize(
    ("on_failure", "expected"),
    [("tempfail", TemporaryFailure), ("accept", Accept)],
    ids=["tempfail", "accept"],
)
async def test_a_decision_that_takes_too_long_fails_as_configured(
    tmp_path: Path, on_failure: str, expected: type
) -> None:
    settings = MilterSettings(
        listen=f"unix:{tmp_path / 'm.sock'}", decision_timeout=0.2, on_failure=on_failure
    )
    stuck = Stuck(
        Recording(),
        judge(Recording()).state,
        settings,
        committee=lambda: COMMITTEE,
        held_release=lambda _r: None,
        release=_nothing,
        max_size=1000,
    )
    server = MilterServer(stuck, settings, 1000)
    await server.start()
    try:
        assert server.address == SocketSpec(path=tmp_path / "m.sock")
        reader, writer = await asyncio.open_unix_connection(str(tmp_path / "m.sock"))
        writer.write(conversation(CONTENT, "ada@example.org", ["olive@example.net"], queue_id="Q1"))
        received = b""
        while not any(isinstance(m, TemporaryFailure | Accept) for m in responses(received)):
            chunk = await asyncio.wait_for(reader.read(65536), 10)
            assert chunk
            received += chunk
        assert type(responses(received)[-1]) is expected
        writer.close()
        await writer.wait_closed()
    finally:
        await server.stop()


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("inet:8895@127.0.0.1", SocketSpec(host="127.0.0.1", port=8895)),
        ("inet:127.0.0.1:8895", SocketSpec(host="127.0.0.1", port=8895)),
        ("inet6:8895@[::1]", SocketSpec(host="::1", port=8895)),
        ("unix:/run/conduct/milter.sock", SocketSpec(path=Path("/run/conduct/milter.sock"))),
    ],
)
def test_socket_specs_as_postfix_writes_them(spec: str, parsed: SocketSpec) -> None:
    assert SocketSpec.parse(spec) == parsed


@pytest.mark.parametrize("spec", ["inet:notaport@host", "unix:", "tcp:25", "inet:99999@127.0.0.1"])
def test_a_socket_spec_postfix_would_not_understand_is_refused(spec: str) -> None:
    with pytest.raises(ConfigError, match=r"milter\.listen"):
        SocketSpec.parse(spec)


class Holding(Recording):
    """Holds every message, as the policy screener does (the desk's hold is the queue id)."""

    async def decide(self, submission: Submission) -> Disposition:
        self.seen.append(submission)
        return Disposition(
            replies.reply(250, "2.0.0", "Held"), rcpt_tos=submission.rcpt_tos, hold=submission.queue_id
        )


class DeskHolds:
    def __init__(self) -> None:
        self.confirmed: list[str] = []
        self.undone: list[str] = []

    def confirm(self, key: str) -> None:
        self.confirmed.append(key)

    def undo(self, key: str) -> None:
        self.undone.append(key)


def holding_judge(release: bytes | None) -> tuple[Judge, DeskHolds]:
    desk = DeskHolds()
    held = (release, ("olive@example.net",)) if release is not None else None
    made = Judge(
        Holding(),
        CommitState.of(object(), DecisionStores(holds=desk)),  # type: ignore[arg-type]
        MilterSettings(),
        committee=lambda: COMMITTEE,
        held_release=lambda _reference: held,
        release=_nothing,
        max_size=1000,
    )
    return made, desk


async def test_a_hold_goes_to_the_hold_queue_as_it_will_be_released() -> None:
    release = b"X-Conduct-Gateway: ref=4F1A2B; changed=none\r\n" + envelope("ada@example.org").content
    made, desk = holding_judge(release)
    verdict = await made.judge(envelope("ada@example.org"))
    assert verdict.outcome == "held" and desk.confirmed == ["4F1A2B"]
    assert [type(a).__name__ for a in verdict.actions] == ["InsertHeader", "Quarantine", "Accept"]


async def test_a_hold_postfix_could_not_release_is_deferred_and_undone() -> None:
    made, desk = holding_judge(b"From: ada@example.org\r\n\r\nHi\r\n")
    odd = envelope("ada@example.org")
    odd.macros["i"] = "../etc"  # our own reference then, which no postsuper -H would find
    verdict = await made.judge(odd)
    assert verdict.actions == [ReplyCode(str(replies.INTERNAL_ERROR).encode() + b"\0")]
    assert desk.confirmed == [] and len(desk.undone) == 1


async def test_a_hold_the_desk_did_not_keep_is_deferred_never_dropped() -> None:
    made, desk = holding_judge(None)
    verdict = await made.judge(envelope("ada@example.org"))
    assert verdict.actions == [ReplyCode(str(replies.INTERNAL_ERROR).encode() + b"\0")]
    assert desk.undone == ["4F1A2B"] and desk.confirmed == []
