"""`conduct-gateway queue list|show|retry|delete` on a real spool."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gateway.cli import main
from gateway.state.spool import DeliveryStatus, QueueState, RecipientStatus, Spool, SpoolEnvelope

SECRET_SUBJECT = "Report about Jordan Example at the sprint"
SECRET_BODY = "I want to report what happened on Tuesday evening."

PLAIN = (
    "From: Alice Reporter <alice@example.org>\r\n"
    "To: Committee <conduct@example.org>, Bob Witness <bob@example.org>\r\n"
    f"Subject: {SECRET_SUBJECT}\r\n"
    "Date: Sun, 24 Nov 2024 06:31:02 +0000\r\n"
    "Message-ID: <first@example.org>\r\n"
    "X-Reporter-Name: Alice Reporter\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "\r\n"
    f"{SECRET_BODY}\r\n"
).encode()

MULTIPART = (
    "From: alice@example.org\r\n"
    "To: conduct@example.org\r\n"
    "Subject: =?utf-8?q?Encoded_secret_subject?=\r\n"
    "MIME-Version: 1.0\r\n"
    'Content-Type: multipart/mixed; boundary="b1"\r\n'
    "\r\n"
    "--b1\r\n"
    "Content-Type: text/plain\r\n"
    "\r\n"
    f"{SECRET_BODY}\r\n"
    "--b1\r\n"
    'Content-Type: application/pdf; name="statement-of-Jordan-Example.pdf"\r\n'
    'Content-Disposition: attachment; filename="statement-of-Jordan-Example.pdf"\r\n'
    "Content-Transfer-Encoding: base64\r\n"
    "\r\n"
    "JVBERi0=\r\n"
    "--b1--\r\n"
).encode()


def run(config_file: Path, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, ["queue", *args, "--config", str(config_file)], input=input)


@pytest.fixture
def spool(config_file: Path) -> Spool:
    return Spool(config_file.parent / "state" / "spool")


def commit(spool: Spool, content: bytes = PLAIN, rcpts: tuple[str, ...] = ("conduct@example.org",)) -> str:
    queue_id = Spool.new_queue_id()
    envelope = SpoolEnvelope(
        queue_id=queue_id,
        mail_from="alice@example.org",
        rcpt_tos=rcpts,
        authenticated_as="alice@example.org",
        received_at=time.time() - 125,
        client_address="127.0.0.1",
    )
    asyncio.run(spool.commit(envelope, content))
    return queue_id


def defer(spool: Spool, queue_id: str, status: DeliveryStatus) -> None:
    async def go() -> None:
        await spool.write_status(queue_id, status)
        await spool.move(queue_id, QueueState.INCOMING, QueueState.DEFERRED)

    asyncio.run(go())


def half_delivered(rcpts: tuple[str, str]) -> DeliveryStatus:
    now = time.time()
    return DeliveryStatus(
        recipients=(
            RecipientStatus(rcpts[0], "delivered", "250 2.0.0 Ok: queued", now, "mx.example.org"),
            RecipientStatus(rcpts[1], "deferred", "451 4.3.0 mailbox busy", now, "mx.example.org"),
        ),
        attempts=2,
        last_attempt_at=now - 30,
        next_attempt_at=now + 600,
    )


class TestList:
    def test_no_spool_yet(self, config_file: Path) -> None:
        result = run(config_file, "list")
        assert result.exit_code == 2
        assert "no spool at" in result.stderr
        assert not (config_file.parent / "state").exists()  # looking never creates anything

    def test_empty_spool(self, config_file: Path, spool: Spool) -> None:
        result = run(config_file, "list")
        assert result.exit_code == 0
        assert result.stdout == ""
        assert "0 message(s) listed" in result.stderr

    def test_lists_pending_and_problem_messages_but_not_done_ones(
        self, config_file: Path, spool: Spool
    ) -> None:
        fresh = commit(spool)
        waiting = commit(spool, rcpts=("conduct@example.org", "bob@example.org"))
        defer(spool, waiting, half_delivered(("conduct@example.org", "bob@example.org")))
        finished = commit(spool)
        asyncio.run(spool.move(finished, QueueState.INCOMING, QueueState.DONE))
        (spool.folder(QueueState.CORRUPT) / "BROKEN1").write_bytes(b"junk")

        result = run(config_file, "list")
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert lines[0].split() == [
            "QUEUE",
            "ID",
            "STATE",
            "AGE",
            "SIZE",
            "ATTEMPTS",
            "RECIPIENTS",
            "SENDER",
            "/",
            "PROBLEM",
        ]
        rows = {line.split()[0]: line for line in lines[1:]}
        assert set(rows) == {fresh, waiting, "BROKEN1"}
        assert rows[fresh].split()[1:3] == ["incoming", "2m05s"]
        assert "alice@example.org" in rows[fresh]
        assert "1 delivered, 1 waiting" in rows[waiting]
        assert "1 waiting" in rows[fresh]
        assert rows[waiting].split()[1] == "deferred"
        assert "moved aside as unreadable" in rows["BROKEN1"]
        assert "1 incoming, 1 deferred, 1 done, 0 bounced, 1 corrupt" in result.stderr

        with_done = run(config_file, "list", "--all")
        assert finished in with_done.stdout

    def test_columns_are_aligned_and_never_run_together(self, config_file: Path, spool: Spool) -> None:
        commit(spool, rcpts=("conduct@example.org", "a-rather-long-recipient-address@example.org"))
        commit(spool)
        lines = run(config_file, "list").stdout.splitlines()
        starts = [lines[0].index(title) for title in ("STATE", "ATTEMPTS", "RECIPIENTS", "SENDER")]
        for line in lines[1:]:
            for start in starts:
                assert line[start - 2 : start] == "  ", (line, start)
        assert "waitingalice" not in "".join(lines)

    def test_mail_delivered_at_the_first_attempt_shows_as_delivered(
        self, config_file: Path, spool: Spool
    ) -> None:
        # The delivery worker moves such mail to done/ without writing a status file.
        finished = commit(spool, rcpts=("conduct@example.org", "bob@example.org"))
        asyncio.run(spool.move(finished, QueueState.INCOMING, QueueState.DONE))
        row = next(line for line in run(config_file, "list", "--all").stdout.splitlines() if finished in line)
        assert row.split()[1] == "done"
        assert row.split()[5] == "1"  # id, state, age, size (two words), attempts
        assert "2 delivered" in row
        assert "waiting" not in row
        shown = run(config_file, "show", finished).stdout
        assert "State:       done, delivered to every recipient at the first attempt" in shown
        assert "  bob@example.org  delivered" in shown
        assert "pending" not in shown and "not tried yet" not in shown

    @pytest.mark.parametrize(
        ("headers", "expected"),
        [
            ("X-Conduct-Gateway-Notice: review-request\r\n", "<> (gateway notice: review-request)"),
            (
                "Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n",
                "<> (delivery report)",
            ),
        ],
        ids=["review-request", "dsn"],
    )
    def test_generated_mail_says_what_it_is(
        self, config_file: Path, spool: Spool, headers: str, expected: str
    ) -> None:
        queue_id = Spool.new_queue_id()
        content = f"From: conduct@example.org\r\nTo: ada@example.org\r\n{headers}\r\nbody\r\n".encode()
        envelope = SpoolEnvelope(queue_id, "", ("ada@example.org",), "", time.time())
        asyncio.run(spool.commit(envelope, content))
        row = next(line for line in run(config_file, "list").stdout.splitlines() if queue_id in line)
        assert row.endswith(expected)

    def test_json_for_scripts(self, config_file: Path, spool: Spool) -> None:
        waiting = commit(spool, rcpts=("conduct@example.org", "bob@example.org"))
        defer(spool, waiting, half_delivered(("conduct@example.org", "bob@example.org")))
        (spool.folder(QueueState.CORRUPT) / "BROKEN1").write_bytes(b"junk")
        result = run(config_file, "list", "--json")
        assert result.exit_code == 0, result.output
        listed = {item["queue_id"]: item for item in json.loads(result.stdout)}
        assert listed[waiting]["state"] == "deferred"
        assert listed[waiting]["attempts"] == 2
        assert listed[waiting]["recipients"] == {"delivered": 1, "waiting": 1}
        assert listed[waiting]["sender"] == "alice@example.org"
        assert listed[waiting]["generated"] is None
        assert listed["BROKEN1"]["problem"] == "moved aside as unreadable"

    def test_state_filter(self, config_file: Path, spool: Spool) -> None:
        fresh = commit(spool)
        waiting = commit(spool, rcpts=("conduct@example.org", "bob@example.org"))
        defer(spool, waiting, half_delivered(("conduct@example.org", "bob@example.org")))
        result = run(config_file, "list", "--state", "deferred")
        assert waiting in result.stdout
        assert fresh not in result.stdout


class TestShow:
    def test_envelope_recipients_and_safe_headers_never_subject_or_body(
        self, config_file: Path, spool: Spool
    ) -> None:
        queue_id = commit(spool, rcpts=("conduct@example.org", "bob@example.org"))
        defer(spool, queue_id, half_delivered(("conduct@example.org", "bob@example.org")))
        result = run(config_file, "show", queue_id)
        assert result.exit_code == 0, result.output
        out = result.stdout
        assert f"Queue id:    {queue_id}" in out
        assert "State:       deferred, 2 attempt(s), last 30s ago, next in 9m" in out
        assert "from 127.0.0.1, authenticated as alice@example.org" in out
        assert "Sender:      alice@example.org" in out
        assert "  conduct@example.org  delivered: 250 2.0.0 Ok: queued [mx.example.org]" in out
        assert "  bob@example.org  deferred: 451 4.3.0 mailbox busy [mx.example.org]" in out
        assert "  From: alice@example.org\n" in out
        assert "  To: conduct@example.org, bob@example.org\n" in out
        assert "  Subject: (hidden, " in out
        assert "  X-Reporter-Name: (hidden, " in out
        assert "  Message-ID: <first@example.org>\n" in out
        assert "  Content-Type: text/plain; charset=utf-8\n" in out
        assert "Structure:   text/plain" in out
        for secret in (SECRET_SUBJECT, SECRET_BODY, "Alice Reporter", "Bob Witness", "Committee"):
            assert secret not in out

    def test_multipart_outline_without_names_or_content(self, config_file: Path, spool: Spool) -> None:
        queue_id = commit(spool, MULTIPART)
        result = run(config_file, "show", queue_id)
        assert result.exit_code == 0, result.output
        assert "State:       incoming, not tried yet" in result.stdout
        assert "Structure:   multipart/mixed: text/plain, application/pdf (2 parts)" in result.stdout
        assert "  Content-Type: multipart/mixed\n" in result.stdout
        for secret in ("Jordan", "Encoded", "secret", SECRET_BODY, "JVBERi0"):
            assert secret not in result.stdout

    def test_corrupt_entry(self, config_file: Path, spool: Spool) -> None:
        (spool.folder(QueueState.CORRUPT) / "BROKEN2").write_bytes(b"junk")
        result = run(config_file, "show", "BROKEN2")
        assert result.exit_code == 0
        assert "State:       corrupt (moved aside as unreadable)" in result.stdout

    def test_unknown_id(self, config_file: Path, spool: Spool) -> None:
        result = run(config_file, "show", "NOPE")
        assert result.exit_code == 2
        assert result.stderr == (
            "conduct-gateway: no message 'NOPE' in the spool (see: conduct-gateway queue list)\n"
        )


class TestRetry:
    def test_deferred_goes_back_to_incoming(self, config_file: Path, spool: Spool) -> None:
        queue_id = commit(spool, rcpts=("conduct@example.org", "bob@example.org"))
        defer(spool, queue_id, half_delivered(("conduct@example.org", "bob@example.org")))
        result = run(config_file, "retry", queue_id)
        assert result.exit_code == 0, result.output
        assert f"{queue_id}: sent back for immediate delivery." in result.stdout
        assert spool.locate(queue_id) is QueueState.INCOMING

    def test_all(self, config_file: Path, spool: Spool) -> None:
        ids = [commit(spool, rcpts=("conduct@example.org", "bob@example.org")) for _ in range(2)]
        for queue_id in ids:
            defer(spool, queue_id, half_delivered(("conduct@example.org", "bob@example.org")))
        result = run(config_file, "retry", "--all")
        assert result.exit_code == 0
        assert "2 deferred message(s) sent back" in result.stdout
        assert [spool.locate(i) for i in ids] == [QueueState.INCOMING, QueueState.INCOMING]

    def test_finished_mail_cannot_be_retried(self, config_file: Path, spool: Spool) -> None:
        queue_id = commit(spool)
        asyncio.run(spool.move(queue_id, QueueState.INCOMING, QueueState.BOUNCED))
        result = run(config_file, "retry", queue_id)
        assert result.exit_code == 2
        assert "only deferred mail can be retried" in result.stderr

    def test_needs_an_id_or_all(self, config_file: Path, spool: Spool) -> None:
        result = run(config_file, "retry")
        assert result.exit_code == 2
        assert "name at least one QUEUE_ID, or use --all" in result.output


class TestDelete:
    def test_asks_first_and_keeps_on_no(self, config_file: Path, spool: Spool) -> None:
        queue_id = commit(spool)
        result = run(config_file, "delete", queue_id, input="n\n")
        assert result.exit_code == 0
        assert f"Delete {queue_id} (incoming," in result.stdout
        assert f"{queue_id}: kept." in result.stdout
        assert spool.locate(queue_id) is QueueState.INCOMING

    def test_deletes_on_yes(self, config_file: Path, spool: Spool) -> None:
        queue_id = commit(spool)
        result = run(config_file, "delete", queue_id, input="y\n")
        assert result.exit_code == 0
        assert f"{queue_id}: deleted (was incoming)." in result.stdout
        assert spool.locate(queue_id) is None

    def test_yes_flag_and_status_removed(self, config_file: Path, spool: Spool) -> None:
        queue_id = commit(spool, rcpts=("conduct@example.org", "bob@example.org"))
        defer(spool, queue_id, half_delivered(("conduct@example.org", "bob@example.org")))
        result = run(config_file, "delete", "--yes", queue_id)
        assert result.exit_code == 0, result.output
        assert spool.locate(queue_id) is None
        assert not spool.status_path(queue_id).exists()

    def test_nothing_is_deleted_when_one_id_is_unknown(self, config_file: Path, spool: Spool) -> None:
        queue_id = commit(spool)
        result = run(config_file, "delete", "--yes", queue_id, "NOPE")
        assert result.exit_code == 2
        assert "no message 'NOPE'" in result.stderr
        assert spool.locate(queue_id) is QueueState.INCOMING
