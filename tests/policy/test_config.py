"""The policy file: validation with file/line/key errors, semantic checks, schema and reference."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.policy import reference as reference_module
from gateway.policy.config import PolicyDocument
from gateway.policy.loader import load_policy, parse_policy_text, read_policy
from gateway.policy.reference import policy_json_schema, policy_json_schema_text, policy_reference_markdown
from gateway.policy.registry import RULES, finding_codes

REPO = Path(__file__).resolve().parents[2]
PATH = Path("policy.yaml")

MINIMAL = """\
organisation:
  conduct_address: conduct@example.org
  members:
    - name: Ada Quill
      addresses: [ada@example.org]
rules:
  - rule: conduct-cc
    action: rewrite
"""

LIST_REPLY_ALL = "  - rule: list-reply-all\n    action: hold\n    params:\n"

FULL = """\
organisation:
  conduct_address: conduct@example.org
  members:
    - name: Ada Quill
      addresses: [ada@example.org, ada@home.test]
    - name: Bram Oduya
      addresses: [bram@example.org]
  internal_domains: [Example.org.]
on_error: reject
rules:
  - rule: conduct-cc
    action: reject
    params:
      scope: outside
  - rule: recipient-banner
    action: rewrite
    actions:
      BCC_ON_CASE_THREAD: hold
  - rule: reporter-protection
    enabled: false
    action: reject
cases:
  - code: home shelf
    reporters:
      - id: quiet-heron
        names: [Robin Castellano]
        aliases: [Robbie]
        addresses: [robin@example.net]
        usernames: ["@rcastellano"]
    witnesses:
      - id: amber-finch
        usernames: [samokr]
    reported:
      - id: loud-kettle
        names: [Pat Vandermeer]
    consents:
      - person: amber-finch
        recipient: Organisers@Events.example.com
        reference: mail of 2024-03-02
        date: 2024-03-02
"""


def parse(text: str) -> PolicyDocument:
    return parse_policy_text(textwrap.dedent(text), PATH)


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    return str(caught.value)


def test_minimal_policy() -> None:
    document = parse(MINIMAL)
    assert document.on_error == "tempfail"
    (entry,) = document.rules
    assert (entry.rule, entry.action, entry.enabled, entry.actions) == ("conduct-cc", "rewrite", True, {})
    assert entry.params == RULES[0].Params()
    assert document.cases == ()


def test_full_policy() -> None:
    document = parse(FULL)
    assert document.organisation.internal_domains == ("example.org",)
    conduct, banner, protection = document.rules
    assert conduct.params.scope == "outside"  # type: ignore[attr-defined]
    assert banner.action_for("BCC_ON_CASE_THREAD") == "hold"
    assert banner.action_for("BANNER_MISSING") == "rewrite"
    assert protection.enabled is False
    (case,) = document.cases
    assert [person.id for person in case.protected()] == ["quiet-heron", "amber-finch"]
    assert case.consents[0].date.isoformat() == "2024-03-02"


def test_models_are_frozen() -> None:
    document = parse(MINIMAL)
    with pytest.raises(Exception, match="frozen"):
        document.on_error = "reject"  # type: ignore[misc]


ERRORS = [
    pytest.param(
        MINIMAL + "colour: blue\n",
        ["policy.yaml, line 9, key colour: unknown key"],
        id="unknown-top-level-key",
    ),
    pytest.param(
        MINIMAL.replace("    action: rewrite", "    action: rewrite\n    parms: {}"),
        ["policy.yaml, line 9, key rules[0].parms: unknown key"],
        id="unknown-key-in-rule-entry",
    ),
    pytest.param(
        MINIMAL.replace("rule: conduct-cc", "rule: conduct_cc"),
        ["policy.yaml, line 7, key rules[0]: unknown rule 'conduct_cc'; the rules are: conduct-cc"],
        id="unknown-rule",
    ),
    pytest.param(
        MINIMAL.replace("  - rule: conduct-cc\n", "  - action: reject\n").replace(
            "    action: rewrite\n", ""
        ),
        ["policy.yaml, line 7, key rules[0]: missing key 'rule'"],
        id="rule-missing",
    ),
    pytest.param(
        MINIMAL.replace("action: rewrite", "action: bounce"),
        [
            "policy.yaml, line 8, key rules[0].action: "
            "Input should be 'reject', 'rewrite', 'hold', 'warn' or 'audit'"
        ],
        id="bad-action",
    ),
    pytest.param(
        MINIMAL.replace("action: rewrite", "action: rewrite\n    params:\n      scope: sometimes"),
        ["policy.yaml, line 10, key rules[0].params.scope: Input should be 'all' or 'outside'"],
        id="bad-rule-option",
    ),
    pytest.param(
        MINIMAL.replace("action: rewrite", "action: rewrite\n    params:\n      scop: all"),
        ["policy.yaml, line 10, key rules[0].params.scop: unknown key"],
        id="misspelt-rule-option",
    ),
    pytest.param(
        MINIMAL.replace("action: rewrite", "action: rewrite\n    actions:\n      CONDUCT_MISSING: reject"),
        [
            "policy.yaml, line 10, key rules[0].actions.CONDUCT_MISSING: "
            "Input should be 'CONDUCT_ADDRESS_MISSING'"
        ],
        id="unknown-finding-code",
    ),
    pytest.param(
        MINIMAL.replace("[ada@example.org]", "[ada@example.org, not-an-address]"),
        [
            "policy.yaml, line 5, key organisation.members[0].addresses[1]: "
            "Value error, not a valid email address"
        ],
        id="bad-member-address",
    ),
    pytest.param(
        MINIMAL + LIST_REPLY_ALL + "      addresses: [dev@lists,example.org]\n",
        ["policy.yaml, line 12, key rules[1].params.addresses[0]: Value error, not a valid email address"],
        id="bad-mailing-list-address",
    ),
    pytest.param(
        MINIMAL + LIST_REPLY_ALL + "      domains: [lists example.org]\n",
        ["policy.yaml, line 12, key rules[1].params.domains[0]: Value error, not a valid domain name: It"],
        id="bad-mailing-list-domain",
    ),
    pytest.param(
        MINIMAL.replace("conduct@example.org", "conduct at example.org"),
        ["policy.yaml, line 2, key organisation.conduct_address: Value error, not a valid email address"],
        id="bad-conduct-address",
    ),
    pytest.param(
        MINIMAL.replace("on_error", "x").replace("rules:", "on_error: pass\nrules:"),
        ["policy.yaml, line 6, key on_error: Input should be 'tempfail', 'reject' or 'hold'"],
        id="on-error-never-passes",
    ),
    pytest.param(
        "organisation: {conduct_address: conduct@example.org, members: []}\nrules: []\n",
        [
            "policy.yaml, line 1, key organisation.members: must list at least one entry",
            "policy.yaml, line 2, key rules: must list at least one entry",
        ],
        id="empty-lists-every-error-at-once",
    ),
    pytest.param("", ["policy.yaml, key organisation: Field required"], id="empty-file"),
    pytest.param("organisation: [\n", ["policy.yaml, line 2:"], id="yaml-syntax"),
]


@pytest.mark.parametrize(("text", "expected"), ERRORS)
def test_schema_errors_name_file_line_and_key(text: str, expected: list[str]) -> None:
    message = error_of(text)
    lines = message.splitlines()
    assert len(lines) >= len(expected), message
    for line, start in zip(lines, expected, strict=False):
        assert line.startswith(start), message
    assert "Traceback" not in message


CASE = """\
organisation:
  conduct_address: conduct@example.org
  members:
    - name: Ada Quill
      addresses: [ada@example.org]
rules:
  - rule: reporter-protection
    action: reject
cases:
  - code: home shelf
    reporters:
      - id: quiet-heron
        names: [Robin Castellano]
    reported:
      - id: loud-kettle
        names: [Pat Vandermeer]
    consents:
      - person: quiet-heron
        recipient: mods@example.com
        reference: mail of 2024-03-02
        date: 2024-03-02
"""

SEMANTIC = [
    pytest.param(
        CASE.replace("person: quiet-heron", "person: quiet-hen"),
        "policy.yaml, line 18, key cases[0].consents[0].person: no reporter or witness with id 'quiet-hen' "
        "in case 'home shelf'",
        id="consent-for-unknown-person",
    ),
    pytest.param(
        CASE.replace("person: quiet-heron", "person: loud-kettle"),
        "policy.yaml, line 18, key cases[0].consents[0].person: 'loud-kettle' is a reported party",
        id="consent-for-reported-party",
    ),
    pytest.param(
        CASE.replace("id: loud-kettle", "id: quiet-heron"),
        "policy.yaml, line 15, key cases[0].reported[0].id: id 'quiet-heron' is used twice in this case",
        id="duplicate-person-id",
    ),
    pytest.param(
        CASE + CASE[CASE.index("  - code") :],
        "policy.yaml, line 22, key cases[1].code: two cases have the code name 'home shelf'",
        id="duplicate-case-code",
    ),
    pytest.param(
        CASE.replace(
            "    action: reject\n", "    action: reject\n  - rule: reporter-protection\n    action: hold\n"
        ),
        "policy.yaml, line 9, key rules[1].rule: rule 'reporter-protection' is listed twice",
        id="duplicate-rule",
    ),
    pytest.param(
        CASE.replace(
            "addresses: [ada@example.org]",
            "addresses: [ada@example.org]\n    - name: Ada Two\n      addresses: [ADA@example.org]",
        ),
        "policy.yaml, line 7, key organisation.members[1].addresses[0]: "
        "ADA@example.org is already listed for Ada Quill",
        id="address-of-two-members",
    ),
    pytest.param(
        CASE.replace("addresses: [ada@example.org]", "addresses: [ada@example.org, Conduct@example.org]"),
        "policy.yaml, line 5, key organisation.members[0].addresses[1]: this is the conduct address",
        id="conduct-address-as-member",
    ),
    pytest.param(
        CASE.replace("names: [Robin Castellano]", 'names: ["\\u200bR"]'),
        "policy.yaml, line 13, key cases[0].reporters[0].names[0]: too short to recognise once normalised",
        id="identity-too-short-after-normalising",
    ),
    pytest.param(
        CASE.replace("names: [Robin Castellano]", "names: [R]"),
        "policy.yaml, line 13, key cases[0].reporters[0].names[0]: String should have at least 2 characters",
        id="identity-too-short",
    ),
    pytest.param(
        CASE.replace("        names: [Robin Castellano]\n", "        names: []\n"),
        "policy.yaml, line 12, key cases[0].reporters[0]: Value error, give at least one of names",
        id="person-without-identifiers",
    ),
    pytest.param(
        CASE.replace("code: home shelf", "code: Home Shelf!"),
        "policy.yaml, line 10, key cases[0].code: String should match pattern",
        id="case-code-name-pattern",
    ),
    pytest.param(
        CASE.replace("date: 2024-03-02", "date: last tuesday"),
        "policy.yaml, line 21, key cases[0].consents[0].date: Input should be a valid date",
        id="bad-consent-date",
    ),
]


@pytest.mark.parametrize(("text", "expected"), SEMANTIC)
def test_semantic_errors_name_file_line_and_key(text: str, expected: str) -> None:
    assert error_of(text).startswith(expected), error_of(text)


def test_case_policy_is_valid_before_the_edits_above() -> None:
    parse(CASE)


def test_load_policy_and_read_policy(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(FULL, encoding="utf-8")
    document, source = read_policy(path)
    assert source == FULL.encode()
    assert load_policy(path) == document


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(None, "file not found", id="missing"),
        pytest.param(b"\xff\xfe", "not UTF-8", id="not-utf8"),
        pytest.param(
            MINIMAL.replace("conduct-cc", "nope").encode(), "line 7, key rules[0]: unknown rule", id="invalid"
        ),
    ],
)
def test_load_policy_errors(tmp_path: Path, content: bytes | None, expected: str) -> None:
    path = tmp_path / "p.yaml"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=f"^{path}.*{expected}".replace("[", r"\[")):
        load_policy(path)


def test_shipped_schema_is_fresh() -> None:
    shipped = (REPO / "policies" / "schema.json").read_text(encoding="utf-8")
    assert shipped == policy_json_schema_text(), (
        "policies/schema.json is stale; regenerate it with: .venv/bin/python -c "
        "'from gateway.policy.reference import policy_json_schema_text as s; print(s(), end=\"\")' "
        "> policies/schema.json"
    )


def test_schema_tells_editors_about_every_rule() -> None:
    schema = policy_json_schema()
    rules = schema["properties"]["rules"]["items"]
    assert set(rules["discriminator"]["mapping"]) == {module.NAME for module in RULES}
    text = json.dumps(schema)
    for module in RULES:
        for code in finding_codes(module):
            assert code in text


def test_reference_documents_every_key_and_rule() -> None:
    reference = policy_reference_markdown()
    for _title, model in reference_module._SECTIONS:
        for name, info in model.model_fields.items():
            assert f"| `{name}` |" in reference, name
            assert info.description, f"{model.__name__}.{name} has no description"
    for module in RULES:
        assert f"### {module.NAME}" in reference
        for name in module.Params.model_fields:
            assert f"| `{name}` |" in reference
        for code in finding_codes(module):
            assert f"`{code}`" in reference
