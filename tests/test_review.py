"""Second-member review through the real policy screener: hold, requests, decisions by reply, expiry."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import logging
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.decision.policy_screener import PolicyScreener
from gateway.decision.screening import Accept, Outgoing, Submission
from gateway.mail.notices import NOTICE_HEADER
from gateway.replies import Reply
from gateway.settings import GatewaySettings, PolicySettings, ReviewSettings, ServerSettings
from gateway.state.audit import audit_dir
from gateway.state.audit_reading import read_entries, verify
from gateway.state.holds import HoldStore, token_hash
from gateway.state.opening import open_state

POLICY = """\
organisation:
  conduct_address: conduct@example.org
  members:
    - name: Ada Quill
      addresses: [ada@example.org, ada.q@example.org]
    - name: Ben Ink
      addresses: [ben@example.org]
    - name: Cleo Nib
      addresses: [cleo@example.org]
rules:
  - rule: conduct-cc
    action: rewrite
    params:
      display_name: Conduct Committee
  - rule: reporter-protection
    action: hold
cases:
  - code: home shelf
    reporters:
      - id: quiet heron
        names: [Jin Park]
"""
OUTSIDER = "olive@example.net"
CONDUCT = "conduct@example.org"


def held_message(body: str = "Hello Olive,\r\n\r\nJin Park reported the incident.\r\n") -> bytes:
    return (
        "From: Ada Quill <ada@example.org>\r\n"
        f"To: Olive Out <{OUTSIDER}>\r\n"
        "Subject: About the incident\r\n"
        "Message-ID: <orig-1@example.org>\r\n"
        "Date: Sat, 01 Mar 2025 10:00:00 +0000\r\n"
        "X-Conduct-Gateway-Approved-By: Forged <forger@example.org>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"\r\n{body}"
    ).encode()


def reply(
    to: str, first_line: str, *, sender: str = "ben@example.org", html: bool = False, queue_id: str = "R1"
) -> Submission:
    if html:
        body = f"<html><body><p>{first_line}</p><blockquote>approve</blockquote></body></html>\r\n"
        kind = "text/html"
    else:
        body = f"{first_line}\r\n\r\n-- \r\nSent from my phone\r\n\r\n> reject everything\r\n"
        kind = "text/plain"
    content = (
        f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: Re: Review needed\r\nMessage-ID: <{queue_id}@x>\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: {kind}; charset=utf-8\r\n\r\n{body}"
    ).encode()
    return Submission(
        queue_id=queue_id, mail_from=sender, rcpt_tos=(to,), authenticated_as=sender, content=content
    )


def submission(content: bytes | None = None, queue_id: str = "Q1") -> Submission:
    return Submission(
        queue_id=queue_id,
        mail_from="ada@example.org",
        rcpt_tos=(OUTSIDER,),
        authenticated_as="ada@example.org",
        content=content or held_message(),
    )


def parsed(outgoing: Outgoing) -> email.message.EmailMessage:
    message = email.message_from_bytes(outgoing.content, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


def reply_to(outgoing: Outgoing) -> str:
    match = re.search(rb"^Reply-To: <([^>]+)>", outgoing.content, re.MULTILINE)
    assert match, outgoing.content[:400]
    return match.group(1).decode()


def kind(outgoing: Outgoing) -> str:
    return str(parsed(outgoing)[NOTICE_HEADER])


@pytest.fixture
def settings(tmp_path: Path) -> GatewaySettings:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    return GatewaySettings(
        state_dir=tmp_path / "state",
        policy=PolicySettings(path=policy),
        server=ServerSettings(hostname="gateway.example.test"),
        review=ReviewSettings(notices_per_hour=50),
    )


@pytest.fixture
def screener(settings: GatewaySettings) -> Iterator[PolicyScreener]:
    with PolicyScreener.from_settings(settings) as opened:
        yield opened


def hold(screener: PolicyScreener, queue_id: str = "Q1") -> tuple[Accept, dict[str, Outgoing]]:
    """Hold a message and confirm it as the SMTP layer would; the messages by recipient/kind."""
    sub = submission(queue_id=queue_id)
    result = screener.screen(sub)
    assert isinstance(result, Accept), result
    screener.accepted(sub, result)
    by = {f"{m.rcpt_tos[0]}:{kind(m)}": m for m in result.extra}
    return result, by


def decide(screener: PolicyScreener, sub: Submission) -> Accept | Reply:
    result = screener.screen(sub)
    if isinstance(result, Accept):
        screener.accepted(sub, result)
    return result


def audit_reviews(settings: GatewaySettings) -> list[dict[str, object]]:
    return [
        dict(e.fields) for e in read_entries(audit_dir(settings.state_dir)) if e.fields["event"] == "review"
    ]


class TestHold:
    def test_held_message_is_not_spooled_and_the_reply_says_why_and_which_reference(
        self, screener: PolicyScreener
    ) -> None:
        result, _ = hold(screener)
        assert result.spool_submission is False
        assert result.verdict == "hold"
        assert result.reply_lines[0] == "Held for review by a second committee member: PROTECTED_IDENTITY."
        assert result.reply_lines[1] == (
            "Reference Q1. You will get an e-mail when it is approved or rejected."
        )
        assert all(line.isascii() and len(line) < 200 for line in result.reply_lines)

    def test_a_sender_address_outside_the_policy_is_told_at_once_that_no_notice_will_come(
        self, screener: PolicyScreener, caplog: pytest.LogCaptureFixture
    ) -> None:
        # An alias in the users file that the policy's member entry does not list.
        sub = dataclasses.replace(submission(), mail_from="ada.alias@example.net")
        with caplog.at_level(logging.WARNING, logger="gateway"):
            result = screener.screen(sub)
        assert isinstance(result, Accept)
        assert result.verdict == "hold"
        assert "You will get an e-mail" not in " ".join(result.reply_lines)
        assert result.reply_lines[1] == "Reference Q1. No e-mail about the outcome can be sent to you:"
        assert (
            result.reply_lines[2]
            == "ada.alias@example.net is not one of the committee's addresses in the policy."
        )
        assert all(line.isascii() and len(line) < 200 for line in result.reply_lines)
        assert not any(outgoing.rcpt_tos == ("ada.alias@example.net",) for outgoing in result.extra)
        assert "event=notice-not-sent kind=held reference=Q1" in caplog.text

    def test_review_requests_go_to_the_other_members_only_with_the_original_attached(
        self, screener: PolicyScreener
    ) -> None:
        _, by = hold(screener)
        assert set(by) == {
            "ben@example.org:review-request",
            "cleo@example.org:review-request",
            "ada@example.org:held",
        }
        request = by["ben@example.org:review-request"]
        assert request.essential and request.mail_from == ""
        message = parsed(request)
        assert message["Auto-Submitted"] == "auto-generated"
        text = message.get_body(preferencelist=("plain",))
        assert text is not None
        body = text.get_content()
        assert (
            "PROTECTED_IDENTITY" in body and "approve" in body and "added conduct@example.org to Cc" in body
        )
        [attached] = [
            part for part in message.iter_attachments() if part.get_content_type() == "message/rfc822"
        ]
        assert held_message() in request.content  # the exact bytes, attached as they were sent
        assert attached is not None
        assert reply_to(request) != reply_to(by["cleo@example.org:review-request"])

    def test_sender_notice_is_an_auto_reply_to_the_original(self, screener: PolicyScreener) -> None:
        _, by = hold(screener)
        notice = parsed(by["ada@example.org:held"])
        assert notice["Auto-Submitted"] == "auto-replied"
        assert notice["In-Reply-To"] == "<orig-1@example.org>"
        assert notice["References"] == "<orig-1@example.org>"
        assert notice["From"].addresses[0].addr_spec == CONDUCT
        assert "Q1" in notice.get_body().get_content()  # type: ignore[union-attr]

    def test_hold_is_durable_private_and_keeps_only_token_hashes(
        self, screener: PolicyScreener, settings: GatewaySettings
    ) -> None:
        _, by = hold(screener)
        folder = settings.state_dir / "holds"
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        files = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        assert files == ["Q1.json", "Q1.original", "Q1.release"]
        for name in files:
            assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600
        token = reply_to(by["ben@example.org:review-request"]).split("+")[1].split("@")[0]
        assert len(token) >= 32
        everything = b"".join((folder / name).read_bytes() for name in files)
        assert token.encode() not in everything
        assert token_hash(token).encode() in (folder / "Q1.json").read_bytes()
        record = HoldStore(folder).get("Q1")
        assert record.confirmed and record.required_approvals == 1
        assert {r.address for r in record.reviewers} == {"ben@example.org", "cleo@example.org"}
        assert "private_detail" not in (folder / "Q1.json").read_text()

    def test_hold_decision_is_audited_without_content(
        self, screener: PolicyScreener, settings: GatewaySettings
    ) -> None:
        hold(screener)
        entries = [dict(e.fields) for e in read_entries(audit_dir(settings.state_dir))]
        assert entries[-1]["verdict"] == "hold" and entries[-1]["reply"] == "250 2.0.0"
        text = (audit_dir(settings.state_dir) / "audit.jsonl").read_text()
        assert "Jin" not in text and "incident" not in text

    def test_not_stored_removes_the_hold(self, screener: PolicyScreener, settings: GatewaySettings) -> None:
        sub = submission()
        result = screener.screen(sub)
        assert isinstance(result, Accept)
        screener.not_stored(sub, result)
        assert not list((settings.state_dir / "holds").glob("Q1.*"))

    def test_a_hold_left_unconfirmed_by_a_crash_is_discarded_and_the_retry_holds_once(
        self, settings: GatewaySettings
    ) -> None:
        with PolicyScreener.from_settings(settings) as first:
            assert isinstance(first.screen(submission()), Accept)
            # ... and the gateway dies before the 250: accepted() and not_stored() never run.
        with PolicyScreener.from_settings(settings) as second:
            assert second.review is not None
            second.review_housekeeping()
            assert list((settings.state_dir / "holds").glob("Q1.*"))  # too fresh: maybe still committing
            in_flight = submission(queue_id="Q2")
            assert isinstance(second.screen(in_flight), Accept)  # a transaction still under way here
            second.review.clock = lambda: time.time() + 3600
            second.review_housekeeping()
            assert not list((settings.state_dir / "holds").glob("Q1.*"))  # abandoned: gone
            assert list((settings.state_dir / "holds").glob("Q2.*"))  # its transaction is live
            # The client's retry (a new transaction) is the one hold of the message.
            _, by = hold(second, queue_id="Q3")
            assert by
            remaining = {path.name.split(".")[0] for path in (settings.state_dir / "holds").glob("*.json")}
            assert remaining == {"Q2", "Q3"}
        assert [e["review"] for e in audit_reviews(settings) if e["queue_id"] == "Q1"][-1] == "abandoned"

    def test_a_sender_cannot_forge_the_approval_header_on_ordinary_mail(
        self, screener: PolicyScreener
    ) -> None:
        content = held_message(body="Hello Olive, nothing special.\r\n")
        result = screener.screen(Submission("Q9", "ada@example.org", (OUTSIDER,), "ada@example.org", content))
        assert isinstance(result, Accept) and result.spool_submission
        assert b"Forged" not in result.content


class TestDecisions:
    def test_approval_by_another_member_releases_the_exact_bytes_with_the_approver(
        self, screener: PolicyScreener, settings: GatewaySettings
    ) -> None:
        _, by = hold(screener)
        release_bytes = (settings.state_dir / "holds" / "Q1.release").read_bytes()
        result = decide(screener, reply(reply_to(by["ben@example.org:review-request"]), "Approve."))
        assert isinstance(result, Accept) and result.spool_submission is False
        assert result.reply_lines == ("Approved: message Q1 released for delivery. Thank you for reviewing.",)
        [release] = [m for m in result.extra if m.mail_from == "ada@example.org"]
        assert (
            release.content == b"X-Conduct-Gateway-Approved-By: Ben Ink <ben@example.org>\r\n" + release_bytes
        )
        assert release.essential
        assert set(release.rcpt_tos) == {OUTSIDER, CONDUCT}
        assert (
            b"Forged" not in release.content
            and b"Cc: Conduct Committee <conduct@example.org>" in release.content
        )
        [notice] = [m for m in result.extra if m.mail_from == ""]
        assert notice.rcpt_tos == ("ada@example.org",) and kind(notice) == "approved"
        assert HoldStore.in_state_dir(settings.state_dir).get("Q1").released
        assert [e["review"] for e in audit_reviews(settings)] == ["approve", "release"]
        assert verify(audit_dir(settings.state_dir)).ok

    def test_first_decision_wins_and_later_ones_are_told_politely(self, screener: PolicyScreener) -> None:
        _, by = hold(screener)
        decide(screener, reply(reply_to(by["ben@example.org:review-request"]), "approve"))
        late = decide(
            screener,
            reply(
                reply_to(by["cleo@example.org:review-request"]), "reject too early", sender="cleo@example.org"
            ),
        )
        assert isinstance(late, Accept)
        assert late.reply_lines[0].startswith("Already decided: message Q1 was approved and sent by Ben Ink.")
        assert [kind(m) for m in late.extra] == ["already-decided"]
        assert late.extra[0].rcpt_tos == ("cleo@example.org",)

    def test_a_reused_token_does_not_release_twice(self, screener: PolicyScreener) -> None:
        _, by = hold(screener)
        address = reply_to(by["ben@example.org:review-request"])
        decide(screener, reply(address, "approve"))
        again = decide(screener, reply(address, "approve", queue_id="R2"))
        assert isinstance(again, Accept)
        assert again.reply_lines[0].startswith("Already decided")
        assert not any(m.mail_from == "ada@example.org" for m in again.extra)

    def test_an_altered_token_is_refused(self, screener: PolicyScreener) -> None:
        _, by = hold(screener)
        address = reply_to(by["ben@example.org:review-request"])
        local, domain = address.split("@")
        altered = local[:-1] + ("a" if local[-1] != "a" else "b") + "@" + domain
        result = decide(screener, reply(altered, "approve"))
        assert isinstance(result, Reply) and (result.code, result.status) == (550, "5.7.1")
        assert "not valid" in result.lines[0]

    def test_self_approval_is_refused_with_the_sender_token_or_a_reviewer_token(
        self, screener: PolicyScreener, settings: GatewaySettings
    ) -> None:
        _, by = hold(screener)
        for address in (reply_to(by["ada@example.org:held"]), reply_to(by["ben@example.org:review-request"])):
            result = decide(screener, reply(address, "approve", sender="ada@example.org"))
            assert isinstance(result, Reply) and result.code == 550
            assert "you cannot review it" in result.lines[0]
        # Also from another address of the same member.
        result = decide(
            screener, reply(reply_to(by["ada@example.org:held"]), "approve", sender="ada.q@example.org")
        )
        assert isinstance(result, Reply) and "cannot review" in result.lines[0]
        assert HoldStore.in_state_dir(settings.state_dir).get("Q1").status == "held"
        assert {e["reason"] for e in audit_reviews(settings)} == {"self-review"}

    def test_a_non_member_account_cannot_decide(self, screener: PolicyScreener) -> None:
        _, by = hold(screener)
        result = decide(
            screener,
            reply(reply_to(by["ben@example.org:review-request"]), "approve", sender="demo@example.org"),
        )
        assert isinstance(result, Reply) and "only committee members" in result.lines[0]

    def test_a_token_only_works_for_its_member(self, screener: PolicyScreener) -> None:
        _, by = hold(screener)
        result = decide(
            screener,
            reply(reply_to(by["ben@example.org:review-request"]), "approve", sender="cleo@example.org"),
        )
        assert isinstance(result, Reply) and "another committee member" in result.lines[0]

    def test_mail_to_a_review_address_is_never_relayed_even_with_other_recipients(
        self, screener: PolicyScreener
    ) -> None:
        _, by = hold(screener)
        sub = reply(reply_to(by["ben@example.org:review-request"]), "approve")
        mixed = Submission(
            sub.queue_id, sub.mail_from, (*sub.rcpt_tos, OUTSIDER), sub.authenticated_as, sub.content
        )
        result = screener.screen(mixed)
        assert isinstance(result, Reply) and "review address alone" in result.lines[0]

    def test_reject_returns_the_message_to_the_sender_with_the_reason(
        self, screener: PolicyScreener, settings: GatewaySettings
    ) -> None:
        _, by = hold(screener)
        result = decide(
            screener,
            reply(
                reply_to(by["cleo@example.org:review-request"]),
                "REJECT: names the reporter",
                sender="cleo@example.org",
            ),
        )
        assert isinstance(result, Accept)
        assert result.reply_lines[0].startswith("Recorded: message Q1 rejected")
        [notice] = result.extra
        assert notice.rcpt_tos == ("ada@example.org",) and kind(notice) == "rejected"
        text = parsed(notice).get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
        assert "Cleo Nib" in text and "names the reporter" in text
        assert held_message() in notice.content
        assert HoldStore.in_state_dir(settings.state_dir).get("Q1").status == "rejected"
        assert "names the reporter" not in (audit_dir(settings.state_dir) / "audit.jsonl").read_text()

    def test_reject_without_a_reason_is_not_understood(self, screener: PolicyScreener) -> None:
        _, by = hold(screener)
        result = decide(screener, reply(reply_to(by["ben@example.org:review-request"]), "reject"))
        assert isinstance(result, Reply) and result.status == "5.6.0"

    def test_html_reply_is_read(self, screener: PolicyScreener) -> None:
        _, by = hold(screener)
        result = decide(screener, reply(reply_to(by["ben@example.org:review-request"]), "Approve", html=True))
        assert isinstance(result, Accept) and result.reply_lines[0].startswith("Approved")

    def test_sender_can_cancel_and_reviewers_are_then_told(self, screener: PolicyScreener) -> None:
        _, by = hold(screener)
        result = decide(
            screener, reply(reply_to(by["ada@example.org:held"]), "cancel", sender="ada@example.org")
        )
        assert isinstance(result, Accept) and result.reply_lines[0].startswith("Cancelled: message Q1")
        assert [kind(m) for m in result.extra] == ["cancelled"]
        late = decide(screener, reply(reply_to(by["ben@example.org:review-request"]), "approve"))
        assert isinstance(late, Accept) and "withdrawn by the sender" in late.reply_lines[0]

    def test_a_reviewer_cannot_cancel(self, screener: PolicyScreener) -> None:
        _, by = hold(screener)
        result = decide(screener, reply(reply_to(by["ben@example.org:review-request"]), "cancel"))
        assert isinstance(result, Reply) and "only the sender" in result.lines[0]

    def test_a_failed_spool_commit_undoes_the_decision(
        self, screener: PolicyScreener, settings: GatewaySettings
    ) -> None:
        _, by = hold(screener)
        sub = reply(reply_to(by["ben@example.org:review-request"]), "approve")
        result = screener.screen(sub)
        assert isinstance(result, Accept)
        screener.not_stored(sub, result)
        record = HoldStore.in_state_dir(settings.state_dir).get("Q1")
        assert record.status == "held" and not record.decisions
        retried = decide(
            screener, reply(reply_to(by["ben@example.org:review-request"]), "approve", queue_id="R2")
        )
        assert isinstance(retried, Accept) and retried.reply_lines[0].startswith("Approved")

    def test_two_approvals_needed_releases_only_at_quorum(
        self, screener: PolicyScreener, settings: GatewaySettings
    ) -> None:
        _, by = hold(screener)
        store = HoldStore.in_state_dir(settings.state_dir)
        store.save(store.get("Q1").model_copy(update={"required_approvals": 2}))
        first = decide(screener, reply(reply_to(by["ben@example.org:review-request"]), "approve"))
        assert isinstance(first, Accept) and first.reply_lines[0].startswith("Recorded: your approval")
        [progress] = first.extra  # only the sender's progress notice: nothing released
        assert progress.rcpt_tos == ("ada@example.org",) and b"1 of 2 approvals" in progress.content
        second = decide(
            screener,
            reply(reply_to(by["cleo@example.org:review-request"]), "approve", sender="cleo@example.org"),
        )
        assert isinstance(second, Accept)
        [release] = [m for m in second.extra if m.mail_from]
        assert release.content.startswith(
            b"X-Conduct-Gateway-Approved-By: Ben Ink <ben@example.org>, Cleo Nib <cleo@example.org>\r\n"
        )


class TestRestartAndExpiry:
    def test_a_restart_keeps_the_hold_and_its_tokens(self, settings: GatewaySettings) -> None:
        with PolicyScreener.from_settings(settings) as first:
            _, by = hold(first)
        with PolicyScreener.from_settings(settings) as second:
            result = decide(second, reply(reply_to(by["ben@example.org:review-request"]), "approve"))
        assert isinstance(result, Accept) and result.reply_lines[0].startswith("Approved")

    def test_an_approval_a_crash_kept_out_of_the_spool_is_released_after_restart(
        self, settings: GatewaySettings
    ) -> None:
        """Nothing approved is lost: the decision is on disk before the release is spooled."""
        with PolicyScreener.from_settings(settings) as first:
            _, by = hold(first)
            approval = first.screen(reply(reply_to(by["ben@example.org:review-request"]), "approve"))
            assert isinstance(approval, Accept)
            [release] = [m for m in approval.extra if m.rcpt_tos == (OUTSIDER, CONDUCT)]
            assert first.unreleased_holds() == []  # still in flight in this process: not ours to redo
            # ... and the gateway dies here: the release never reaches the spool, accepted() never runs.
        with PolicyScreener.from_settings(settings) as second:
            assert second.review is not None
            assert second.unreleased_holds() == []  # a decision this fresh may still be committing
            second.review.clock = lambda: time.time() + 120
            [(reference, recovered)] = second.unreleased_holds()
            assert reference == "Q1"
            assert recovered.queue_id == release.queue_id  # the same id: the spool can tell a duplicate
            assert recovered.rcpt_tos == release.rcpt_tos and recovered.content == release.content
            second.release_recovered(reference)
            assert second.unreleased_holds() == []
            assert HoldStore.in_state_dir(settings.state_dir).get("Q1").released

    def test_expiry_tells_the_sender_and_sends_nothing_else(
        self, screener: PolicyScreener, settings: GatewaySettings
    ) -> None:
        _, by = hold(screener)
        assert screener.review_housekeeping() == ()
        assert screener.review is not None
        screener.review.clock = lambda: time.time() + 73 * 3600
        notices = screener.review_housekeeping()
        assert [(m.rcpt_tos, kind(m), m.mail_from) for m in notices] == [
            (("ada@example.org",), "expired", "")
        ]
        assert b"Jin Park" not in notices[0].content  # the expiry notice carries headers only
        assert HoldStore.in_state_dir(settings.state_dir).get("Q1").status == "expired"
        assert screener.review_housekeeping() == ()
        late = decide(screener, reply(reply_to(by["ben@example.org:review-request"]), "approve"))
        assert isinstance(late, Accept) and "expired" in late.reply_lines[0]
        assert not any(m.mail_from for m in late.extra)

    def test_decided_holds_are_deleted_after_the_retention_and_held_ones_are_kept(
        self, screener: PolicyScreener, settings: GatewaySettings
    ) -> None:
        """Held mail must not stay on disk forever once it has been decided."""
        store = HoldStore.in_state_dir(settings.state_dir)
        _, by = hold(screener, "Q1")
        hold(screener, "Q2")
        assert isinstance(
            decide(screener, reply(reply_to(by["ben@example.org:review-request"]), "reject no")), Accept
        )
        assert screener.review is not None
        screener.review_housekeeping()
        assert {r.reference for r in store.records()} == {"Q1", "Q2"}  # within the retention

        screener.review.clock = lambda: time.time() + settings.review.decided_retention + 60
        screener.review_housekeeping()

        assert [r.reference for r in store.records()] == ["Q2"]  # still held: kept (now expired)
        assert sorted(p.name for p in store.root.glob("Q1.*")) == []
        assert audit_reviews(settings)[-1]["review"] in {"prune", "expire"}
        assert any(e["review"] == "prune" and e["queue_id"] == "Q1" for e in audit_reviews(settings))

    def test_cli_decisions_reach_the_audit_trail_through_the_outbox(
        self, screener: PolicyScreener, settings: GatewaySettings
    ) -> None:
        audit = open_state(settings).audit
        audit.append_later(
            "review", {"queue_id": "Q1", "review": "approve", "member": "ben@example.org", "via": "cli"}
        )
        screener.review_housekeeping()
        assert audit_reviews(settings)[-1]["recorded_later"] is True
        assert audit.waiting() == []


def test_a_warn_finding_delivers_and_sends_one_notice_listing_the_warnings(tmp_path: Path) -> None:
    policy = tmp_path / "warn.yaml"
    policy.write_text(POLICY.replace("action: hold", "action: warn"), encoding="utf-8")
    settings = GatewaySettings(state_dir=tmp_path / "state", policy=PolicySettings(path=policy))
    with PolicyScreener.from_settings(settings) as screener:
        result = screener.screen(submission())
    assert isinstance(result, Accept) and result.spool_submission and result.verdict == "rewrite"
    [notice] = result.extra
    assert notice.rcpt_tos == ("ada@example.org",) and kind(notice) == "warnings"
    message = parsed(notice)
    assert message["In-Reply-To"] == "<orig-1@example.org>"
    text = message.get_body().get_content()  # type: ignore[union-attr]
    assert text.count("PROTECTED_IDENTITY") == 1 and "CONDUCT" not in text


class _Unreleased:
    """A screener with one approval a crash kept out of the spool."""

    def __init__(self, release: Outgoing) -> None:
        self.release = release
        self.recovered: list[str] = []

    def unreleased_holds(self) -> list[tuple[str, Outgoing]]:
        return [] if self.recovered else [("Q1", self.release)]

    def release_recovered(self, reference: str) -> None:
        self.recovered.append(reference)


def _release(queue_id: str) -> Outgoing:
    return Outgoing(
        queue_id=queue_id,
        mail_from="ada@example.org",
        rcpt_tos=(OUTSIDER,),
        content=held_message(),
        essential=True,
        authenticated_as="ada@example.org",
    )


async def test_a_recovered_release_is_spooled_once(tmp_path: Path) -> None:
    from gateway.app import recover_releases
    from gateway.state.spool import Spool

    spool = Spool(tmp_path / "spool")
    queue_id = Spool.new_queue_id()
    screener = _Unreleased(_release(queue_id))
    await recover_releases(screener, spool)  # type: ignore[arg-type]
    assert screener.recovered == ["Q1"]
    assert spool.load(queue_id).content == held_message()
    await recover_releases(screener, spool)  # type: ignore[arg-type]
    assert [entry.envelope.queue_id for entry in spool.entries()] == [queue_id]


async def test_a_release_already_in_the_spool_is_only_marked(tmp_path: Path) -> None:
    from gateway.app import recover_releases
    from gateway.review.outgoing import spool_outgoing
    from gateway.state.spool import Spool

    spool = Spool(tmp_path / "spool")
    queue_id = Spool.new_queue_id()
    release = _release(queue_id)
    assert await spool_outgoing(spool, [release]) == []  # the crash came after the commit
    screener = _Unreleased(release)
    await recover_releases(screener, spool)  # type: ignore[arg-type]
    assert screener.recovered == ["Q1"]
    assert [entry.envelope.queue_id for entry in spool.entries()] == [queue_id]  # not twice


@pytest.mark.parametrize("automatic", [False, True])
def test_the_sender_of_a_held_automatic_message_is_not_told_of_its_approval(
    screener: PolicyScreener, automatic: bool
) -> None:
    """RFC 3834: the approval of a held auto-submitted message answers nobody; a person's is told."""
    content = held_message()
    if automatic:
        content = b"Auto-Submitted: auto-replied\r\n" + content
    sub = submission(content)
    held = screener.screen(sub)
    assert isinstance(held, Accept)
    screener.accepted(sub, held)
    by = {f"{m.rcpt_tos[0]}:{kind(m)}": m for m in held.extra}
    result = decide(screener, reply(reply_to(by["ben@example.org:review-request"]), "Approve."))
    assert isinstance(result, Accept)
    assert result.reply_lines == ("Approved: message Q1 released for delivery. Thank you for reviewing.",)
    to_sender = [kind(m) for m in result.extra if m.mail_from == "" and m.rcpt_tos == ("ada@example.org",)]
    assert to_sender == ([] if automatic else ["approved"])


@pytest.mark.parametrize(
    ("field", "decides"),
    [
        ("Auto-Submitted: auto-replied", False),
        ("Auto-Submitted: auto-generated", False),
        ('auto-submitted:  Auto-Notified; owner-email="ben@example.org"', False),
        ("Auto-Submitted: no", True),
        (None, True),
    ],
)
def test_an_automatic_reply_to_a_review_address_never_decides(
    screener: PolicyScreener, settings: GatewaySettings, field: str | None, decides: bool
) -> None:
    """An out-of-office answer quoting the review request is refused, audited, and leaves it held."""
    _, by = hold(screener)
    answer = reply(reply_to(by["ben@example.org:review-request"]), "approve")
    if field is not None:
        answer = dataclasses.replace(answer, content=field.encode() + b"\r\n" + answer.content)
    result = decide(screener, answer)
    held = HoldStore.in_state_dir(settings.state_dir).get("Q1")
    if decides:
        assert isinstance(result, Accept) and held.released
        return
    assert isinstance(result, Reply) and result.code == 550 and "sent automatically" in str(result)
    assert held.status == "held"
    assert audit_reviews(settings)[-1]["reason"] == "automatic-reply"
