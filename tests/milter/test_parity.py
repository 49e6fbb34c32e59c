"""Parity: the same messages get the same verdicts in gateway mode and in milter mode.

Two gateways with the same policy and their own state: one decides each message as the SMTP intake
has it decided (the screener's ``Disposition``, committed), the other is the real milter server on a
unix socket, spoken to as Postfix speaks to it. A refusal must be the same reply, word for word; an
acceptance must leave the MTA's copy exactly as the gateway would relay it (content and envelope
recipients); a hold must quarantine the copy exactly as the gateway would release it.
"""

from __future__ import annotations

import asyncio
import itertools
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from kilter.protocol import Accept, Discard, Quarantine, ReplyCode, TemporaryFailure
from kilter.protocol.messages import Message, Negotiate

from gateway.decision.build import policy_screener
from gateway.decision.commit import CommitState, commit, flush
from gateway.decision.policy_screener import PolicyScreener
from gateway.decision.screening import Submission
from gateway.milter.judging import Judge
from gateway.milter.server import MilterServer
from gateway.milter_app import held_release
from gateway.settings import GatewaySettings, MilterSettings, PolicySettings
from gateway.state.opening import open_state
from gateway.state.ports import QueuePort
from tests.milter.mta import MtaCopy, conversation, responses

ADA, BEN = "ada@example.org", "ben@example.org"
OUTSIDER, CONDUCT = "olive@example.net", "conduct@example.org"
FINAL = (Accept, Discard, ReplyCode, TemporaryFailure)


def policy(action: str) -> str:
    return textwrap.dedent(
        f"""\
        organisation:
          conduct_address: {CONDUCT}
          members:
            - name: Ada Quill
              addresses: [{ADA}]
            - name: Ben Ink
              addresses: [{BEN}]
        rules:
          - rule: conduct-cc
            action: rewrite
            params:
              display_name: Conduct Committee
          - rule: recipient-banner
            action: rewrite
          - rule: reporter-protection
            action: {action}
          - rule: communication
            action: warn
        cases:
          - code: home shelf
            reporters:
              - id: quiet heron
                names: [Jin Park]
        """
    )


@dataclass
class Side:
    screener: PolicyScreener
    spool: QueuePort
    settings: GatewaySettings

    def close(self) -> None:
        self.screener.close()


def open_side(root: Path, policy_file: Path) -> Side:
    settings = GatewaySettings(
        state_dir=root / "state",
        policy=PolicySettings(path=policy_file, workers=0),
        milter=MilterSettings(listen=f"unix:{root / 'milter.sock'}", postsuper=("true",)),
    )
    settings.state_dir.mkdir(parents=True)
    state = open_state(settings)
    return Side(policy_screener(settings, state.accounts.open()), state.queue.open(), settings)


@dataclass
class Pair:
    gateway: Side
    milter: Side
    loop: asyncio.AbstractEventLoop
    ids: Iterator[int]
    action: str


@pytest.fixture(params=["reject", "hold"])
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Pair]:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(policy(request.param), encoding="utf-8")
    made = Pair(
        open_side(tmp_path / "gateway", policy_file),
        open_side(tmp_path / "milter", policy_file),
        asyncio.new_event_loop(),
        itertools.count(1),
        request.param,
    )
    yield made
    made.gateway.close()
    made.milter.close()
    made.loop.close()


async def gateway_mode(side: Side, submission: Submission) -> object:
    """What the gateway does: the disposition, committed as the SMTP intake commits it."""
    disposition = await side.screener.decide(submission)
    state = CommitState.of(side.spool, side.screener.stores)
    if not disposition.accepted:
        assert await flush(state, submission.queue_id)
        return ("refused", str(disposition.reply))
    await commit(disposition, state, submission)
    if disposition.relay is not None:
        return ("relayed", disposition.relay.content, sorted(r.lower() for r in disposition.relay.rcpt_tos))
    release = held_release(side.screener)(submission.queue_id)
    assert release is not None
    return ("held", release[0], sorted(r.lower() for r in release[1]))


async def milter_mode(side: Side, submission: Submission) -> object:
    """What Postfix ends up with after talking to the milter server over its socket."""
    settings = side.settings
    judge = Judge(
        side.screener,
        CommitState.of(side.spool, side.screener.stores),
        settings.milter,
        committee=lambda: frozenset(side.screener.source.policy.committee),
        held_release=held_release(side.screener),
        release=_nothing,
        max_size=settings.limits.max_message_size,
    )
    server = MilterServer(judge, settings.milter, settings.limits.max_message_size)
    await server.start()
    try:
        path = str(server.address.path)
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(
            conversation(
                submission.content,
                submission.mail_from,
                submission.rcpt_tos,
                queue_id=submission.queue_id,
                login=submission.authenticated_as,
            )
        )
        await writer.drain()
        received = b""
        answers: list[Message] = []
        while not any(isinstance(m, FINAL) for m in answers):
            chunk = await asyncio.wait_for(reader.read(65536), 30)
            assert chunk, "the milter closed the connection without an answer"
            received += chunk
            answers = [m for m in responses(received) if not isinstance(m, Negotiate)]
        writer.close()
        await writer.wait_closed()
    finally:
        await server.stop()
    final = answers[-1]
    if isinstance(final, ReplyCode):
        return ("refused", bytes(final.content).rstrip(b"\0").decode().replace("%%", "%"))
    assert isinstance(final, Accept), answers
    copy = MtaCopy.of(submission.content, submission.rcpt_tos).apply(answers[:-1])
    verdict = "held" if any(isinstance(m, Quarantine) for m in answers) else "relayed"
    return (verdict, copy.content, sorted(r.lower() for r in copy.rcpt_tos))


async def _nothing() -> None:
    return None


def message(number: int, to: list[str], cc: bool, body: str, reply_to: int | None) -> bytes:
    headers = ["From: Ada Quill <ada@example.org>", "To: " + ", ".join(f"<{r}>" for r in to)]
    if cc:
        headers.append(f"Cc: Conduct Committee <{CONDUCT}>")
    subject = "Minutes" if reply_to is None else "Re: Minutes"
    headers += [f"Subject: {subject}", f"Message-ID: <parity-{number}@example.org>"]
    if reply_to is not None:
        headers += [f"In-Reply-To: <parity-{reply_to}@example.org>"]
    headers += ["Date: Sat, 01 Mar 2025 10:00:00 +0000", "MIME-Version: 1.0"]
    headers += ["Content-Type: text/plain; charset=utf-8"]
    return ("\r\n".join(headers) + "\r\n\r\n" + body + "\r\n").encode()


BODIES = [
    "Hello,\r\n\r\nthe minutes are below.",
    "Jin Park told us what happened.",
    "It was just a misunderstanding, no big deal.",
    "Looping in Cleo.\r\n\r\n> earlier words",
    "100% agreed: see you at 10:00.",
]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    to=st.lists(st.sampled_from([OUTSIDER, "bo@example.net", BEN]), min_size=1, max_size=3, unique=True),
    cc=st.booleans(),
    conduct_in_envelope=st.booleans(),
    body=st.sampled_from(BODIES),
    threaded=st.booleans(),
)
def test_gateway_and_milter_give_the_same_verdict(
    pair: Pair, to: list[str], cc: bool, conduct_in_envelope: bool, body: str, threaded: bool
) -> None:
    number = next(pair.ids)
    reply_to = number - 1 if threaded and number > 1 else None
    rcpt_tos = (*to, CONDUCT) if conduct_in_envelope else tuple(to)
    submission = Submission(
        queue_id=f"PARITY{number:05d}",
        mail_from=ADA,
        rcpt_tos=rcpt_tos,
        authenticated_as=ADA,
        content=message(number, to, cc, body, reply_to),
    )
    expected = pair.loop.run_until_complete(gateway_mode(pair.gateway, submission))
    got = pair.loop.run_until_complete(milter_mode(pair.milter, submission))
    event(str(expected[0]))  # --hypothesis-show-statistics: how many were refused, relayed, held
    assert got == expected


# The unit corpus: one message per kind of verdict, each named, in order (the reply in a thread
# follows its parent). The verdict kind is asserted too, so the corpus keeps covering what it claims.
CORPUS = [
    ("clean", [OUTSIDER], True, True, BODIES[0], None, "relayed"),
    ("conduct-missing", [OUTSIDER], False, False, BODIES[0], None, "relayed"),
    ("protected-name", [OUTSIDER], True, True, BODIES[1], None, "refused-or-held"),
    ("minimising", [OUTSIDER], True, True, BODIES[2], None, "relayed"),
    ("reply-adds-a-person", [OUTSIDER, "cleo@example.net"], True, True, BODIES[3], 1, "relayed"),
    ("percent-sign", [BEN], True, True, BODIES[4], None, "relayed"),
]


def test_the_unit_corpus_gets_the_same_verdicts(pair: Pair) -> None:
    for number, (_name, to, cc, conduct, body, parent, kind) in enumerate(CORPUS, start=1):
        content = message(number, to, cc, body, parent)
        if _name == "percent-sign":
            content = b"X-Conduct-Gateway: forged by the client\r\n" + content
        submission = Submission(
            queue_id=f"CORPUS{number:03d}",
            mail_from=ADA,
            rcpt_tos=(*to, CONDUCT) if conduct else tuple(to),
            authenticated_as=ADA,
            content=content,
        )
        expected = pair.loop.run_until_complete(gateway_mode(pair.gateway, submission))
        got = pair.loop.run_until_complete(milter_mode(pair.milter, submission))
        assert got == expected, _name
        protected = "refused" if pair.action == "reject" else "held"
        assert expected[0] == (protected if kind == "refused-or-held" else kind), _name  # type: ignore[index]
