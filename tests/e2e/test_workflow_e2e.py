"""The committee's workflow end to end (issue 18): a shadow policy, `policy diff`, overrides.

One gateway, started once for the module, relays to the session's real Postfix under ENFORCED with
CANDIDATE as its shadow (``policy.shadow``). Real clients (swaks) submit; the upstream's mailbox,
the audit trail (`audit show`), /metrics and `policy diff` are read as an admin would.
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.clients import Account
from tests.e2e.gateway_process import GatewayProcess, gateway_settings
from tests.e2e.messages import token, unique_address
from tests.e2e.postfix import PostfixInstance
from tests.e2e.test_policy_e2e import (
    CONDUCT,
    CONDUCT_CC,
    PolicyGateway,
    arrived,
    audit_entries,
    compose,
    never_relayed,
)
from tests.e2e.tls import TlsMaterial

pytestmark = pytest.mark.e2e

_HEAD = """\
organisation:
  conduct_address: conduct@example.org
  members:
    - name: Maya Member
      addresses: [maya.member@example.org]
cases:
  - code: blue lantern
    reporters:
      - id: still-otter
        names: [Elif Marchetti]
rules:
"""
# In force: a missing conduct address is added; minimising language is refused but overridable;
# a vague request only warns; a protected name is refused (never overridable).
ENFORCED = (
    _HEAD
    + """\
  - rule: conduct-cc
    action: rewrite
    params: {display_name: Conduct Committee}
  - rule: communication
    action: reject
    actions: {VAGUE_REQUEST: warn, INTENT_ASSUMPTION: warn, BLAMING_LANGUAGE: warn}
    overridable: true
  - rule: reporter-protection
    action: reject
"""
)
# The candidate: a missing conduct address refuses the message; a vague request is refused too.
CANDIDATE = ENFORCED.replace("    action: rewrite\n", "    action: reject\n").replace(
    "VAGUE_REQUEST: warn", "VAGUE_REQUEST: reject"
)
REASON = "Olive asked for the wording of the original report"
OFFER = re.compile(r"\[override ([A-Z2-9]{8}): your reason\]")
ROW = re.compile(r"^(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(.*)$")


@pytest.fixture(scope="module")
def workflow(
    tmp_path_factory: pytest.TempPathFactory,
    tls_material: TlsMaterial,
    postfix: PostfixInstance,
    member: Account,
) -> Iterator[tuple[PolicyGateway, Path]]:
    root = tmp_path_factory.mktemp("workflow")
    enforced, candidate = root / "enforced.yaml", root / "candidate.yaml"
    enforced.write_text(ENFORCED, encoding="utf-8")
    candidate.write_text(CANDIDATE, encoding="utf-8")
    settings = gateway_settings(tls_material, postfix, enforced)
    settings["policy"]["shadow"] = str(candidate)
    process = GatewayProcess(root / "gateway", settings)
    process.add_user(member.address, member.password)
    process.start()
    yield PolicyGateway(process, tls_material, member), candidate
    process.close()


def metrics(process: GatewayProcess) -> str:
    host, port = process.addresses["metrics"]
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def eventually(check: object, what: str, timeout: float = 30) -> None:
    """Poll ``check()`` until it is true (the gateway's threads and delivery take their own time)."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f}s: {what}")
        time.sleep(0.2)


def entries_of(process: GatewayProcess, event: str) -> list[dict[str, object]]:
    return [entry for entry in audit_entries(process) if entry.get("event") == event]


def test_a_shadow_policy_records_a_difference_and_changes_nothing(
    workflow: tuple[PolicyGateway, Path], postfix: PostfixInstance
) -> None:
    gateway, _candidate = workflow
    marker, outsider = token(), unique_address("shadow")
    result = gateway.send(compose(marker, to=f"<{outsider}>", cc=None), [outsider])
    # Decided by the policy in force: the conduct address added, the message relayed to both.
    assert f"250-2.0.0 Changed: added {CONDUCT} to Cc" in result.replies, result.run.transcript
    for recipient in (outsider, CONDUCT):
        assert arrived(postfix, recipient, marker).header_values("Cc") == [CONDUCT_CC]

    def recorded() -> list[dict[str, object]]:
        return [
            e for e in entries_of(gateway.process, "shadow-difference") if e["queue_id"] == result.reference
        ]

    eventually(lambda: bool(recorded()), "the shadow's difference in the audit trail")
    [entry] = recorded()
    assert (entry["verdict"], entry["shadow_verdict"]) == ("rewrite", "reject")
    assert entry["findings"] == [
        "-conduct-cc:CONDUCT_ADDRESS_MISSING:rewrite",
        "+conduct-cc:CONDUCT_ADDRESS_MISSING:reject",
    ]
    assert marker not in str(entry) and outsider not in str(entry)
    text = metrics(gateway.process)
    assert re.search(
        r'^conduct_gateway_shadow_verdict_changes_total\{change="rewrite_to_reject"\} [1-9]', text, re.M
    )
    assert "conduct_gateway_shadow_policy_unusable 0.0" in text


def test_an_override_is_refused_for_an_identity_rule(
    workflow: tuple[PolicyGateway, Path], postfix: PostfixInstance
) -> None:
    gateway, _candidate = workflow
    marker, outsider = token(), unique_address("identity")
    body = "Elif Marchetti told us it was just a misunderstanding.\r\n"
    refused = gateway.send(compose(marker, to=f"<{outsider}>", body=body), [outsider])
    assert refused.final.startswith("550"), refused.run.transcript
    assert "reporter-protection" in refused.reply_text and "override" not in refused.reply_text.lower()
    # Even with a valid token from an overridable refusal, the identity finding keeps it refused.
    offered = gateway.send(
        compose(token(), to=f"<{outsider}>", body="It was just a misunderstanding.\r\n"), [outsider]
    )
    found = OFFER.search(" ".join(line[9:] for line in offered.replies))
    assert found is not None, offered.run.transcript
    tagged = compose(
        marker, to=f"<{outsider}>", body=body, subject=f"Update [override {found.group(1)}: {REASON}]"
    )
    again = gateway.send(tagged, [outsider])
    assert again.final.startswith("550") and "override" not in again.reply_text.lower(), again.run.transcript
    never_relayed(postfix, marker)


def test_an_override_is_accepted_audited_and_counted(
    workflow: tuple[PolicyGateway, Path], postfix: PostfixInstance
) -> None:
    gateway, _candidate = workflow
    marker, outsider = token(), unique_address("override")
    body = "Your report says it was just a misunderstanding; we quote it as written.\r\n"
    refused = gateway.send(compose(marker, to=f"<{outsider}>", body=body, subject="Your report"), [outsider])
    assert refused.final.startswith("550") and "communication" in refused.reply_text, refused.run.transcript
    found = OFFER.search(" ".join(line[9:] for line in refused.replies))
    assert found is not None, refused.run.transcript
    subject = f"Your report [override {found.group(1)}: {REASON}]"
    sent = gateway.send(compose(marker, to=f"<{outsider}>", body=body, subject=subject), [outsider])
    assert sent.final.startswith("250"), sent.run.transcript
    accepted = re.search(
        r"override of communication was accepted \(reference (ovr-[0-9a-f]+)\)", sent.reply_text
    )
    assert accepted is not None, sent.run.transcript
    delivered = arrived(postfix, outsider, marker)
    assert delivered.header_values("Subject") == ["Your report"]  # the tag and reason never reach Olive
    assert REASON.encode() not in delivered.raw
    [entry] = [e for e in entries_of(gateway.process, "override") if e["reference"] == accepted.group(1)]
    assert entry["queue_id"] == sent.reference and entry["rules"] == ["communication"]
    assert entry["findings"] == ["communication:MINIMISING_LANGUAGE"]
    assert "Olive" not in str(entry) and found.group(1) not in str(entry)  # no justification, no token
    assert re.search(
        r'^conduct_gateway_overrides_granted_total\{rule="communication"\} 1\.0',
        metrics(gateway.process),
        re.M,
    )


def test_policy_diff_prints_the_right_rows(
    workflow: tuple[PolicyGateway, Path], postfix: PostfixInstance, tmp_path: Path
) -> None:
    gateway, candidate = workflow
    marker, outsider = token(), unique_address("diff")
    kept = gateway.send(
        compose(marker, to=f"<{outsider}>", body="Please be better next time.\r\n"), [outsider]
    )
    assert kept.final.startswith("250"), kept.run.transcript  # a vague request only warns today
    arrived(postfix, outsider, marker)
    folder = tmp_path / "mail"
    folder.mkdir()
    (folder / "no-cc.eml").write_bytes(compose(token(), to=f"<{outsider}>", cc=None))
    (folder / "clean.eml").write_bytes(compose(token(), to=f"<{outsider}>"))
    (folder / "vague.eml").write_bytes(compose(token(), to=f"<{outsider}>", body="Do better.\r\n"))

    def diff() -> tuple[int, dict[str, tuple[str, ...]]]:
        result = gateway.process.cli("policy", "diff", str(candidate), "--eml-folder", str(folder))
        rows = {
            m.group(1): m.groups()[1:] for line in result.stdout.splitlines()[1:] if (m := ROW.match(line))
        }
        return result.returncode, rows

    # The delivered message moves to the done folder once the upstream took it.
    eventually(lambda: kept.reference in diff()[1], "the delivered message in the done folder")
    code, rows = diff()
    assert code == 1
    assert rows[kept.reference][:3] == ("deliver", "reject", "communication")  # a warning delivers
    assert rows["no-cc.eml"][:3] == ("rewrite", "reject", "conduct-cc")
    assert rows["vague.eml"][:3] == ("deliver", "reject", "communication")
    assert "clean.eml" not in rows
    assert all(marker not in " ".join(row) for row in rows.values())
