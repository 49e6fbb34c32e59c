"""bench/profile_policy.py still runs: the per-size CPU table and a share for every stage and rule.

No figure is asserted (benchmarks report; timed tests would be flaky and dishonest).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_the_policy_profile_reports_every_stage_and_every_rule_of_the_shipped_policy() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "profile_policy.py"), "--quick", "--sizes", "8 KB"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0] == "| size | CPU ms/message | CPU ms per MB |"
    assert rows[1].startswith("| 8 KB | ")
    stages = {row.split(" | ")[0].removeprefix("| ") for row in rows[3:]}
    shipped = yaml.safe_load((ROOT / "gateway" / "data" / "default-policy.yaml").read_text())
    assert {f"rule {entry['rule']}" for entry in shipped["rules"]} <= stages
    assert "parse: MIME structure (mime_split, else the stdlib feedparser)" in stages


def test_an_unknown_size_is_refused_with_the_choices() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "profile_policy.py"), "--sizes", "3 KB"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2 and "choose from 8 KB, 200 KB, 1 MB, 5 MB" in result.stderr
