"""One member sending: a small message is evaluated on the gateway's event loop, a large one by a worker.

The real ``serve`` with its policy workers (``auto``), real swaks over STARTTLS and AUTH, the real
Postfix upstream; what ran where is read from /metrics as an operator would.
"""

from __future__ import annotations

import re

import pytest

from tests.e2e.messages import token, unique_address
from tests.e2e.postfix import PostfixInstance
from tests.e2e.test_policy_e2e import PolicyGateway, arrived, compose, main_gateway, never_relayed

__all__ = ["main_gateway"]  # the module's gateway fixture, started again for this module

pytestmark = pytest.mark.e2e

INLINE = re.compile(r"^conduct_gateway_policy_inline_evaluations_total (\S+)$", re.M)


def inline_evaluations(gateway: PolicyGateway) -> float:
    status, text = gateway.process.scrape()
    assert status == 200
    found = INLINE.search(text)
    assert found is not None, "the inline evaluations counter is exported"
    return float(found.group(1))


def test_small_messages_are_decided_on_the_loop_and_large_ones_by_a_worker_alike(
    main_gateway: PolicyGateway, postfix: PostfixInstance
) -> None:
    before = inline_evaluations(main_gateway)
    small, outsider = token(), unique_address("inline")
    sent = main_gateway.send(compose(small, to=f"<{outsider}>"), [outsider])
    assert sent.final.startswith("250"), sent.run.transcript
    arrived(postfix, outsider, small)
    assert inline_evaluations(main_gateway) == before + 1
    # Refused the same way on the loop: a protected name to an outsider.
    named = token()
    body = "Elif Marchetti told us.\r\n"
    refused = main_gateway.send(compose(named, to=f"<{outsider}>", body=body), [outsider])
    assert refused.final.startswith("550"), refused.run.transcript
    never_relayed(postfix, named)
    assert inline_evaluations(main_gateway) == before + 2
    # Over 64 KiB: a worker evaluates it, with the same verdicts.
    filler = "Minutes of the meeting, item by item, as agreed.\r\n" * 1600
    large, large_named = token(), token()
    sent = main_gateway.send(compose(large, to=f"<{outsider}>", body=filler), [outsider])
    assert sent.final.startswith("250"), sent.run.transcript
    arrived(postfix, outsider, large)
    refused = main_gateway.send(compose(large_named, to=f"<{outsider}>", body=filler + body), [outsider])
    assert refused.final.startswith("550"), refused.run.transcript
    never_relayed(postfix, large_named)
    assert inline_evaluations(main_gateway) == before + 2
