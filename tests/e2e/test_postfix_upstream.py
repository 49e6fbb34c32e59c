"""The private Postfix upstream itself: STARTTLS and implicit TLS, delivering to its Maildir."""

from __future__ import annotations

import pytest

from tests.e2e.clients import Endpoint, swaks
from tests.e2e.messages import assert_arrived_unchanged, token, tricky_message
from tests.e2e.postfix import SYSTEM_CONFIG_DIRECTORY, PostfixInstance
from tests.e2e.tls import TlsMaterial

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_postfix_accepts_verified_tls_and_delivers_bytes_unchanged(
    postfix: PostfixInstance, tls_material: TlsMaterial, recipient: str, security: str
) -> None:
    port = postfix.port if security == "starttls" else postfix.tls_port
    sent = tricky_message("someone@example.test", recipient, token())
    run = swaks(
        Endpoint("127.0.0.1", port, security),  # type: ignore[arg-type]
        mail_from="someone@example.test",
        recipients=[recipient],
        message=sent,
        ca_file=tls_material.ca_file,
    )
    assert run.ok, run.transcript
    [delivered] = postfix.wait_for_recipient(recipient)
    assert_arrived_unchanged(delivered, sent)
    assert "with ESMTPS" in delivered.header_values("Received")[0]


def test_the_instance_is_private(postfix: PostfixInstance) -> None:
    main_cf = (postfix.config_directory / "main.cf").read_text()
    assert postfix.config_directory.resolve() != SYSTEM_CONFIG_DIRECTORY
    assert f"queue_directory = {postfix.queue_directory}\n" in main_cf
    assert "inet_interfaces = 127.0.0.1\n" in main_cf
    assert ":25 " not in (postfix.config_directory / "master.cf").read_text()
