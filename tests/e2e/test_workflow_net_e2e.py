"""Issue 18's reply-all net, refusal notice, committee digest and case upkeep, end to end: a real gateway
process, swaks as the members, the real Postfix upstream."""

from __future__ import annotations

import datetime
import secrets
import time
from pathlib import Path

import pytest

from gateway.decision.digest import last_completed
from gateway.policy.engine import protected_identities
from gateway.policy.loader import read_policy
from gateway.policy.variants import FormKind, forms
from gateway.settings import load_settings
from gateway.state.opening import open_state
from tests.e2e.clients import Account, ClientRun, new_password
from tests.e2e.gateway_process import GatewayFactory, GatewayProcess
from tests.e2e.members import notices, send
from tests.e2e.postfix import PostfixInstance
from tests.e2e.tls import TlsMaterial

pytestmark = pytest.mark.e2e

CONDUCT = "conduct@example.org"
NAME, ALIAS, USERNAME = "Jorunn Halvorsen-Bakke", "Jojo", "jorunn_hb"


class Committee:
    """Two members, a list and an outsider with unique addresses (the Postfix Maildir is shared)."""

    def __init__(self) -> None:
        tag = secrets.token_hex(4)
        self.tag = tag
        self.ada = Account(f"ada-{tag}@example.org", new_password())
        self.ben = Account(f"ben-{tag}@example.org", new_password())
        self.outsider = f"olive-{tag}@example.test"
        self.list = f"devs-{tag}@lists.example.test"
        self.address = f"jorunn-{tag}@mail.example.test"

    def policy(self) -> str:
        return f"""\
organisation:
  conduct_address: {CONDUCT}
  members:
    - name: Ada Quill
      addresses: [{self.ada.address}]
    - name: Ben Ink
      addresses: [{self.ben.address}]
rules:
  - rule: conduct-cc
    action: rewrite
  - rule: reporter-protection
    action: reject
  - rule: list-reply-all
    action: hold
    params:
      addresses: [{self.list}]
cases:
  - code: home shelf
    reporters:
      - id: quiet-heron
        names: ["{NAME}"]
        aliases: [{ALIAS}]
        addresses: [{self.address}]
        usernames: [{USERNAME}]
"""


def start(
    factory: GatewayFactory, tmp_path: Path, committee: Committee, **overrides: object
) -> GatewayProcess:
    policy = tmp_path / f"policy-{committee.tag}.yaml"
    policy.write_text(committee.policy(), encoding="utf-8")
    gateway = factory({"policy": {"path": str(policy)}, **overrides}, start=False)
    for account in (committee.ada, committee.ben):
        gateway.add_user(account.address, account.password)
    return gateway


def open_thread(
    gateway: GatewayProcess, tls: TlsMaterial, committee: Committee, postfix: PostfixInstance
) -> str:
    """Ada writes to Ben with the conduct address in Cc (a committee thread); its Message-ID."""
    parent = f"<thread-{committee.tag}@example.org>"
    first = send(gateway, tls, committee.ada, to=[committee.ben.address], cc=[CONDUCT], message_id=parent)
    assert first.ok, first.transcript
    postfix.wait_for_recipient(committee.ben.address)
    return parent


def protected_patterns(policy_path: Path) -> list[str]:
    document = read_policy(policy_path)[0]
    return sorted(
        {
            form.pattern
            for identity in protected_identities(document)
            for form in forms(identity)
            if form.kind is not FormKind.SPACED and len(form.pattern) >= 4
        }
    )


def assert_no_protected_form(raw: bytes, patterns: list[str]) -> None:
    text = raw.decode("utf-8", "replace").lower()
    assert patterns
    for pattern in patterns:
        assert pattern not in text, pattern


def test_a_reply_all_to_a_list_that_drops_the_committee_is_held(
    gateway_factory: GatewayFactory,
    tmp_path: Path,
    tls_material: TlsMaterial,
    running_postfix: PostfixInstance,
) -> None:
    committee = Committee()
    gateway = start(gateway_factory, tmp_path, committee)
    gateway.start()
    parent = open_thread(gateway, tls_material, committee, running_postfix)

    reply_all = send(
        gateway,
        tls_material,
        committee.ada,
        to=[committee.list],
        body="We will discuss it on Monday.",
        subject="Re: Next steps",
        in_reply_to=parent,
    )
    assert reply_all.ok, reply_all.transcript
    assert "Held for review" in reply_all.stdout and "LIST_REPLY_DROPS_COMMITTEE" in reply_all.stdout
    [held] = notices(running_postfix, committee.ada.address, "held")
    assert committee.list.encode() in held.raw and b"mailing list" in held.raw
    notices(running_postfix, committee.ben.address, "review-request")
    time.sleep(1)
    assert not running_postfix.messages_to(committee.list)  # held, not rewritten and relayed


def test_a_refusal_notice_arrives_and_names_no_protected_content(
    gateway_factory: GatewayFactory,
    tmp_path: Path,
    tls_material: TlsMaterial,
    running_postfix: PostfixInstance,
) -> None:
    committee = Committee()
    gateway = start(gateway_factory, tmp_path, committee)
    gateway.start()
    refused = send(
        gateway,
        tls_material,
        committee.ada,
        to=[committee.outsider],
        cc=[CONDUCT],
        subject=f"About {NAME}",
        body=f"{ALIAS} asked us to write to {committee.address}.",
    )
    assert not refused.ok and "550 5.7.1" in refused.stdout
    [notice] = notices(running_postfix, committee.ada.address, "refused")
    assert notice.header_values("Auto-Submitted") == ["auto-replied"]
    assert b"reporter-protection" in notice.raw and b"header Subject" in notice.raw
    assert b"false positive" in notice.raw
    assert_no_protected_form(notice.raw, protected_patterns(tmp_path / f"policy-{committee.tag}.yaml"))
    assert not running_postfix.messages_to(committee.outsider)


def test_the_digest_arrives_once_with_the_right_counts_and_no_protected_identity(
    gateway_factory: GatewayFactory,
    tmp_path: Path,
    tls_material: TlsMaterial,
    running_postfix: PostfixInstance,
) -> None:
    committee = Committee()
    gateway = start(
        gateway_factory,
        tmp_path,
        committee,
        digest={"period": "daily", "to": [committee.ben.address]},
        review={"check_interval": "0.5s"},
    )
    # As if the gateway had run yesterday: the scheduled digest of yesterday is due at start.
    yesterday = last_completed("daily", datetime.datetime.now(datetime.UTC))
    before = yesterday.start - datetime.timedelta(days=1)
    open_state(load_settings(gateway.config_path)).audit.record(
        "digest",
        {
            "period": "daily",
            "start": before.isoformat(),
            "end": yesterday.start.isoformat(),
            "baseline": True,
        },
    )
    gateway.start()
    [scheduled] = notices(running_postfix, committee.ben.address, "digest")
    assert yesterday.start.date().isoformat().encode() in scheduled.raw

    delivered = send(gateway, tls_material, committee.ada, to=[committee.outsider], cc=[CONDUCT])
    refused = send(gateway, tls_material, committee.ada, to=[committee.outsider], body=f"{ALIAS} wrote.")
    assert delivered.ok and not refused.ok, delivered.transcript + refused.transcript
    # A restart does not send yesterday's digest again.
    assert gateway.terminate() == 0
    gateway.start()
    time.sleep(2)
    assert len(notices(running_postfix, committee.ben.address, "digest")) == 1

    queued = gateway.cli("digest", "send", "--current")
    assert queued.returncode == 0, queued.stderr
    digests = notices(running_postfix, committee.ben.address, "digest", count=2)
    [today] = [d for d in digests if d is not scheduled and d.raw != scheduled.raw]
    body = today.raw.decode()
    assert "  deliver  1\n  reject   1\n" in body, body
    assert "reporter-protection -> reject  1\n" in body
    assert "Policy: 0 reload(s), 0 refused reload(s)" in body
    assert_no_protected_form(today.raw, protected_patterns(tmp_path / f"policy-{committee.tag}.yaml"))
    assert committee.outsider.encode() not in today.raw and committee.ada.address.encode() not in today.raw


def test_case_edits_take_effect_on_the_running_gateway_without_a_restart(
    gateway_factory: GatewayFactory,
    tmp_path: Path,
    tls_material: TlsMaterial,
    running_postfix: PostfixInstance,
) -> None:
    committee = Committee()
    gateway = start(gateway_factory, tmp_path, committee)
    gateway.start()
    pid = gateway.pid
    assert gateway.cli("case", "new", "--code", "tidy lantern").returncode == 0
    added = gateway.cli(
        "case",
        "add-person",
        "tidy lantern",
        "--role",
        "reporter",
        "--id",
        "calm-otter",
        "--name",
        "Tove Lindqvist",
    )
    assert added.returncode == 0, added.stderr

    def attempt(body: str) -> ClientRun:
        return send(gateway, tls_material, committee.ada, to=[committee.outsider], cc=[CONDUCT], body=body)

    def eventually(body: str, refused: bool) -> None:
        deadline = time.monotonic() + 15
        while True:
            run = attempt(body)
            if (not run.ok) == refused:
                return
            assert time.monotonic() < deadline, run.transcript
            time.sleep(0.5)

    eventually("Runa sends her regards.", refused=False)
    edited = gateway.cli("case", "edit-person", "tidy lantern", "calm-otter", "--add-alias", "Runa")
    assert edited.returncode == 0 and "Runa" not in edited.stdout, edited.stderr
    eventually("Runa sends her regards.", refused=True)
    removed = gateway.cli("case", "remove-person", "tidy lantern", "calm-otter")
    assert removed.returncode == 0, removed.stderr
    eventually("Tove Lindqvist and Runa send their regards.", refused=False)
    severity = gateway.cli("case", "severity", "tidy lantern", "severe")
    assert severity.returncode == 0 and "now severe" in severity.stdout
    assert gateway.pid == pid  # the same process throughout
