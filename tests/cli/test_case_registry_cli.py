"""`conduct-gateway case new|add-person|consent|conflict|close|list|show|import-policy` and the running
screener picking registry changes up without a restart."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from ruamel.yaml import YAML

from gateway.cli import main
from gateway.code_names import code_words
from gateway.decision.policy_screener import PolicyScreener
from gateway.decision.policy_source import ReloadResult
from gateway.decision.screening import Accept, Submission
from gateway.policy.loader import read_policy
from gateway.replies import Reply
from gateway.settings import load_settings
from gateway.state import registry as registry_module
from gateway.state.audit import AuditTrail, audit_dir
from gateway.state.audit_later import FileAudit
from gateway.state.audit_reading import read_entries, verify
from gateway.state.opening import open_state
from gateway.state.registry import CaseRegistry, generate_key
from tests.cli.conftest import SHIPPED_POLICY, write_config

NAME = "Jorunn Halvorsen-Bakke"
ALIAS = "Jojo"
ADDRESS = "jorunn.hb@mail.example.net"
USERNAME = "jorunn_hb"
ADA = "ada.quill@example.org"
BRAM = "bram.oduya@example.org"
CONDUCT = "conduct@example.org"
OUTSIDER = "someone@example.com"


def cli(config: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, ["case", *args, "--config", str(config)], env=env)


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


def new_case(config: Path, *args: str) -> str:
    out = ok(cli(config, "new", *args)).stdout
    return out.split("Opened case ", 1)[1].split(" (", 1)[0]


def add_reporter(config: Path, code: str) -> str:
    args = ["--role", "reporter", "--name", NAME, "--alias", ALIAS, "--address", ADDRESS]
    out = ok(cli(config, "add-person", code, *args, "--username", USERNAME)).stdout
    return out.split("Added reporter ", 1)[1].split(" ", 1)[0]


def registry_of(config: Path) -> CaseRegistry:
    return CaseRegistry.from_settings(load_settings(config))


def assert_no_identity(text: str | bytes) -> None:
    for identity in (NAME, ALIAS, ADDRESS, USERNAME, "Halvorsen"):
        value = identity.encode() if isinstance(text, bytes) else identity
        assert value not in text, identity  # type: ignore[operator]


def test_new_case_gets_a_two_word_code_name(config_file: Path) -> None:
    code = new_case(config_file, "--severity", "severe")
    adjective, noun = code.split(" ")
    adjectives, nouns = code_words()
    assert adjective in adjectives and noun in nouns
    [stored] = registry_of(config_file).cases()
    assert (stored.code, stored.severity, stored.status) == (code, "severe", "open")
    assert stat.S_IMODE(registry_of(config_file).path.stat().st_mode) == 0o600


def test_new_case_avoids_taken_code_names(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # "home shelf" is the shipped policy's example case: a random pick of it must be drawn again.
    picks = iter(["home", "shelf", "stunned", "bulb", "stunned", "bulb", "tidy", "lantern"])
    monkeypatch.setattr(registry_module.secrets, "choice", lambda _words: next(picks))
    assert new_case(config_file) == "stunned bulb"
    assert new_case(config_file) == "tidy lantern"
    taken = cli(config_file, "new", "--code", "Home  Shelf")
    assert taken.exit_code == 2 and "already used" in taken.output and "Traceback" not in taken.output


def test_add_person_consent_conflict_close_list_and_show(config_file: Path) -> None:
    code = new_case(config_file)
    person = add_reporter(config_file, code)
    assert "-" in person and person.split("-")[0] in code_words()[0]
    witness = ok(cli(config_file, "add-person", code, "--role", "witness", "--alias", "Tiberius Q"))
    assert "Tiberius" not in witness.output
    consent = cli(
        config_file,
        "consent",
        code,
        person,
        "--recipient",
        "orga@events.example.com",
        "--reference",
        "mail of 2024-05-01 in the case folder",
        "--date",
        "2024-05-01",
    )
    ok(consent)
    ok(cli(config_file, "conflict", code, "bram@oduya-family.example.net"))
    ok(cli(config_file, "close", code))
    listed = ok(cli(config_file, "list")).stdout
    line = next(row for row in listed.splitlines() if row.startswith(code + ":"))
    assert "closed, normal, 1 reporter, 1 witness, 0 reported parties, 1 consent" in line
    assert "2 conflicts of interest" in line  # both of Bram's addresses
    assert "home shelf: 0 protected message(s)" in listed  # the policy's example case too
    for output in (consent.output, listed):
        assert_no_identity(output)
    assert_no_identity(registry_of(config_file).path.read_bytes())

    refused = cli(config_file, "show", code)
    assert refused.exit_code == 2 and "--reveal" in refused.output
    assert_no_identity(refused.output)
    shown = ok(cli(config_file, "show", code, "--reveal"))
    assert NAME in shown.stdout and ADDRESS in shown.stdout and "Tiberius Q" in shown.stdout
    assert "bram.oduya@example.org" in shown.stdout and "status: closed" in shown.stdout
    assert shown.stderr.startswith("WARNING:")


def test_show_lists_the_forms_matched_for_each_person(config_file: Path) -> None:
    code = new_case(config_file)
    person = add_reporter(config_file, code)
    witness = ok(
        cli(
            config_file,
            "add-person",
            code,
            "--role",
            "witness",
            "--name",
            "Robin Vale",
            "--everyday-word",
            "Robin",
            "--id",
            "calm-otter",
        )
    )
    assert "Robin" not in witness.output
    shown = ok(cli(config_file, "show", code, "--reveal")).stdout
    matched = YAML(typ="safe", pure=True).load("matched:" + shown.split("\nmatched:", 1)[1])["matched"]
    reporter = matched[person]
    assert "Halvorsen-Bakke, Jorunn  (surname, given name)" in reporter["strong"]
    assert "J. Halvorsen-Bakke  (initial and surname)" in reporter["strong"]
    assert "jorunn.hb  (local part of the address)" in reporter["strong"]
    assert "@jorunn_hb  (username)" in reporter["strong"]
    assert any(
        line.startswith("<title> ") and "Halvorsen-Bakke" in line and "Mx" in line
        for line in reporter["strong"]
    )
    assert "jorunn  (given name)" in reporter["weak"] and "bakke  (part of the surname)" in reporter["weak"]
    assert "robin  (given name)" in matched["calm-otter"]["not looked for alone"]
    assert "vale  (surname)" in matched["calm-otter"]["weak"]
    assert "weak_forms: true" in shown and "- Robin" in shown  # the person as recorded


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["add-person", "no such case", "--role", "reporter", "--name", NAME], "no case"),
        pytest.param(["add-person", "{code}", "--role", "witness"], "give at least one of"),
        pytest.param(["add-person", "{code}", "--role", "reporter", "--address", "not-an-address"], "email"),
        pytest.param(["add-person", "{code}", "--role", "reporter", "--alias", "J"], "at least 2"),
        pytest.param(
            [
                "consent",
                "{code}",
                "nobody-here",
                "--recipient",
                "x@example.com",
                "--reference",
                "r",
                "--date",
                "2024-01-01",
            ],
            "no reporter or witness with id 'nobody-here'",
        ),
        pytest.param(["conflict", "{code}", "stranger@example.com"], "not a committee member"),
        pytest.param(["close", "home shelf"], "import-policy"),
    ],
)
def test_invalid_edits_are_clear_errors_and_write_nothing(
    config_file: Path, args: list[str], message: str
) -> None:
    code = new_case(config_file)
    before = registry_of(config_file).path.read_bytes()
    result = cli(config_file, *[arg.replace("{code}", code) for arg in args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert_no_identity(result.output)
    assert registry_of(config_file).path.read_bytes() == before


def test_wrong_or_missing_key_is_a_clear_error(config_file: Path) -> None:
    code = new_case(config_file)
    add_reporter(config_file, code)
    for args in (
        ("list",),
        ("show", code, "--reveal"),
        ("add-person", code, "--role", "witness", "--alias", "Ti"),
    ):
        wrong = cli(config_file, *args, env={"CONDUCT_REGISTRY_KEY": generate_key()})
        assert wrong.exit_code == 2, wrong.output
        assert "cannot be decrypted" in wrong.output and "Traceback" not in wrong.output
    registry = registry_of(config_file)
    registry.default_key_file.unlink()
    for args in (("list",), ("show", code, "--reveal")):
        missing = cli(config_file, *args)
        assert missing.exit_code == 2 and "no key for the case registry" in missing.output
        assert not registry.default_key_file.exists()  # never a new key for an existing registry
    validate = CliRunner().invoke(main, ["config", "validate", str(config_file)])
    assert validate.exit_code == 2 and "no key for the case registry" in validate.output


def test_show_needs_the_key_even_without_a_registry(config_file: Path, tmp_path: Path) -> None:
    result = cli(config_file, "show", "home shelf", "--reveal")
    assert result.exit_code == 2 and "no key" in result.output
    ok(cli(config_file, "new"))  # makes the key
    shown = ok(cli(config_file, "show", "home shelf", "--reveal"))
    assert "Robin Castellano" in shown.stdout


def test_key_in_environment_and_new_key_command(tmp_path: Path) -> None:
    key_file = tmp_path / "secret" / "registry.key"
    made = CliRunner().invoke(main, ["case", "new-key", str(key_file)])
    assert made.exit_code == 0 and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    config = write_config(tmp_path, f"registry:\n  key_file: {key_file}\n")
    code = new_case(config)
    registry = registry_of(config)
    assert not registry.default_key_file.exists()
    env = {"CONDUCT_REGISTRY_KEY": key_file.read_text().strip()}
    assert code in ok(cli(config, "list", env=env)).stdout
    again = CliRunner().invoke(main, ["case", "new-key", str(key_file)])
    assert again.exit_code == 2 and "never overwritten" in again.output


def test_import_policy_moves_the_cases_and_keeps_the_rest_of_the_file(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    shutil.copy(SHIPPED_POLICY, policy)
    policy.chmod(0o640)
    config = write_config(tmp_path, f"policy:\n  path: {policy}\n")
    first = ok(cli(config, "import-policy"))
    assert "Imported 1 case into the case registry" in first.stdout and "still in" in first.stdout
    assert "home shelf" in ok(cli(config, "list")).stdout  # identical copies count once
    moved = ok(cli(config, "import-policy", "--remove-from-policy"))
    assert "all were there already" in moved.stdout and "Removed the cases" in moved.stdout
    text = policy.read_text(encoding="utf-8")
    assert "Robin Castellano" not in text and "robin.castellano@" not in text
    assert "# --- Who the committee is" in text and "rule: code-names" in text
    assert stat.S_IMODE(policy.stat().st_mode) == 0o640
    assert read_policy(policy)[0].cases == ()
    [case] = registry_of(config).cases()
    assert case.code == "home shelf" and case.reporters[0].names == ("Robin Castellano",)
    assert "in the registry" in ok(cli(config, "list")).stdout
    nothing = ok(cli(config, "import-policy"))
    assert "nothing to import" in nothing.stdout


def test_add_report_works_for_a_registry_case(config_file: Path, tmp_path: Path) -> None:
    code = new_case(config_file)
    person = add_reporter(config_file, code)
    report = tmp_path / "report.eml"
    report.write_bytes(
        f"From: {ADDRESS}\r\nTo: {CONDUCT}\r\nSubject: report\r\n\r\n".encode()
        + b"At the meetup on Friday someone kept interrupting me and followed me to the station.\r\n"
    )
    result = ok(cli(config_file, "add-report", code, str(report)))
    assert f"written by {person}" in result.stdout
    assert f"{code}: 1 protected message(s)" in ok(cli(config_file, "list")).stdout


# --- the running gateway: the matcher is rebuilt when the registry changes ------------------------


def submission(subject: str, body: str, rcpt: str, queue_id: str) -> Submission:
    content = (
        f"From: Ada Quill <{ADA}>\r\nTo: <{rcpt}>\r\nCc: <{CONDUCT}>\r\nSubject: {subject}\r\n"
        f"Message-ID: <{queue_id}@example.org>\r\nDate: Sat, 01 Mar 2025 10:00:00 +0000\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    ).encode()
    return Submission(
        queue_id=queue_id, mail_from=ADA, rcpt_tos=(rcpt, CONDUCT), authenticated_as=ADA, content=content
    )


def test_screener_picks_up_a_new_person_without_a_restart(config_file: Path) -> None:
    settings = load_settings(config_file)
    with PolicyScreener.from_settings(settings) as screener:
        before = screener.screen(submission("Hello", f"{NAME} says hello.", OUTSIDER, "Q1"))
        assert isinstance(before, Accept)
        version = screener.policy_version
        assert screener.reload_if_changed() is ReloadResult.UNCHANGED

        code = new_case(config_file)
        assert screener.reload_if_changed() is ReloadResult.RELOADED  # a new, empty case
        add_reporter(config_file, code)
        assert screener.reload_if_changed() is ReloadResult.RELOADED
        assert screener.policy_version != version

        after = screener.screen(submission("Hello", f"{NAME} says hello.", OUTSIDER, "Q2"))
        assert isinstance(after, Reply) and after.code == 550
        assert_no_identity("\n".join(after.lines))
        # Inside the committee the name may be written, but not in the Subject: a warning only.
        warned = screener.screen(submission(f"About {NAME}", "See the notes.", BRAM, "Q3"))
        assert isinstance(warned, Accept) and warned.verdict == "deliver"
        assert warned.findings == ("code-names:REAL_NAME_IN_SUBJECT",)
        assert len(warned.extra) == 1  # the warning notice to the sender
        coded = screener.screen(submission(f"About {code}", f"{NAME} wrote again.", BRAM, "Q4"))
        assert isinstance(coded, Accept) and coded.findings == () and coded.extra == ()

        # A registry that disappears never silently drops every case's protection.
        assert (screener.statistics().registry_unreadable, screener.statistics().reload_pending_refused) == (
            0,
            0,
        )
        registry_of(config_file).path.unlink()
        assert screener.reload_if_changed() is ReloadResult.REFUSED
        kept = screener.screen(submission("Hello", f"{NAME} says hello.", OUTSIDER, "Q5"))
        assert isinstance(kept, Reply)
        assert screener.statistics().registry_unreadable == 1  # what the alert rule watches

        # A registry the key cannot open is refused too; the last good cases stay in force.
        registry_of(config_file).path.write_bytes(b"conduct-gateway case registry v1\n" + bytes(64))
        assert screener.reload() is ReloadResult.REFUSED
        assert isinstance(screener.screen(submission("Hello", f"{ALIAS} again.", OUTSIDER, "Q6")), Reply)
        statistics = screener.statistics()
        assert (statistics.registry_unreadable, statistics.reload_pending_refused) == (1, 1)


def test_check_sees_registry_cases(config_file: Path, tmp_path: Path) -> None:
    code = new_case(config_file)
    add_reporter(config_file, code)
    eml = tmp_path / "out.eml"
    eml.write_bytes(submission("Hello", f"{NAME} says hello.", OUTSIDER, "Q1").content)
    args = ["check", str(eml), "--from", ADA, "--to", OUTSIDER, "--to", CONDUCT, "--json"]
    result = CliRunner().invoke(main, [*args, "--config", str(config_file)])
    assert result.exit_code == 0, result.output
    assert '"verdict": "reject"' in result.stdout and "PROTECTED_IDENTITY" in result.stdout


def case_entries(config: Path) -> list[dict[str, object]]:
    state = load_settings(config).state_dir
    return [dict(entry.fields) for entry in read_entries(audit_dir(state)) if entry.fields["event"] == "case"]


def test_every_case_command_and_every_reveal_is_audited_without_identities(config_file: Path) -> None:
    code = new_case(config_file)
    person = add_reporter(config_file, code)
    ok(
        cli(
            config_file,
            "consent",
            code,
            person,
            "--recipient",
            OUTSIDER,
            "--reference",
            "R1",
            "--date",
            "2025-01-02",
        )
    )
    ok(cli(config_file, "conflict", code, BRAM))
    ok(cli(config_file, "close", code))
    ok(cli(config_file, "show", code, "--reveal"))
    entries = case_entries(config_file)
    assert [(e["action"], e["case"]) for e in entries] == [
        ("new", code),
        ("add-person", code),
        ("consent", code),
        ("conflict", code),
        ("close", code),
        ("show-reveal", code),
    ]
    assert entries[1]["person"] == person and entries[1]["identities"] == 4
    assert all(isinstance(e["by"], str) and e["by"] for e in entries)
    state = load_settings(config_file).state_dir
    assert_no_identity(b"".join(path.read_bytes() for path in audit_dir(state).iterdir()))
    assert verify(audit_dir(state)).ok
    shown = CliRunner().invoke(main, ["audit", "show", "--case", code, "--config", str(config_file)])
    assert shown.exit_code == 0, shown.output
    assert "case show-reveal" in shown.output and "case add-person" in shown.output
    assert_no_identity(shown.output)


def test_while_a_gateway_holds_the_trail_case_actions_wait_in_the_outbox(config_file: Path) -> None:
    settings = load_settings(config_file)
    code = new_case(config_file)
    with AuditTrail.open(audit_dir(settings.state_dir)) as running_gateway:
        ok(cli(config_file, "show", code, "--reveal"))
        assert [e["action"] for e in case_entries(config_file)] == ["new"]  # not yet
        assert open_state(settings).audit.drain_later(running_gateway) == 1
    [_, later] = case_entries(config_file)
    assert (later["action"], later["case"], later["recorded_later"]) == ("show-reveal", code, True)


def test_a_reveal_that_cannot_be_recorded_shows_nothing(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = new_case(config_file)
    add_reporter(config_file, code)
    state = load_settings(config_file).state_dir

    def disk_full(self: FileAudit, item: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(FileAudit, "_leave", disk_full)
    with AuditTrail.open(audit_dir(state)):  # a gateway holds the trail, and the outbox cannot be written
        result = cli(config_file, "show", code, "--reveal")
    assert result.exit_code == 2, result.output
    assert "cannot record" in result.output and "Traceback" not in result.output
    assert_no_identity(result.output)


def test_with_review_off_the_gateway_still_records_queued_case_actions(config_file: Path) -> None:
    settings = load_settings(config_file)
    settings = settings.model_copy(update={"review": settings.review.model_copy(update={"enabled": False})})
    code = new_case(config_file)
    with PolicyScreener.from_settings(settings) as gateway:  # holds the audit trail
        assert gateway.review is None
        ok(cli(config_file, "close", code))
        assert gateway.review_housekeeping() == ()
    assert [(e["action"], e.get("recorded_later")) for e in case_entries(config_file)] == [
        ("new", None),
        ("close", True),
    ]


def test_rekey_re_encrypts_the_registry_with_a_new_key(tmp_path: Path) -> None:
    old_key, new_key = tmp_path / "keys" / "old.key", tmp_path / "keys" / "new.key"
    for key_file in (old_key, new_key):
        ok(CliRunner().invoke(main, ["case", "new-key", str(key_file)]))
    config = write_config(tmp_path, f"registry:\n  key_file: {old_key}\n")
    code = new_case(config)
    add_reporter(config, code)
    registry = registry_of(config)
    before = registry.path.read_bytes()
    same = cli(config, "rekey", str(old_key))
    assert same.exit_code == 2 and "already encrypted with" in same.output
    done = ok(cli(config, "rekey", str(new_key)))
    assert "Re-encrypted the case registry" in done.stdout and "1 case" in done.stdout
    assert registry.path.read_bytes() != before
    assert stat.S_IMODE(registry.path.stat().st_mode) == 0o600
    # The old key no longer opens it (the error names the file, never a case's content) ...
    refused = cli(config, "list")
    assert refused.exit_code == 2 and "cannot be decrypted" in refused.output
    assert_no_identity(refused.output)
    # ... the new one does, with every case and person intact.
    switched = write_config(tmp_path, f"registry:\n  key_file: {new_key}\n")
    assert code in ok(cli(switched, "list")).stdout
    [stored] = registry_of(switched).cases()
    assert stored.code == code and [p.names for p in stored.reporters] == [(NAME,)]
    assert [e["action"] for e in case_entries(switched)][-1] == "rekey"


def test_scripts_get_the_code_names_alone_or_as_json(config_file: Path) -> None:
    code = ok(cli(config_file, "new", "--quiet")).stdout.strip()
    assert code and "\n" not in code and code == " ".join(code.split())
    person = ok(cli(config_file, "add-person", code, "--role", "witness", "--name", NAME, "--quiet")).stdout
    assert person.strip() and " " not in person.strip()
    made = json.loads(ok(cli(config_file, "new", "--json", "--severity", "severe")).stdout)
    assert made["severity"] == "severe" and made["code"] != code
    added = json.loads(
        ok(
            cli(config_file, "add-person", made["code"], "--role", "reporter", "--alias", ALIAS, "--json")
        ).stdout
    )
    assert added == {"case": made["code"], "person": added["person"], "role": "reporter", "identities": 1}
    listed = {entry["code"]: entry for entry in json.loads(ok(cli(config_file, "list", "--json")).stdout)}
    assert listed[code]["witnesses"] == 1 and listed[code]["where"] == "registry"
    assert listed[made["code"]]["reporters"] == 1 and listed[made["code"]]["severity"] == "severe"
    for output in (person, json.dumps(added), json.dumps(listed)):
        assert_no_identity(output)
