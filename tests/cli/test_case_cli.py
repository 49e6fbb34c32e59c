"""`conduct-gateway case add-report|list`: learn a reporter's message file under a case."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from gateway.cli import main
from gateway.state.fingerprints import FingerprintStore

REPORT = (
    "After the workshop the maintainer from the other project messaged me privately eleven times in one "
    "night, and when I did not answer he posted in the public channel that I was impossible to work with."
)


def eml(tmp_path: Path, sender: str = "Robin Castellano <robin.castellano@mail.example.net>") -> Path:
    path = tmp_path / "report.eml"
    path.write_bytes(
        (
            f"From: {sender}\nTo: conduct@example.org\nSubject: What happened\n"
            "Message-ID: <report-1@mail.example.net>\nContent-Type: text/plain; charset=utf-8\n\n"
            f"{REPORT}\n\n> quoted text of an earlier committee message is not learnt as theirs\n-- \nRobin\n"
        ).encode()
    )
    return path


def test_add_report_learns_fingerprints_under_the_case(config_file: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        main, ["case", "add-report", "home shelf", str(eml(tmp_path)), "--config", str(config_file)]
    )
    assert result.exit_code == 0, result.output
    assert "Learnt report.eml for case home shelf" in result.output
    assert "written by quiet-heron" in result.output
    with FingerprintStore.open(tmp_path / "state") as store:
        (overlap,) = store.overlaps(REPORT)
        assert (overlap.case, overlap.person, overlap.fraction) == ("home shelf", "quiet-heron", 1.0)
        assert store.overlaps("quoted text of an earlier committee message is not learnt as theirs") == []
    listed = runner.invoke(main, ["case", "list", "--config", str(config_file)])
    assert listed.exit_code == 0 and "home shelf: 1 protected message(s)" in listed.output


def test_unknown_case_is_refused_clearly(config_file: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["case", "add-report", "no such case", str(eml(tmp_path)), "--config", str(config_file)]
    )
    assert result.exit_code == 2
    assert "there is no case 'no such case'" in result.output and "'home shelf'" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "state" / "fingerprints.sqlite3").exists()


def test_unknown_person_and_unrecognised_author(config_file: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    path = eml(tmp_path, sender="Someone <someone@example.com>")
    bad = runner.invoke(
        main,
        ["case", "add-report", "home shelf", str(path), "--person", "nobody", "--config", str(config_file)],
    )
    assert bad.exit_code == 2 and "--person nobody" in bad.output
    unknown = runner.invoke(
        main, ["case", "add-report", "home shelf", str(path), "--config", str(config_file)]
    )
    assert unknown.exit_code == 0 and "author not recognised" in unknown.output
    given = runner.invoke(
        main,
        [
            "case",
            "add-report",
            "home shelf",
            str(path),
            "--person",
            "amber-finch",
            "--config",
            str(config_file),
        ],
    )
    assert given.exit_code == 0 and "written by amber-finch" in given.output


def test_a_message_without_enough_words_is_refused(config_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "short.eml"
    path.write_bytes(b"From: x@example.com\nSubject: hi\n\nThanks!\n")
    result = CliRunner().invoke(
        main, ["case", "add-report", "home shelf", str(path), "--config", str(config_file)]
    )
    assert result.exit_code == 2 and "nothing to learn" in result.output
