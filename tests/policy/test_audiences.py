"""Audiences: every recipient gets its roles, from the committee, the cases and the policy's lists."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.policy import audiences as audiences_module
from gateway.policy.audiences import NO_AUDIENCES, Audiences, Membership, Role
from gateway.policy.engine import audiences, compile_policy, rule_context
from gateway.policy.loader import parse_policy_text
from gateway.policy.matcher import IdentityMatcher
from gateway.policy.model import RuleContext, ThreadFacts

POLICY = """\
organisation:
  conduct_address: Conduct@Example.org
  members:
    - name: Ada Quill
      addresses: [ada@example.org]
audiences:
  admins:
    addresses: [Root@Infra.Example.net]
  moderators:
    domains: [forum.example.net]
  organisers:
    addresses: [pat@example.com]
    domains: [Events.Example.com]
rules:
  - rule: conduct-cc
    action: rewrite
cases:
  - code: home shelf
    reporters:
      - id: quiet-heron
        names: [Robin Castellano]
        addresses: [robin@mail.example.net]
    witnesses:
      - id: amber-finch
        addresses: [sam@witness.test]
    reported:
      - id: loud-kettle
        addresses: [Pat@Example.com]
  - code: far hill
    reported:
      - id: grey-owl
        addresses: [owl@example.net]
"""


@pytest.fixture(scope="module")
def classified() -> Audiences:
    return audiences(parse_policy_text(POLICY, Path("p.yaml")))


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        pytest.param("conduct@example.org", {Role.CONDUCT}, id="conduct"),
        pytest.param("ADA@example.org", {Role.COMMITTEE}, id="member-any-case"),
        pytest.param("robin@mail.example.net", {Role.REPORTER}, id="reporter"),
        pytest.param("Sam@Witness.test", {Role.WITNESS}, id="witness"),
        pytest.param("owl@example.net", {Role.REPORTED}, id="reported"),
        pytest.param("root@infra.example.net", {Role.ADMIN}, id="admin-address"),
        pytest.param("<root@infra.example.net>", {Role.ADMIN}, id="angle-brackets"),
        pytest.param("root+alerts@infra.example.net", {Role.ADMIN}, id="sub-address"),
        pytest.param("other@infra.example.net", {Role.OTHER}, id="address-is-not-a-domain"),
        pytest.param("mods@forum.example.net", {Role.MODERATOR}, id="domain"),
        pytest.param("MODS@FORUM.EXAMPLE.NET", {Role.MODERATOR}, id="domain-case"),
        pytest.param("x@eu.mail.forum.example.net", {Role.MODERATOR}, id="subdomain"),
        pytest.param("x@notforum.example.net", {Role.OTHER}, id="suffix-is-not-a-subdomain"),
        pytest.param("x@forum.example.net.test", {Role.OTHER}, id="domain-is-not-a-prefix"),
        pytest.param("forum.example.net@example.org", {Role.OTHER}, id="domain-in-local-part"),
        pytest.param("someone@example.net", {Role.OTHER}, id="other"),
        # Several roles at once: the reported party is also listed as an organiser.
        pytest.param("pat@example.com", {Role.REPORTED, Role.ORGANISER}, id="several-roles"),
        pytest.param("pat@events.example.com", {Role.ORGANISER}, id="organiser-domain"),
    ],
)
def test_roles(classified: Audiences, address: str, expected: set[Role]) -> None:
    assert classified.roles(address) == expected


def test_remembered_answers_are_the_answers(classified: Audiences, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audiences_module, "_REMEMBERED_ANSWERS", 3)  # forget often
    classified._answers.clear()
    addresses = ["owl@example.net", "pat@example.com", "robin@mail.example.net", "someone@example.net"]
    first = [classified.memberships(address) for address in addresses]
    again = [classified.memberships(address) for address in reversed(addresses)][::-1]
    assert first == again == [classified._memberships(address) for address in addresses]
    assert len(classified._answers) <= 3


def test_case_roles_name_their_case(classified: Audiences) -> None:
    assert classified.memberships("owl@example.net") == {Membership(Role.REPORTED, "far hill")}
    assert classified.memberships("pat@example.com") == {
        Membership(Role.REPORTED, "home shelf"),
        Membership(Role.ORGANISER),
    }


def test_committee_is_exclusive_whatever_the_lists_say() -> None:
    lists = Audiences.build(
        conduct_address="conduct@example.org",
        committee=["ada@example.org"],
        domains=[("example.org", Membership(Role.ADMIN))],
    )
    assert lists.roles("ada@example.org") == {Role.COMMITTEE}
    assert lists.roles("conduct@example.org") == {Role.CONDUCT}
    assert lists.roles("it@example.org") == {Role.ADMIN}
    # A member's sub-address is not the member (fail towards "outside").
    assert lists.roles("ada+x@example.org") == {Role.ADMIN}


def test_the_engine_hands_audiences_to_rules() -> None:
    document = parse_policy_text(POLICY, Path("p.yaml"))
    context = rule_context(compile_policy(document, POLICY.encode()), ThreadFacts())
    assert context.roles_of("mods@forum.example.net") == {Role.MODERATOR}
    assert context.roles_of("Conduct@example.org") == {Role.CONDUCT}


def test_a_context_without_audiences_still_knows_the_committee() -> None:
    context = RuleContext(
        conduct_address="conduct@example.org",
        committee=frozenset({"ada@example.org"}),
        member_names=(),
        internal_domains=frozenset(),
        finder=IdentityMatcher.build(()),
        consents=frozenset(),
    )
    assert context.audiences is NO_AUDIENCES
    assert context.roles_of("ADA@example.org") == {Role.COMMITTEE}
    assert context.roles_of("conduct@example.org") == {Role.CONDUCT}
    assert context.roles_of("mods@forum.example.net") == {Role.OTHER}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(
            ("addresses: [Root@Infra.Example.net]", "addresses: [ada@example.org]"),
            "line 8, key audiences.admins.addresses[0]: ada@example.org is inside the committee",
            id="member-listed",
        ),
        pytest.param(
            ("domains: [forum.example.net]", "domains: [not a domain]"),
            "line 10, key audiences.moderators.domains[0]: Value error, not a valid domain name",
            id="bad-domain",
        ),
        pytest.param(
            ("  organisers:", "  organizers:"),
            "line 11, key audiences.organizers: unknown key",
            id="spelling",
        ),
    ],
)
def test_audience_errors_name_line_and_key(change: tuple[str, str], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected.replace("[", r"\[").replace(".", r"\.")):
        parse_policy_text(POLICY.replace(*change), Path("p.yaml"))


def test_when_roles_are_validated() -> None:
    text = POLICY
    bad = text.replace(
        "    action: rewrite\n", "    action: rewrite\n    when: {recipient_roles: [moderators]}\n", 1
    )
    with pytest.raises(
        ConfigError, match=r"line 17, key rules\[0\]\.when\.recipient_roles\[0\]: Input should be 'conduct', "
    ):
        parse_policy_text(bad, Path("p.yaml"))
    empty = text.replace("    action: rewrite\n", "    action: rewrite\n    when: {recipient_roles: []}\n", 1)
    with pytest.raises(
        ConfigError, match=r"line 17, key rules\[0\]\.when\.recipient_roles: .*at least one role"
    ):
        parse_policy_text(empty, Path("p.yaml"))
