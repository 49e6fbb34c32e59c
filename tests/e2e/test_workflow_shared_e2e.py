"""Overrides shared by two gateways on one PostgreSQL database, end to end (issue 18).

Two real gateway processes share a fresh database of the session's private cluster and relay to the
session's real Postfix. A member refused through gateway A is given a token; the tagged message sent
through gateway B goes out once, with its justification readable from either; the token then
serves no other message on either gateway.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.state.registry import generate_key
from tests.e2e.clients import Account
from tests.e2e.gateway_process import GatewayProcess, gateway_settings
from tests.e2e.messages import token, unique_address
from tests.e2e.postfix import PostfixInstance
from tests.e2e.test_policy_e2e import PolicyGateway, arrived, audit_entries, compose, never_relayed
from tests.e2e.test_workflow_e2e import ENFORCED, OFFER, REASON
from tests.e2e.tls import TlsMaterial
from tests.postgresql import ScratchDatabase

pytestmark = pytest.mark.e2e


@pytest.fixture
def two_gateways(
    tmp_path: Path,
    pg_database: ScratchDatabase,
    tls_material: TlsMaterial,
    postfix: PostfixInstance,
    member: Account,
) -> Iterator[tuple[PolicyGateway, PolicyGateway]]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(ENFORCED, encoding="utf-8")
    secret, registry_key = tmp_path / "pg-password", tmp_path / "registry.key"
    secret.write_text(pg_database.password + "\n")
    registry_key.write_text(generate_key() + "\n")  # the same key for both: they share the registry
    settings = gateway_settings(tls_material, postfix, policy)
    settings["registry"] = {"key_env": None, "key_file": str(registry_key)}
    settings["state"] = {
        "backend": "postgresql",
        "postgresql": {"dsn": pg_database.dsn, "password_file": str(secret), "connect_timeout": "5s"},
    }
    first = GatewayProcess(tmp_path / "a", settings)
    migrated = first.cli("state", "migrate")
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    second = GatewayProcess(tmp_path / "b", settings)
    started = []
    try:
        first.add_user(member.address, member.password)  # in the database: every gateway's account
        for process in (first, second):
            if process is second:  # the fingerprint key the first one made, as the docs say
                second.state_dir.mkdir(parents=True, exist_ok=True)
                shutil.copy(first.state_dir / "fingerprints.key", second.state_dir / "fingerprints.key")
            process.start()
            started.append(process)
        yield (PolicyGateway(first, tls_material, member), PolicyGateway(second, tls_material, member))
    finally:
        for process in started:
            process.close()


def test_a_token_from_one_gateway_is_redeemed_once_through_another(
    two_gateways: tuple[PolicyGateway, PolicyGateway], postfix: PostfixInstance
) -> None:
    gateway_a, gateway_b = two_gateways
    marker, outsider = token(), unique_address("shared-override")
    body = "Your report says it was just a misunderstanding; we quote it as written.\r\n"
    refused = gateway_a.send(
        compose(marker, to=f"<{outsider}>", body=body, subject="Your report"), [outsider]
    )
    assert refused.final.startswith("550"), refused.run.transcript
    offered = OFFER.search(" ".join(line[9:] for line in refused.replies))
    assert offered is not None, refused.run.transcript

    tagged = compose(
        marker, to=f"<{outsider}>", body=body, subject=f"Your report [override {offered.group(1)}: {REASON}]"
    )
    sent = gateway_b.send(tagged, [outsider])
    assert sent.final.startswith("250"), sent.run.transcript
    accepted = re.search(r"\(reference (ovr-[0-9a-f]+)\)", sent.reply_text)
    assert accepted is not None, sent.run.transcript
    delivered = arrived(postfix, outsider, marker)
    assert delivered.header_values("Subject") == ["Your report"] and REASON.encode() not in delivered.raw

    # The same token for another message, through either gateway: refused, with a fresh token.
    for gateway in (gateway_a, gateway_b):
        other = token()
        again = gateway.send(
            compose(
                other, to=f"<{outsider}>", body=body, subject=f"Later [override {offered.group(1)}: {REASON}]"
            ),
            [outsider],
        )
        assert again.final.startswith("550"), again.run.transcript
        assert "the token was used for another message already" in again.reply_text
        never_relayed(postfix, other)

    # The committee reads the one override, with its justification, from either gateway's host.
    for process in (gateway_a.process, gateway_b.process):
        listed = process.cli("override", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert [row["reference"] for row in json.loads(listed.stdout)] == [accepted.group(1)]
        shown = process.cli("override", "show", accepted.group(1))
        assert json.loads(shown.stdout)["justification"] == REASON
    overrides = [e for e in audit_entries(gateway_a.process) if e.get("event") == "override"]
    assert [(e["reference"], e["queue_id"], e["repeated"]) for e in overrides] == [
        (accepted.group(1), sent.reference, False)
    ]
    assert REASON not in json.dumps(overrides)
