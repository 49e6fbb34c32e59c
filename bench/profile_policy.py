"""Where the policy's time goes per message, by stage, and how it grows with the message's size.

Parses and evaluates the same multipart message as ``bench/policy.py`` (plain text, its HTML
alternative and a base64 text attachment, sent to an outside recipient so every part is read)
under the shipped policy with every rule on (``gateway/data/default-policy.yaml``), at 8 KB,
200 KB, 1 MB and 5 MB. Two passes per size:

- without a profiler: CPU milliseconds per message and per MB (``time.process_time``), which
  shows whether the work grows linearly with the size;
- under cProfile: the share of each stage (the cumulative time of the function that does it) in
  the profiled total. cProfile slows Python code more than C code, so the shares are a guide to
  where to look, not a measurement of the stages' own speed.

    .venv/bin/python bench/profile_policy.py            # about a minute
    .venv/bin/python bench/profile_policy.py --quick    # fewer rounds
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policy import message
from report import machine_description

from gateway.policy.engine import compile_policy, evaluate
from gateway.policy.loader import parse_policy_text
from gateway.policy.mime import parse_message
from gateway.policy.model import Envelope, Outcome, ThreadFacts
from gateway.policy.normalize import clear_cache
from gateway.policy.rewrite import apply_rewrite

POLICY = Path(__file__).resolve().parents[1] / "gateway" / "data" / "default-policy.yaml"
SIZES = {"8 KB": 8 * 1024, "200 KB": 200 * 1024, "1 MB": 1024 * 1024, "5 MB": 5 * 1024 * 1024}
ENVELOPE = Envelope(
    mail_from="ada.quill@example.org",
    rcpt_tos=("mods@forum.example.com", "conduct@example.org"),
    authenticated_as="ada.quill@example.org",
)

# Stage -> (file suffix, function name) whose cumulative time is the stage's.
STAGES = {
    "whole message (parse + evaluate + rewrite)": ("bench/profile_policy.py", "one_message"),
    "parse: MIME structure (mime_split, else the stdlib feedparser)": (
        "gateway/policy/mime_parser.py",
        "parse_email",
    ),
    "parse: HTML to text (libxml2 via lxml)": ("gateway/policy/html.py", "render_html"),
    "parse: all of it (decoding, normalising, records)": ("gateway/policy/mime.py", "parse_message"),
    "evaluate: every rule": ("gateway/policy/engine.py", "evaluate"),
    "evaluate: identity matching (automaton + confirmation)": ("gateway/policy/matcher.py", "find_hits"),
    "evaluate: normalising text (once per text, cached)": ("gateway/policy/normalize.py", "normalize"),
    "rewrite (Cc, banner, anonymisation)": ("gateway/policy/rewrite.py", "apply_rewrite"),
}


def one_message(raw: bytes, policy: object) -> None:
    # Every round parses the same bytes; the gateway sees each message once. Without this, the
    # texts of the message would be normalised in the first round only.
    clear_cache()
    parsed = parse_message(raw)
    verdict = evaluate(parsed, ENVELOPE, policy, ThreadFacts())  # type: ignore[arg-type]
    if verdict.outcome is Outcome.REWRITE:
        apply_rewrite(raw, verdict.rewrite)


def rule_stages(stats: pstats.Stats) -> dict[str, float]:
    """Each rule's ``check`` (cumulative seconds), from the profile."""
    found: dict[str, float] = {}
    for (filename, _line, function), row in stats.stats.items():  # type: ignore[attr-defined]
        if function == "check" and "/gateway/policy/rules/" in filename:
            found[f"rule {Path(filename).stem.replace('_', '-')}"] = row[3]
    return found


def stage_seconds(stats: pstats.Stats) -> dict[str, float]:
    totals = dict.fromkeys(STAGES, 0.0)
    for (filename, _line, function), row in stats.stats.items():  # type: ignore[attr-defined]
        for stage, (suffix, name) in STAGES.items():
            if function == name and filename.endswith(suffix):
                totals[stage] += row[3]
    return totals


def run(quick: bool, sizes: dict[str, int]) -> str:
    text = POLICY.read_text(encoding="utf-8")
    document = parse_policy_text(text, POLICY)
    policy = compile_policy(document, text.encode())
    lines = [*machine_description(sys.argv), f"- Policy: {POLICY.name} (every rule on)", ""]
    lines += ["| size | CPU ms/message | CPU ms per MB |", "| :--- | ---: | ---: |"]
    shares: dict[str, dict[str, float]] = {}
    # Every message unique (its last words carry a number): the gateway never sees one twice, so
    # no answer kept for a recent text may answer for it here either.
    serials = itertools.count(1)
    for label, size in sizes.items():
        rounds = max(2, (40 if quick else 200) * 8 * 1024 // size)
        one_message(message(size, next(serials)), policy)  # warm caches
        unique = [message(size, next(serials)) for _ in range(rounds)]
        started = time.process_time()
        for raw in unique:
            one_message(raw, policy)
        per_message = (time.process_time() - started) / rounds * 1000
        lines.append(f"| {label} | {per_message:.2f} | {per_message / (len(unique[0]) / 1e6):.1f} |")
        profiled = [message(size, next(serials)) for _ in range(max(1, rounds // 4))]
        profiler = cProfile.Profile()
        profiler.enable()
        for raw in profiled:
            one_message(raw, policy)
        profiler.disable()
        stats = pstats.Stats(profiler)
        seconds = stage_seconds(stats) | rule_stages(stats)
        whole = seconds.pop(next(iter(STAGES))) or 1.0
        shares[label] = {stage: value / whole for stage, value in seconds.items()}
    rules = {f"rule {entry.rule}" for entry in document.rules}
    stages = sorted({stage for found in shares.values() for stage in found} | rules)
    lines += ["", "Share of the profiled time per message:", ""]
    lines.append("| stage | " + " | ".join(sizes) + " |")
    lines.append("| :--- |" + " ---: |" * len(sizes))
    for stage in stages:
        # A rule whose check never ran for this message (its audience or trigger is absent).
        cells = " | ".join(
            f"{shares[label][stage]:.0%}" if stage in shares[label] else "not run" for label in sizes
        )
        lines.append(f"| {stage} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds (smoke test)")
    parser.add_argument("--sizes", default=",".join(SIZES), help=f"comma-separated, of: {', '.join(SIZES)}")
    arguments = parser.parse_args()
    wanted = [label.strip() for label in arguments.sizes.split(",")]
    unknown = [label for label in wanted if label not in SIZES]
    if unknown:
        parser.error(f"unknown size {unknown[0]!r}; choose from {', '.join(SIZES)}")
    print(run(arguments.quick, {label: SIZES[label] for label in wanted}))


if __name__ == "__main__":
    main()
