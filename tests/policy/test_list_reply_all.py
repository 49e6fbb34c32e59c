"""list-reply-all: a reply on a committee thread that goes to a mailing list and drops the committee."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.policy.mailing_lists import (
    address_matches_list_id,
    is_configured_list,
    learnt_list_addresses,
    list_id_of,
)
from gateway.policy.matcher import IdentityMatcher
from gateway.policy.model import Address, Envelope, ParsedMessage, RuleContext, ThreadFacts
from gateway.policy.rules import list_reply_all

CONDUCT = "conduct@example.org"
ADA = "ada@example.org"
BRAM = "bram@example.org"
LIST = "community@lists.example.org"
REPORTER = "r.okafor@mail.example.net"
PARAMS = list_reply_all.Params(addresses=(LIST,), domains=("lists.example.net",))


def context(thread: ThreadFacts) -> RuleContext:
    return RuleContext(
        conduct_address=CONDUCT,
        committee=frozenset({ADA, BRAM}),
        member_names=((ADA, "Ada Quill"), (BRAM, "Bram Oduya")),
        internal_domains=frozenset({"example.org"}),
        finder=IdentityMatcher.build(()),
        consents=frozenset(),
        thread=thread,
    )


def thread(
    *participants: str, case: str | None = "tidy lantern", lists: frozenset[str] = frozenset()
) -> ThreadFacts:
    return ThreadFacts(
        parent_known=True,
        parent_participants=tuple(Address("", a) for a in participants),
        case=case,
        list_recipients=lists,
    )


def message(to: tuple[str, ...], cc: tuple[str, ...] = ()) -> ParsedMessage:
    return ParsedMessage(
        raw=b"",
        message_id="<m2@example.org>",
        in_reply_to=("<m1@example.org>",),
        references=("<m1@example.org>",),
        from_=(Address("Ada Quill", ADA),),
        to=tuple(Address("", a) for a in to),
        cc=tuple(Address("", a) for a in cc),
        bcc=(),
        subject="Re: tidy lantern",
        segments=(),
        uninspectable=(),
        ambiguities=(),
        signed=False,
    )


def findings(to: tuple[str, ...], cc: tuple[str, ...], facts: ThreadFacts) -> list[str]:
    envelope = Envelope(mail_from=ADA, rcpt_tos=(*to, *cc), authenticated_as=ADA)
    return [f.code for f in list_reply_all.check(message(to, cc), envelope, context(facts), PARAMS)]


HELD = ["LIST_REPLY_DROPS_COMMITTEE"]


@pytest.mark.parametrize(
    ("to", "cc", "facts", "expected"),
    [
        pytest.param((LIST,), (), thread(ADA, CONDUCT, LIST), HELD, id="drops-conduct-to-list"),
        pytest.param((LIST,), (CONDUCT,), thread(ADA, CONDUCT, BRAM, LIST), HELD, id="drops-member"),
        pytest.param((LIST,), (CONDUCT, BRAM), thread(ADA, CONDUCT, BRAM, LIST), [], id="keeps-committee"),
        pytest.param(("dev@lists.example.net",), (), thread(ADA, CONDUCT), HELD, id="configured-domain"),
        pytest.param(("dev@sub.lists.example.net",), (), thread(ADA, CONDUCT), HELD, id="subdomain"),
        pytest.param(("community+digest@lists.example.org",), (), thread(CONDUCT), HELD, id="sub-address"),
        pytest.param(
            ("devs@example.com",),
            (),
            thread(CONDUCT, lists=frozenset({"devs@example.com"})),
            HELD,
            id="learnt",
        ),
        pytest.param(("someone@example.com",), (), thread(ADA, CONDUCT), [], id="no-list"),
        pytest.param((LIST,), (), thread(ADA, "x@example.com", case=None), [], id="not-committee-thread"),
        pytest.param((LIST,), (), thread(ADA, CONDUCT, case=None), HELD, id="conduct-thread-without-case"),
        pytest.param((LIST,), (), ThreadFacts(), [], id="new-message"),
    ],
)
def test_reply_all_to_a_list(
    to: tuple[str, ...], cc: tuple[str, ...], facts: ThreadFacts, expected: list[str]
) -> None:
    assert findings(to, cc, facts) == expected


def test_the_advice_says_why_without_a_rewrite() -> None:
    envelope = Envelope(mail_from=ADA, rcpt_tos=(LIST,), authenticated_as=ADA)
    [finding] = list_reply_all.check(message((LIST,)), envelope, context(thread(ADA, CONDUCT, BRAM)), PARAMS)
    assert finding.rewrite is None and finding.case == "tidy lantern" and finding.recipients == (LIST,)
    assert LIST in finding.advice and CONDUCT in finding.advice and "1 committee member" in finding.advice


def test_learnt_lists_are_ignored_when_switched_off() -> None:
    facts = thread(CONDUCT, lists=frozenset({"devs@example.com"}))
    envelope = Envelope(mail_from=ADA, rcpt_tos=("devs@example.com",), authenticated_as=ADA)
    params = list_reply_all.Params(learnt=False)
    assert list_reply_all.check(message(("devs@example.com",)), envelope, context(facts), params) == []


_LABEL = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
_LOCAL = st.builds(lambda a, b: f"{a}-{b}", _LABEL, _LABEL) | _LABEL
_DOMAIN = st.lists(_LABEL, min_size=1, max_size=3).map(lambda labels: ".".join([*labels, "test"]))


@st.composite
def address_forms(draw: st.DrawFn, address: str) -> str:
    """One way of writing ``address`` in a header or envelope: case, angle brackets, spaces."""
    local, domain = address.split("@")
    written = "".join(c.upper() if draw(st.booleans()) else c for c in address)
    return draw(st.sampled_from([written, f"<{written}>", f" {written} ", f"{local}@{domain.upper()}"]))


@given(local=_LOCAL, domain=_DOMAIN, data=st.data())
def test_any_written_form_of_a_configured_list_is_a_list(
    local: str, domain: str, data: st.DataObject
) -> None:
    address = f"{local}@{domain}"
    form = data.draw(address_forms(address))
    assert is_configured_list(form, (address,), ())
    assert is_configured_list(form, (), (domain,))
    assert is_configured_list(form, (), (domain.split(".", 1)[1],))  # a parent domain covers it
    assert not is_configured_list(form, (f"x{address}",), (f"x{domain}",))


@given(
    local=_LOCAL, domain=_DOMAIN, name=st.sampled_from(["", "Dev list", '"Dev, the list"']), data=st.data()
)
def test_any_list_id_form_names_its_posting_address(
    local: str, domain: str, name: str, data: st.DataObject
) -> None:
    address = f"{local}@{domain}"
    ident = f"{local}.{domain}"
    written = data.draw(
        st.sampled_from([ident, ident.upper(), f"<{ident}>", f"{name} <{ident}>", f"{name}\r\n <{ident}>"])
    )
    parsed = list_id_of(written.replace("\r\n", ""))
    assert parsed == ident
    assert address_matches_list_id(data.draw(address_forms(address)), ident)
    head = (
        f"From: Ada <ada@example.org>\r\nTo: {address}, bob@example.net\r\nList-Id: {written}\r\n"
        "Subject: hi\r\n\r\nbody\r\n"
    ).encode()
    assert learnt_list_addresses(head) == (address,)


@given(local=_LOCAL, domain=_DOMAIN)
def test_list_post_names_the_list(local: str, domain: str) -> None:
    head = (
        f"From: x@example.net\r\nTo: y@example.net\r\nList-Post: <mailto:{local}@{domain}?subject=hi>\r\n\r\n"
    ).encode()
    assert learnt_list_addresses(head) == (f"{local}@{domain}",)


def test_a_message_without_list_headers_teaches_nothing() -> None:
    head = b"From: x@example.net\r\nTo: dev@lists.example.org\r\nList-Post: NO\r\n\r\nbody"
    assert learnt_list_addresses(head) == ()
