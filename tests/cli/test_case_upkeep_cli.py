"""`conduct-gateway case edit-person|remove-person|severity`: audited, identity-free output, and in force
on a running screener at its next reload (no restart)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.cli.case_upkeep import edited_person
from gateway.decision.policy_screener import PolicyScreener
from gateway.decision.policy_source import ReloadResult
from gateway.decision.screening import Accept
from gateway.errors import GatewayError
from gateway.policy.config import Person
from gateway.replies import Reply
from gateway.settings import load_settings
from tests.cli.test_case_registry_cli import (
    ADDRESS,
    ALIAS,
    NAME,
    OUTSIDER,
    add_reporter,
    assert_no_identity,
    case_entries,
    cli,
    new_case,
    ok,
    registry_of,
    submission,
)

NEW_NAME = "Jorunn Halvorsen"
NEW_ALIAS = "Runa"


def test_edit_person_renames_and_the_running_screener_protects_the_new_form(config_file: Path) -> None:
    code = new_case(config_file)
    person = add_reporter(config_file, code)
    with PolicyScreener.from_settings(load_settings(config_file)) as screener:
        screener.reload_if_changed()
        assert isinstance(screener.screen(submission("Hi", f"{NEW_ALIAS} says hi.", OUTSIDER, "Q1")), Accept)

        edited = ok(
            cli(
                config_file, "edit-person", code, person, "--rename", NAME, NEW_NAME, "--add-alias", NEW_ALIAS
            ),
        )
        assert f"Edited {person} in case {code}: 2 identities added, 1 removed" in edited.stdout
        assert_no_identity(edited.output)
        assert NEW_ALIAS not in edited.output
        assert screener.reload_if_changed() is ReloadResult.RELOADED

        refused = screener.screen(submission("Hi", f"{NEW_ALIAS} says hi.", OUTSIDER, "Q2"))
        assert isinstance(refused, Reply) and refused.code == 550
        assert NEW_ALIAS not in "\n".join(refused.lines)

        ok(cli(config_file, "edit-person", code, person, "--remove-alias", ALIAS))
        assert screener.reload_if_changed() is ReloadResult.RELOADED
        # The removed alias alone is no longer protected; the address still is.
        assert isinstance(screener.screen(submission("Hi", f"{ALIAS} says hi.", OUTSIDER, "Q3")), Accept)
        still = screener.screen(submission("Hi", f"Write to {ADDRESS}.", OUTSIDER, "Q4"))
        assert isinstance(still, Reply) and still.code == 550
        screener.review_housekeeping()  # case actions left while the gateway holds the trail

    [stored] = registry_of(config_file).cases()
    [reporter] = stored.reporters
    assert (reporter.names, reporter.aliases) == ((NEW_NAME,), (NEW_ALIAS,))
    entries = [e for e in case_entries(config_file) if e["action"] == "edit-person"]
    assert [(e["case"], e["person"], e["added"], e["removed"]) for e in entries] == [
        (code, person, 2, 1),
        (code, person, 0, 1),
    ]


def test_edit_person_refuses_a_value_the_person_does_not_have_without_echoing_it(config_file: Path) -> None:
    code = new_case(config_file)
    person = add_reporter(config_file, code)
    result = cli(config_file, "edit-person", code, person, "--remove-alias", "Nobody Known")
    assert result.exit_code != 0 and "no such alias" in result.output and "Nobody Known" not in result.output
    empty = cli(config_file, "edit-person", code, person)
    assert empty.exit_code != 0 and "say what to change" in empty.output
    unknown = cli(config_file, "edit-person", code, "no-such-person", "--add-alias", "X")
    assert unknown.exit_code != 0 and person in unknown.output and "Traceback" not in unknown.output


def test_remove_person_drops_their_consents_and_protection(config_file: Path) -> None:
    code = new_case(config_file)
    person = add_reporter(config_file, code)
    ok(
        cli(
            config_file,
            *("consent", code, person, "--recipient", OUTSIDER),
            *("--reference", "case folder", "--date", "2025-01-02"),
        )
    )
    with PolicyScreener.from_settings(load_settings(config_file)) as screener:
        screener.reload_if_changed()
        before = screener.screen(submission("Hi", f"Write to {ADDRESS}.", "x@example.com", "Q1"))
        assert isinstance(before, Reply)
        removed = ok(cli(config_file, "remove-person", code, person))
        assert f"Removed reporter {person} from case {code}, with 1 consent they gave." in removed.stdout
        assert_no_identity(removed.output)
        assert screener.reload_if_changed() is ReloadResult.RELOADED
        after = screener.screen(submission("Hi", f"Write to {ADDRESS}.", "x@example.com", "Q2"))
        assert isinstance(after, Accept)
        screener.review_housekeeping()
    [stored] = registry_of(config_file).cases()
    assert (stored.reporters, stored.consents) == ((), ())
    [entry] = [e for e in case_entries(config_file) if e["action"] == "remove-person"]
    assert (entry["person"], entry["role"], entry["consents"]) == (person, "reporter", 1)


def test_severity_changes_the_approvals_a_hold_needs_and_is_audited(config_file: Path) -> None:
    code = new_case(config_file)
    out = ok(cli(config_file, "severity", code, "severe")).stdout
    assert f"Case {code} is now severe (was normal)." in out
    [stored] = registry_of(config_file).cases()
    assert stored.severity == "severe"
    [entry] = [e for e in case_entries(config_file) if e["action"] == "severity"]
    assert (entry["severity"], entry["was"]) == ("severe", "normal")
    assert cli(config_file, "severity", code, "mild").exit_code == 2


_WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=3, max_size=10)


@given(
    aliases=st.lists(_WORD, min_size=1, max_size=4, unique=True),
    extra=st.lists(_WORD, max_size=4, unique=True),
    data=st.data(),
)
def test_edited_person_adds_and_removes_exactly_what_is_asked(
    aliases: list[str], extra: list[str], data: st.DataObject
) -> None:
    person = Person(id="quiet-heron", names=("Tove Lindqvist",), aliases=tuple(aliases))
    to_remove = data.draw(st.lists(st.sampled_from(aliases), unique=True))
    new = [word for word in extra if word not in aliases]
    changed, added, removed = edited_person(
        person, added=[("alias", w) for w in extra], removed=[("alias", w) for w in to_remove]
    )
    assert set(changed.aliases) == (set(aliases) - set(to_remove)) | set(extra)
    assert changed.names == person.names
    assert (added, removed) == (len(new) + len([w for w in extra if w in to_remove]), len(to_remove))


def test_edited_person_keeps_at_least_one_identity() -> None:
    person = Person(id="quiet-heron", aliases=("Tove",))
    with pytest.raises(GatewayError, match="at least one"):
        edited_person(person, removed=[("alias", "tove")])
