"""Policy time for a message with a 1 MB PDF attachment, sent to an outsider under the shipped policy.

Measures parse + evaluate (the work between the end of DATA and the spool commit) for three
messages, each carrying a PDF of about 1 MB:

* ``text-heavy``: every byte is compressed page text (ASCII85 + Flate, about 1,000 dense pages):
  the worst case for text extraction;
* ``typical``: 20 pages of text and a large embedded image (what a report or a scan with a cover
  page looks like);
* ``1 MB docx``: a Word document holding about 1 MB of text, for comparison.

    .venv/bin/python bench/attachments.py            # about a minute
    .venv/bin/python bench/attachments.py --quick    # fewer rounds

p99 is printed, never asserted: this is a benchmark, not a test. The CPU column (process time) moves
less than wall time when other work shares the machine; the load average is printed too.
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import statistics
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from report import machine_description, percentile

from gateway.policy.engine import CompiledPolicy, compile_policy, evaluate
from gateway.policy.loader import read_policy
from gateway.policy.mime import parse_message
from gateway.policy.model import Envelope, ThreadFacts
from tests.policy import documents

WORDS = ("the", "committee", "met", "to", "discuss", "report", "about", "behaviour", "at", "community",
         "event", "and", "agreed", "on", "a", "follow", "up", "with", "working", "group", "before", "next",
         "meeting", "of", "forum", "moderators")  # fmt: skip
ENVELOPE = Envelope(
    mail_from="ada.quill@example.org",
    rcpt_tos=("mods@forum.example.com", "conduct@example.org"),
    authenticated_as="ada.quill@example.org",
)


def _lines(rng: random.Random, count: int) -> list[str]:
    return [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(count)]


def text_heavy_pdf(rng: random.Random, size: int) -> bytes:
    pages: list[bytes] = []
    data = b""
    while len(data) < size:
        pages.extend(documents.pdf_text_stream(*_lines(rng, 45)) for _ in range(50))
        data = documents.pdf(pages, filters=("ASCII85Decode", "FlateDecode"))
    return data


def typical_pdf(rng: random.Random, size: int) -> bytes:
    pages = [documents.pdf_text_stream(*_lines(rng, 45)) for _ in range(20)]
    picture = rng.randbytes(size // 2)  # an incompressible picture (hex-encoded: twice its size)
    return documents.pdf(pages, image_pages=(0,), image=picture)


def large_docx(rng: random.Random, size: int) -> bytes:
    words = []
    total = 0
    while total < size:
        line = " ".join(_lines(rng, 1))
        words.append(line)
        total += len(line) + 40
    return documents.docx(" ".join(words))


def message(attachment: bytes, content_type: str, name: str) -> bytes:
    encoded = base64.encodebytes(attachment).replace(b"\n", b"\r\n")
    head = (
        "From: Ada Quill <ada.quill@example.org>\r\n"
        "To: Forum Moderators <mods@forum.example.com>\r\n"
        "Cc: Conduct Committee <conduct@example.org>\r\n"
        "Subject: The report\r\n"
        "Date: Tue, 24 Nov 2026 10:00:00 +0000\r\n"
        "Message-ID: <bench-attachment@example.org>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe report is attached.\r\n"
        f'--b\r\nContent-Type: {content_type}; name="{name}"\r\nContent-Transfer-Encoding: base64\r\n'
        f'Content-Disposition: attachment; filename="{name}"\r\n\r\n'
    ).encode()
    return head + encoded + b"--b--\r\n"


def shipped_policy() -> CompiledPolicy:
    document, source = read_policy(
        Path(__file__).resolve().parents[1] / "gateway" / "data" / "default-policy.yaml"
    )
    return compile_policy(document, source)


def run(quick: bool) -> str:
    rng = random.Random(20261204)
    policy = shipped_policy()
    size = 1_000_000
    cases = {
        "1 MB PDF, text-heavy": (text_heavy_pdf(rng, size), "application/pdf", "report.pdf"),
        "1 MB PDF, typical": (typical_pdf(rng, size), "application/pdf", "report.pdf"),
        "1 MB docx": (
            large_docx(rng, size),
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            "report.docx",
        ),
    }
    rows = []
    for label, (attachment, content_type, name) in cases.items():
        raw = message(attachment, content_type, name)
        rounds = 3 if quick else 15
        samples = []
        cpu = []
        outcome = ""
        for _ in range(rounds):
            start, start_cpu = time.perf_counter(), time.process_time()
            verdict = evaluate(parse_message(raw), ENVELOPE, policy, ThreadFacts())
            samples.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
            outcome = verdict.outcome.value
        rows.append(
            f"| {label} | {len(attachment) / 1e6:.2f} MB | {len(zlib.compress(attachment)) / 1e6:.2f} MB "
            f"| {percentile(samples, 0.50) * 1000:.0f} | {percentile(samples, 0.99) * 1000:.0f} "
            f"| {statistics.mean(samples) * 1000:.0f} | {percentile(cpu, 0.50) * 1000:.0f} | {outcome} |"
        )
    return "\n".join(
        [
            *machine_description(["bench/attachments.py", *(["--quick"] if quick else [])]),
            f"- Load average (1, 5, 15 min) at the end: {', '.join(f'{v:.1f}' for v in os.getloadavg())}",
            "",
            "| message | attachment | deflated | p50 ms | p99 ms | mean ms | CPU p50 ms | verdict |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
            *rows,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds (smoke test)")
    print(run(parser.parse_args().quick))


if __name__ == "__main__":
    main()
