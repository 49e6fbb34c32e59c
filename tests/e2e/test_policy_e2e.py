"""The policy end to end: real clients submit through a real gateway to the real Postfix upstream.

Two gateways, started once for the module: one with ``policy-e2e.yaml`` (the shipped default's
rules and actions for a fictional committee and case), one with ``policy-e2e-strict-cc.yaml``
(conduct-cc rejects; reporter-protection only warns, which is how a thread learns its case through
SMTP alone, so that Bcc on a case's thread can be shown refused). Every submission's reference is
kept, and the last test checks each one against the audit trail, which must verify and must not
hold a protected identity, a subject or any marker the messages carried.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.clients import Account, ClientRun, msmtp, swaks
from tests.e2e.gateway_process import GatewayProcess, gateway_settings
from tests.e2e.messages import token, unique_address
from tests.e2e.postfix import DeliveredMessage, PostfixInstance
from tests.e2e.tls import TlsMaterial

pytestmark = pytest.mark.e2e

HERE = Path(__file__).resolve().parent
MAIN_POLICY = HERE / "policy-e2e.yaml"
STRICT_CC_POLICY = HERE / "policy-e2e-strict-cc.yaml"
CONDUCT = "conduct@example.org"
CONDUCT_CC = f"Conduct Committee <{CONDUCT}>"
COMMITTEE_MEMBER = "noor.haddad@example.org"  # a member of both policies who only receives
# Every identity of the protected reporter in both policies; none may reach an outsider or the audit trail.
PROTECTED = ("Elif Marchetti", "Elifa", "emarchetti", "elif.marchetti@reporter.test")
PROTECTED_WORDS = ("elif", "marchetti")
RELAY_HEADER = "X-Conduct-Gateway"

QUEUED = re.compile(r"queued as (\S+)")
REFERENCE = re.compile(r"Reference: (\S+)")


@dataclass
class Submission:
    """One client run and what the gateway answered to it."""

    run: ClientRun
    replies: list[str]

    @property
    def final(self) -> str:
        """The last line of the reply to the message (the DATA reply)."""
        return self.replies[-1] if self.replies else ""

    @property
    def reply_text(self) -> str:
        return "\n".join(self.replies)

    @property
    def reference(self) -> str:
        if (found := self.reference_or_none) is None:
            raise AssertionError(f"no reference in the reply:\n{self.run.transcript}")
        return found

    @property
    def reference_or_none(self) -> str | None:
        for pattern in (QUEUED, REFERENCE):
            if match := pattern.search(self.final):
                return match.group(1)
        return None


@dataclass
class PolicyGateway:
    """A running gateway with a policy, and every decision its tests asked it for."""

    process: GatewayProcess
    tls: TlsMaterial
    member: Account
    decisions: list[tuple[str, str]] = field(default_factory=list)  # (reference, reply code + status)
    subjects: list[str] = field(default_factory=list)

    def send(
        self, message: bytes, recipients: list[str], *, client: str = "swaks", subject: str = ""
    ) -> Submission:
        """Submit with a real client over STARTTLS and AUTH; remember the decision for the audit test."""
        endpoint = self.process.endpoint("submission")
        if client == "swaks":
            run = swaks(
                endpoint,
                mail_from=self.member.address,
                recipients=recipients,
                message=message,
                account=self.member,
                ca_file=self.tls.ca_file,
            )
            replies = run.server_replies()
        else:
            run = msmtp(
                endpoint,
                mail_from=self.member.address,
                recipients=recipients,
                message=message,
                account=self.member,
                ca_file=self.tls.ca_file,
            )
            # msmtp --debug prints every server line as "<-- 250-...".
            replies = [line[4:] for line in (run.stdout + run.stderr).splitlines() if line.startswith("<-- ")]
        # The DATA reply: the (multi-line) reply after "354", without the closing QUIT's 221.
        after_data = replies[[i for i, line in enumerate(replies) if line.startswith("354")][-1] + 1 :]
        answer = [line for line in after_data if not line.startswith("221")]
        submission = Submission(run, answer)
        # Refusals by the relay core before the policy runs (e.g. two From headers) carry no reference.
        if submission.reference_or_none is not None:
            self.decisions.append((submission.reference, " ".join(submission.final.split()[:2])))
        if subject:
            self.subjects.append(subject)
        return submission


def compose(
    marker: str,
    *,
    to: str,
    cc: str | None = CONDUCT_CC,
    subject: str | None = None,
    body: str = "",
    headers: tuple[str, ...] = (),
    mime: tuple[str, ...] = ("Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 7bit"),
) -> bytes:
    """A message from Maya Member with Message-ID ``<marker@example.org>`` (CRLF line ends)."""
    lines = [
        "From: Maya Member <maya.member@example.org>",
        f"To: {to}",
        *([f"Cc: {cc}"] if cc else []),
        f"Subject: {subject if subject is not None else f'policy e2e {marker}'}",
        f"Message-ID: <{marker}@example.org>",
        "Date: Mon, 02 Dec 2024 10:00:00 +0000",
        *headers,
        "MIME-Version: 1.0",
        *mime,
        "",
        body or f"Hello, this is {marker}.\r\n",
    ]
    return "\r\n".join(lines).encode()


def encoded_word(text: str) -> str:
    """``text`` as one RFC 2047 base64 encoded-word (nothing of it readable undecoded)."""
    return f"=?utf-8?b?{base64.b64encode(text.encode()).decode()}?="


def arrived(postfix: PostfixInstance, recipient: str, marker: str) -> DeliveredMessage:
    """Wait until the message with this marker reaches ``recipient``; check it carries one relay header."""
    wanted = recipient.lower()

    def matching(messages: list[DeliveredMessage]) -> list[DeliveredMessage]:
        return [
            m for m in messages if m.delivered_to == wanted and f"<{marker}@example.org>" in m.raw.decode()
        ]

    [delivered] = matching(postfix.wait_for(lambda ms: bool(matching(ms)), what=f"{marker} to {recipient}"))
    assert len(delivered.header_values(RELAY_HEADER)) == 1, delivered.raw.decode(errors="replace")
    return delivered


def never_relayed(postfix: PostfixInstance, *markers: str) -> None:
    """No message in the upstream's mailbox carries any of these markers (call after a later delivery)."""
    for message in postfix.messages():
        text = message.raw.decode(errors="replace")
        assert not any(marker in text for marker in markers), text


def assert_quoting_refused(
    gateway: PolicyGateway, postfix: PostfixInstance, words: str, *, telltale: str, label: str
) -> None:
    """A member quoting a reporter's ``words`` to an outsider is refused without the words (``telltale``,
    one of them) echoed; the same message without the quote is relayed."""
    quoted, plain, outsider = token(), token(), unique_address(label)
    body = f"Here is what we were told:\r\n\r\n> {words}.\r\n"
    refused = gateway.send(compose(quoted, to=f"<{outsider}>", body=body), [outsider])
    assert refused.final.startswith("550"), refused.run.transcript
    assert "protected-content" in refused.reply_text
    assert telltale not in refused.reply_text  # the reporter's words are never echoed
    gateway.send(compose(plain, to=f"<{outsider}>"), [outsider])
    arrived(postfix, outsider, plain)
    never_relayed(postfix, quoted)


def start_gateway(
    root: Path, policy: Path, tls: TlsMaterial, postfix: PostfixInstance, member: Account
) -> GatewayProcess:
    process = GatewayProcess(root, gateway_settings(tls, postfix, policy))
    process.add_user(member.address, member.password)
    process.start()
    return process


@pytest.fixture(scope="module")
def main_gateway(
    tmp_path_factory: pytest.TempPathFactory,
    tls_material: TlsMaterial,
    postfix: PostfixInstance,
    member: Account,
) -> Iterator[PolicyGateway]:
    process = start_gateway(
        tmp_path_factory.mktemp("policy-main"), MAIN_POLICY, tls_material, postfix, member
    )
    yield PolicyGateway(process, tls_material, member)
    process.close()


@pytest.fixture(scope="module")
def strict_gateway(
    tmp_path_factory: pytest.TempPathFactory,
    tls_material: TlsMaterial,
    postfix: PostfixInstance,
    member: Account,
) -> Iterator[PolicyGateway]:
    process = start_gateway(
        tmp_path_factory.mktemp("policy-strict-cc"), STRICT_CC_POLICY, tls_material, postfix, member
    )
    yield PolicyGateway(process, tls_material, member)
    process.close()


def assert_no_protected_identity(text: str) -> None:
    lowered = text.lower()
    assert not any(word in lowered for word in PROTECTED_WORDS), text


# --- conduct-cc -------------------------------------------------------------------------------------------


def test_conduct_cc_rewrite_adds_the_conduct_address_to_cc_and_envelope(
    main_gateway: PolicyGateway, postfix: PostfixInstance
) -> None:
    marker, outsider = token(), unique_address("cc-rewrite")
    sent = compose(marker, to=f"Bo Brandt <{outsider}>", cc=None)
    result = main_gateway.send(sent, [outsider], client="msmtp")

    assert result.run.ok, result.run.transcript
    assert f"250-2.0.0 Changed: added {CONDUCT} to Cc" in result.replies, result.run.transcript
    for recipient in (outsider, CONDUCT):
        delivered = arrived(postfix, recipient, marker)
        assert delivered.header_values("Cc") == [CONDUCT_CC]
        assert delivered.header_values(RELAY_HEADER) == [f"ref={result.reference}; changed=cc-added"]
        assert delivered.body.replace(b"\n", b"\r\n") == f"Hello, this is {marker}.\r\n".encode()


def test_conduct_cc_reject_refuses_with_what_to_do_and_relays_nothing(
    strict_gateway: PolicyGateway, postfix: PostfixInstance
) -> None:
    refused, corrected, outsider = token(), token(), unique_address("cc-reject")
    result = strict_gateway.send(compose(refused, to=f"<{outsider}>", cc=None), [outsider])

    assert not result.run.ok
    assert result.replies[0].startswith("550-5.7.1 Message not sent: "), result.run.transcript
    assert CONDUCT in result.replies[0], "the first line says what to fix"
    assert any("conduct-cc" in line for line in result.replies), result.run.transcript
    assert result.final == f"550 5.7.1 Reference: {result.reference}"

    # The same message with the conduct address in Cc goes through; the refused one never did.
    again = strict_gateway.send(compose(corrected, to=f"<{outsider}>"), [outsider, CONDUCT])
    assert again.run.ok, again.run.transcript
    arrived(postfix, outsider, corrected)
    never_relayed(postfix, refused)


# --- recipient-banner --------------------------------------------------------------------------------------


def test_a_reply_adding_a_person_gets_the_banner_in_its_text_and_html_parts(
    main_gateway: PolicyGateway, postfix: PostfixInstance
) -> None:
    first, reply = token(), token()
    bo, cleo = unique_address("banner-bo"), unique_address("banner-cleo")
    sent = main_gateway.send(compose(first, to=f"Bo Brandt <{bo}>"), [bo, CONDUCT])
    assert sent.run.ok, sent.run.transcript
    assert not any("Changed:" in line for line in sent.replies), "nothing to change on the first message"
    arrived(postfix, bo, first)

    boundary = f"alt-{reply}"
    body = "\r\n".join(
        [
            f"--{boundary}",
            "Content-Type: text/plain; charset=utf-8",
            "Content-Transfer-Encoding: 7bit",
            "",
            "Looping in Cleo, who runs the venue.",
            "",
            "> the original message",
            f"--{boundary}",
            "Content-Type: text/html; charset=utf-8",
            "Content-Transfer-Encoding: 7bit",
            "",
            "<html><head><title>t</title></head><body><p>Looping in Cleo, who runs the venue.</p>",
            "<blockquote>the original message</blockquote></body></html>",
            f"--{boundary}--",
            "",
        ]
    )
    answer = compose(
        reply,
        to=f"Bo Brandt <{bo}>, Cleo Rivers <{cleo}>",
        subject=f"Re: policy e2e {first}",
        headers=(f"In-Reply-To: <{first}@example.org>", f"References: <{first}@example.org>"),
        mime=(f'Content-Type: multipart/alternative; boundary="{boundary}"',),
        body=body,
    )
    result = main_gateway.send(answer, [bo, cleo, CONDUCT])

    assert result.run.ok, result.run.transcript
    assert "250-2.0.0 Changed: inserted [+ Cleo Rivers] at the top of the message" in result.replies
    delivered = arrived(postfix, cleo, reply)
    assert delivered.header_values(RELAY_HEADER) == [f"ref={result.reference}; changed=banner-added"]
    plain, html = [
        part.get_content() for part in delivered.message.walk() if part.get_content_maintype() == "text"
    ]
    assert plain.startswith("[+ Cleo Rivers]\n"), plain
    assert plain.index("[+ Cleo Rivers]") < plain.index("Looping in Cleo") < plain.index("> the original")
    assert html.count("[+ Cleo Rivers]") == 1, html
    assert html.index("<body>") < html.index("[+ Cleo Rivers]") < html.index("<p>Looping in Cleo"), html
    # Bo, already on the thread, gets the same bannered message.
    assert arrived(postfix, bo, reply).body == delivered.body


def test_bcc_on_a_case_thread_is_refused(strict_gateway: PolicyGateway, postfix: PostfixInstance) -> None:
    first, reply, control = token(), token(), token()
    moderator, hidden = unique_address("case-moderator"), unique_address("case-bcc")
    # reporter-protection only warns in this policy: the message is delivered and, because it names
    # the case's reporter, the ledger records its thread as belonging to the case.
    opened = strict_gateway.send(
        compose(first, to=f"<{moderator}>", body="About the report from Elif Marchetti.\r\n"),
        [moderator, CONDUCT],
    )
    assert opened.run.ok, opened.run.transcript
    arrived(postfix, moderator, first)

    answer = compose(
        reply,
        to=f"<{moderator}>",
        headers=answer_headers(first),
        body="Thanks, noted.\r\n",
    )
    result = strict_gateway.send(answer, [moderator, CONDUCT, hidden])

    assert not result.run.ok
    assert result.final.startswith("550 5.7.1"), result.run.transcript
    assert result.replies[0].startswith("550-5.7.1 Message not sent: This thread belongs to a case")
    assert "in Bcc" in result.replies[0] and hidden in result.replies[0], "names the hidden recipient"
    assert_no_protected_identity(result.reply_text)

    # Without the Bcc the same reply is fine; the Bcc'd one reached nobody.
    fixed = strict_gateway.send(
        compose(control, to=f"<{moderator}>", headers=answer_headers(first)), [moderator, CONDUCT]
    )
    assert fixed.run.ok, fixed.run.transcript
    arrived(postfix, moderator, control)
    never_relayed(postfix, reply)


def answer_headers(parent: str) -> tuple[str, ...]:
    return (f"In-Reply-To: <{parent}@example.org>", f"References: <{parent}@example.org>")


# --- reporter-protection -----------------------------------------------------------------------------------


def test_protected_name_in_an_encoded_subject_to_an_outsider_is_refused(
    main_gateway: PolicyGateway, postfix: PostfixInstance
) -> None:
    marker, outsider = token(), unique_address("rp-subject")
    readable = f"Témoignages : Elif Marchetti {marker}"
    subject = encoded_word(readable)
    assert "Marchetti" not in subject, "the name is only in an RFC 2047 encoded-word"
    result = main_gateway.send(
        compose(marker, to=f"<{outsider}>", subject=subject), [outsider, CONDUCT], subject=readable
    )

    assert not result.run.ok
    assert result.final == f"550 5.7.1 Reference: {result.reference}", result.run.transcript
    assert any("header Subject" in line for line in result.replies), result.run.transcript
    assert any(outsider in line for line in result.replies), "the refusal names the outside recipient"
    assert_no_protected_identity(result.reply_text)
    # Sent to committee members only (the conduct address and a member), the same message is delivered.
    inside = token()
    delivered_inside = main_gateway.send(
        compose(
            inside,
            to=f"Noor Haddad <{COMMITTEE_MEMBER}>",
            subject=encoded_word(f"Témoignages : Elif Marchetti {inside}"),
        ),
        [COMMITTEE_MEMBER, CONDUCT],
    )
    assert delivered_inside.run.ok, delivered_inside.run.transcript
    assert "Elif Marchetti" in str(arrived(postfix, COMMITTEE_MEMBER, inside).message["Subject"])
    never_relayed(postfix, marker)


def test_protected_username_in_a_base64_body_to_an_outsider_is_refused(
    main_gateway: PolicyGateway, postfix: PostfixInstance
) -> None:
    marker, control, outsider = token(), token(), unique_address("rp-base64")
    text = f"Hi,\n\nthe forum account emarchetti posted the screenshots ({marker}).\n"
    encoded = base64.encodebytes(text.encode()).decode().replace("\n", "\r\n")
    assert "emarchetti" not in encoded
    sent = compose(
        marker,
        to=f"Forum Moderators <{outsider}>",
        mime=("Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: base64"),
        body=encoded,
    )
    result = main_gateway.send(sent, [outsider, CONDUCT], client="msmtp")

    assert not result.run.ok
    assert result.final.startswith("550 5.7.1"), result.run.transcript
    assert any("reporter-protection" in line and "username" in line for line in result.replies)
    assert any(outsider in line for line in result.replies)
    assert_no_protected_identity(result.run.stdout + result.run.stderr)

    ok = main_gateway.send(compose(control, to=f"<{outsider}>"), [outsider, CONDUCT])
    assert ok.run.ok, ok.run.transcript
    arrived(postfix, outsider, control)
    never_relayed(postfix, marker)


def test_a_name_split_across_quoted_lines_to_an_outsider_is_refused(
    main_gateway: PolicyGateway, postfix: PostfixInstance
) -> None:
    marker, outsider = token(), unique_address("rp-quoted")
    body = f"Hi,\r\n\r\n> > On Monday Elif\r\n> Marchetti told us what happened ({marker}).\r\n"
    result = main_gateway.send(compose(marker, to=f"<{outsider}>", body=body), [outsider, CONDUCT])

    assert not result.run.ok
    assert result.final.startswith("550 5.7.1"), result.run.transcript
    assert any("reporter-protection" in line and "name" in line for line in result.replies)
    assert_no_protected_identity(result.reply_text)
    never_relayed(postfix, marker)


# --- ambiguous input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("duplicate", "reason"),
    [
        pytest.param("Subject: a second subject", "Subject", id="two-subjects"),
        pytest.param("Content-Transfer-Encoding: base64", "Content-Transfer-Encoding", id="two-encodings"),
    ],
)
def test_an_ambiguous_message_is_refused_550_5_6_0(
    main_gateway: PolicyGateway, postfix: PostfixInstance, duplicate: str, reason: str
) -> None:
    marker, outsider = token(), unique_address("ambiguous")
    result = main_gateway.send(
        compose(marker, to=f"<{outsider}>", headers=(duplicate,)),
        [outsider, CONDUCT],
        subject="a second subject",
    )

    assert not result.run.ok
    assert result.replies[0].startswith("550-5.6.0 Message not sent: it is malformed"), result.run.transcript
    assert any(reason in line for line in result.replies[1:-1]), "the reason is given"
    assert result.final == f"550 5.6.0 Reference: {result.reference}"
    assert_no_protected_identity(result.reply_text)


def test_two_from_headers_are_refused_550_5_6_0_before_the_policy_runs(main_gateway: PolicyGateway) -> None:
    marker, outsider = token(), unique_address("two-from")
    duplicate = ("From: Someone Else <else@example.net>",)
    result = main_gateway.send(compose(marker, to=f"<{outsider}>", headers=duplicate), [outsider, CONDUCT])

    assert not result.run.ok
    assert result.final == "550 5.6.0 Message refused: it has more than one From header", (
        result.run.transcript
    )


# --- relay header, audit trail ---------------------------------------------------------------------------


def test_a_relay_header_from_the_client_is_replaced_by_exactly_one_of_the_gateway(
    main_gateway: PolicyGateway, postfix: PostfixInstance
) -> None:
    marker, outsider = token(), unique_address("relay-header")
    forged = (
        "X-Conduct-Gateway: ref=forged; changed=none",
        "X-Conduct-Gateway: ref=forged-too; changed=none",
    )
    result = main_gateway.send(compose(marker, to=f"<{outsider}>", headers=forged), [outsider, CONDUCT])

    assert result.run.ok, result.run.transcript
    delivered = arrived(postfix, outsider, marker)
    assert delivered.header_values(RELAY_HEADER) == [f"ref={result.reference}; changed=none"]


def audit_entries(gateway: GatewayProcess) -> list[dict[str, object]]:
    shown = gateway.cli("audit", "show", "--json")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    return [json.loads(line) for line in shown.stdout.splitlines() if line.strip()]


def test_every_decision_is_in_the_audit_trail_which_verifies_and_holds_no_content(
    main_gateway: PolicyGateway, strict_gateway: PolicyGateway, postfix: PostfixInstance
) -> None:
    # One decision of each kind here too, so the test stands alone when run by itself.
    marker, refused, outsider = token(), token(), unique_address("audit")
    subject = f"Audit check about Elif Marchetti {refused}"
    assert main_gateway.send(compose(marker, to=f"<{outsider}>", cc=None), [outsider], subject="").run.ok
    assert not main_gateway.send(
        compose(refused, to=f"<{outsider}>", subject=subject), [outsider, CONDUCT], subject=subject
    ).run.ok
    arrived(postfix, outsider, marker)

    for gateway in (main_gateway, strict_gateway):
        entries = audit_entries(gateway.process)
        recorded = {str(entry.get("queue_id")): str(entry.get("reply", "")) for entry in entries}
        for reference, reply in gateway.decisions:
            assert reference in recorded, f"{reference} ({reply}) is not in the audit trail"
            assert recorded[reference].split()[0] == reply.split()[0], (reference, recorded[reference], reply)
        assert all(entry.get("policy") for entry in entries if entry.get("queue_id"))

        verified = gateway.process.cli("audit", "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert verified.stdout.startswith("OK: "), verified.stdout

        trail = b"".join(
            path.read_bytes() for path in (gateway.process.state_dir / "audit").iterdir() if path.is_file()
        )
        text = trail.decode(errors="replace").lower()
        for secret in (*PROTECTED, *PROTECTED_WORDS, *gateway.subjects):
            assert secret.lower() not in text, f"the audit trail holds {secret!r}"
        assert not any(ref_marker in text for ref_marker in (marker, refused, outsider.split("@")[0]))
