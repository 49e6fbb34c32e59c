"""Policy evaluation time per message, and how it grows with the number of protected identities.

Measures parse + evaluate (+ the rewrite when the verdict asks for one) — exactly the work the
gateway does between the end of DATA and the spool commit — for an 8 KB and a 200 KB message
sent to an outside recipient (so reporter-protection inspects every part), with 10, 1,000 and
10,000 protected people in the policy (each with a full name, an alias, an address and a username,
so four identities, and every name form the matcher derives from them: other orders, initials,
name parts, letter-spaced forms). Also reports how long reading and compiling the policy takes,
how many patterns the one automaton holds, and how much memory compiling takes (Python
allocations traced, and the process's resident set growth).

    .venv/bin/python bench/policy.py            # full run (about a minute)
    .venv/bin/python bench/policy.py --quick    # fewer rounds, for a smoke test

Targets (issues 3 and 12): p99 <= 2 ms for 8 KB at 10,000 people; no more than 2x growth from 10
to 10,000 people. They are printed next to the figures, never asserted: this is a benchmark, not
a test.
"""

from __future__ import annotations

import argparse
import base64
import gc
import itertools
import os
import random
import statistics
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from report import machine_description, percentile
from synthetic import pseudo_word

from gateway.policy.engine import CompiledPolicy, compile_policy, evaluate
from gateway.policy.loader import parse_policy_text
from gateway.policy.matcher import all_forms
from gateway.policy.mime import parse_message
from gateway.policy.model import Envelope, Outcome, ThreadFacts
from gateway.policy.rewrite import apply_rewrite

PEOPLE_COUNTS = (10, 1_000, 10_000)
P99_TARGET_MS = 2.0
MESSAGE_SIZES = {"8 KB": 8 * 1024, "200 KB": 200 * 1024}
PROSE = (
    "The committee met on an evening in early March to go over the notes from the working group. "
    "Everyone agreed that the venue staff handled the situation calmly and that the follow-up "
    "should describe observable behaviour and its impact, not intentions. Please read the draft "
    "below and reply with changes before the next meeting; we will keep the conduct address in "
    "copy as usual and record the decision in the case folder. Maria from the venue and Mr Jones, "
    "the caretaker, said J. Smith had already left. "
)


def policy_text(people: int, rng: random.Random, avoid: frozenset[str] = frozenset()) -> str:
    """A policy whose cases hold ``people`` protected people (name, alias, address, username each).

    No name word is one of ``avoid`` (the words of the prose measured against the policy), so an
    unrelated message names nobody, as real unrelated mail does.
    """

    def name_word(syllables: int) -> str:
        while True:
            word = pseudo_word(rng, syllables)
            if word not in avoid:
                return word.capitalize()

    people_per_case = 5
    lines = [
        "organisation:",
        "  conduct_address: conduct@example.org",
        "  members:",
        "    - {name: Ada Quill, addresses: [ada.quill@example.org]}",
        "    - {name: Bram Oduya, addresses: [bram.oduya@example.org]}",
        "rules:",
        "  - {rule: conduct-cc, action: rewrite}",
        "  - {rule: recipient-banner, action: rewrite}",
        "  - {rule: reporter-protection, action: reject, actions: {PROTECTED_NAME_PART: hold}}",
        "cases:",
    ]
    for case_index in range(0, people, people_per_case):
        lines.append(f"  - code: case {_words(case_index)}")
        lines.append("    reporters:")
        for person_index in range(case_index, min(people, case_index + people_per_case)):
            first, last = name_word(3), name_word(4)
            handle = f"{first.lower()}{last.lower()[:3]}{person_index}"
            # Some people have a double-barrelled surname or a middle name, as real people do.
            shape = person_index % 4
            if shape == 1:
                last = f"{last}-{name_word(3)}"
            elif shape == 2:
                first = f"{first} {name_word(3)}"
            lines += [
                f"      - id: person {_words(person_index)}",
                f"        names: ['{first} {last}']",
                f"        aliases: ['{first}{person_index}']",
                f"        addresses: ['{handle}@example.net']",
                f"        usernames: ['{handle}']",
            ]
    return "\n".join(lines) + "\n"


def _words(number: int) -> str:
    # Case and person ids must be lower-case words.
    digits = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    return " ".join(digits[int(ch)] for ch in str(number))


def message(size: int, serial: int = 0) -> bytes:
    """A realistic multipart message of about ``size`` bytes: plain + HTML alternative + a text attachment.

    Its last words carry ``serial``, so no cache of texts seen before can answer for it.
    """
    paragraphs = (PROSE * (size // (3 * len(PROSE)) + 1))[: size // 3] + f" Reference {serial}."
    plain = "\r\n".join(textwrap.wrap(paragraphs, 76))
    html = (
        "<html><body>"
        + "".join(f"<p>{line}</p>\r\n" for line in textwrap.wrap(paragraphs, 200))
        + "</body></html>"
    )
    attachment = base64.encodebytes(paragraphs.encode()).decode().replace("\n", "\r\n")
    head = (
        "From: Ada Quill <ada.quill@example.org>\r\n"
        "To: Forum Moderators <mods@forum.example.com>\r\n"
        "Cc: Conduct Committee <conduct@example.org>\r\n"
        "Subject: Follow-up on the March meeting\r\n"
        "Date: Tue, 24 Nov 2026 10:00:00 +0000\r\n"
        "Message-ID: <bench@example.org>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'
    )
    body = (
        '--outer\r\nContent-Type: multipart/alternative; boundary="inner"\r\n\r\n'
        "--inner\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
        f"{plain}\r\n"
        "--inner\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
        f"{html}\r\n"
        "--inner--\r\n"
        '--outer\r\nContent-Type: text/plain; charset=utf-8; name="notes.txt"\r\n'
        'Content-Disposition: attachment; filename="notes.txt"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
        f"{attachment}"
        "--outer--\r\n"
    )
    return (head + body).encode()


def time_one(raw: bytes, envelope: Envelope, policy: CompiledPolicy) -> tuple[float, float, Outcome]:
    """Wall-clock and CPU seconds of one message (CPU time leaves out waiting for a busy machine)."""
    start, cpu = time.perf_counter(), time.thread_time()
    parsed = parse_message(raw)
    verdict = evaluate(parsed, envelope, policy, ThreadFacts())
    if verdict.outcome is Outcome.REWRITE:
        apply_rewrite(raw, verdict.rewrite)
    return time.perf_counter() - start, time.thread_time() - cpu, verdict.outcome


def resident_bytes() -> int:
    """The process's resident set size (Linux; 0 elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def run(quick: bool, rounds_of: int = 1) -> str:
    rng = random.Random(20261124)
    envelope = Envelope(
        mail_from="ada.quill@example.org",
        rcpt_tos=("mods@forum.example.com", "conduct@example.org"),
        authenticated_as="ada.quill@example.org",
    )
    rounds = {"8 KB": 60 if quick else 600, "200 KB": 10 if quick else 100}
    serials = itertools.count(1)
    rows: list[str] = []
    compile_rows: list[str] = []
    p99_by: dict[tuple[str, int], float] = {}
    cpu_p99_by: dict[tuple[str, int], float] = {}
    for count in PEOPLE_COUNTS:
        text = policy_text(count, rng)
        started = time.perf_counter()
        document = parse_policy_text(text, Path(f"bench-{count}.yaml"))
        read_seconds = time.perf_counter() - started
        gc.collect()
        resident = resident_bytes()
        started = time.perf_counter()
        policy = compile_policy(document, text.encode())
        compile_seconds = time.perf_counter() - started
        grown = max(0, resident_bytes() - resident)
        # Traced separately: tracing slows allocation-heavy code several times over.
        tracemalloc.start()
        compile_policy(document, text.encode())
        _current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        gc.collect()
        identities = len(policy.identities)
        patterns = sum(len(all_forms(identity)) for identity in policy.identities)
        for label, size in MESSAGE_SIZES.items():
            for _ in range(5):  # warm caches
                time_one(message(size, next(serials)), envelope, policy)
            outcome = Outcome.DELIVER
            figures: list[list[float]] = []  # per round: p50, p99, mean, CPU p50, CPU p99
            for _round in range(rounds_of):
                samples: list[float] = []
                cpu_samples: list[float] = []
                for raw in [message(size, next(serials)) for _ in range(rounds[label])]:
                    seconds, cpu_seconds, outcome = time_one(raw, envelope, policy)
                    samples.append(seconds)
                    cpu_samples.append(cpu_seconds)
                figures.append(
                    [
                        percentile(samples, 0.50),
                        percentile(samples, 0.99),
                        statistics.mean(samples),
                        percentile(cpu_samples, 0.50),
                        percentile(cpu_samples, 0.99),
                    ]
                )
            p50, p99, mean, cpu_p50, cpu_p99 = (
                statistics.median(column) for column in zip(*figures, strict=True)
            )
            p99_by[(label, count)] = p99
            cpu_p99_by[(label, count)] = cpu_p99
            rows.append(
                f"| {label} | {count:,} | {identities:,} | {p50 * 1000:.2f} | {p99 * 1000:.2f}"
                f" | {mean * 1000:.2f} | {cpu_p50 * 1000:.2f} | {cpu_p99 * 1000:.2f}"
                f" | {outcome.value} |"
            )
        compile_rows.append(
            f"| {count:,} | {identities:,} | {patterns:,} | {read_seconds:.2f} s | {compile_seconds:.2f} s"
            f" | {peak / 2**20:.1f} MiB | {grown / 2**20:.1f} MiB |"
        )
    lines = [
        *machine_description(sys.argv),
        "",
        f"Each figure: the median over {rounds_of} round(s) of that round's percentile; every message unique.",
        "",
        "| message | people | identities | p50 ms | p99 ms | mean ms | CPU p50 ms | CPU p99 ms | verdict |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        *rows,
        "",
        "| people | identities | name forms | read policy | compile policy | compile peak (traced) | RSS growth |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *compile_rows,
        "",
    ]
    first, last = PEOPLE_COUNTS[0], PEOPLE_COUNTS[-1]
    for label in MESSAGE_SIZES:
        growth = p99_by[(label, last)] / p99_by[(label, first)]
        cpu_growth = cpu_p99_by[(label, last)] / cpu_p99_by[(label, first)]
        lines.append(
            f"{label}: p99 growth from {first} to {last:,} people: {growth:.2f}x wall clock, "
            f"{cpu_growth:.2f}x CPU (target <= 2x)"
        )
    lines.append(
        f"8 KB p99 at {last:,} people: {p99_by[('8 KB', last)] * 1000:.2f} ms wall clock, "
        f"{cpu_p99_by[('8 KB', last)] * 1000:.2f} ms CPU (target <= {P99_TARGET_MS:g} ms)"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer samples (smoke test)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per point (medians reported)")
    arguments = parser.parse_args()
    print(run(arguments.quick, arguments.rounds))


if __name__ == "__main__":
    main()
