"""Protected-content fingerprints: evaluation time per message, and memory, with 10,000 protected messages.

Learns 10,000 synthetic reporter messages (300 to 700 words each, about 2.5 KB on average) into a real
``FingerprintStore`` in a temporary state folder, then measures parse + evaluate of the shipped
policy (every rule, protected-content included) with 10,000 protected people added to its cases
(``bench/policy.py``'s: a name, an alias, an address and a username each, every name form derived),
for an 8 KB and a 200 KB message to an outside recipient, once with unrelated prose, once quoting a
passage of a protected message and once quoting one with a word in six changed (both of which the
rule must find). Wall-clock and CPU time (of the measuring thread: what the work costs, without the
waits of a machine shared with other jobs), each the median over ``--rounds`` rounds of that
round's percentile. Memory is what ``tracemalloc`` sees the index hold after the start-up load (and
the peak during it), plus the size of the SQLite file. Each message is evaluated as a policy worker
evaluates it: ``store.for_message()`` (one check for other processes' changes), then every rule.
Once the policy and the index are loaded they are frozen out of the garbage collector's reach
(``gc.freeze()``, as a policy worker should do; ``--no-freeze`` leaves them), and the collections
that run during the measured evaluations are counted and timed.

    .venv/bin/python bench/fingerprints.py            # full run (minutes: learning the messages and compiling the people dominate)
    .venv/bin/python bench/fingerprints.py --quick    # 1,000 documents and people, fewer rounds (smoke test)

Targets (issues 4 and 19): 8 KB p99 <= 2 ms with 10,000 protected people and 10,000 protected
messages; under 100 MB for 10,000 protected messages. Printed next to the figures, never asserted.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import random
import statistics
import sys
import tempfile
import textwrap
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policy import policy_text
from report import machine_description, markdown_table, percentile
from synthetic import pseudo_word

from gateway.policy.engine import compile_policy, evaluate
from gateway.policy.loader import parse_policy_text
from gateway.policy.mime import parse_message
from gateway.policy.model import Envelope, Outcome, ThreadFacts
from gateway.state.fingerprints import FingerprintStore, fingerprints_path

REPO = Path(__file__).resolve().parents[1]
SIZES = {"8 KB": 8 * 1024, "200 KB": 200 * 1024}


def vocabulary(rng: random.Random, size: int = 20_000) -> list[str]:
    """Pseudo-words; drawn with a Zipf-like skew so common words repeat as in real prose."""
    words = {pseudo_word(rng, rng.randint(1, 4)) for _ in range(size * 2)}
    return sorted(words)[:size]


_CUMULATIVE: dict[int, list[float]] = {}


def prose(rng: random.Random, vocab: list[str], count: int) -> list[str]:
    cumulative = _CUMULATIVE.get(len(vocab))
    if cumulative is None:
        weights = [1 / (rank + 1) for rank in range(len(vocab))]
        cumulative = _CUMULATIVE[len(vocab)] = list(itertools.accumulate(weights))
    return rng.choices(vocab, cum_weights=cumulative, k=count)


def message(body_words: list[str], size: int, serial: int = 0) -> bytes:
    """A plain + HTML alternative message of about ``size`` bytes to an outside recipient.

    Its last words carry ``serial``, so no cache of texts seen before can answer for it (the
    gateway never sees one message twice).
    """
    words = (body_words * (size // (6 * max(1, len(body_words))) + 2))[: size // 12]
    text = " ".join(words) + f" reference {serial}"
    plain = "\r\n".join(textwrap.wrap(text, 76))
    html = (
        "<html><body>" + "".join(f"<p>{line}</p>\r\n" for line in textwrap.wrap(text, 200)) + "</body></html>"
    )
    return (
        "From: Ada Quill <ada.quill@example.org>\r\n"
        "To: Forum Moderators <mods@forum.example.com>\r\n"
        "Cc: Conduct Committee <conduct@example.org>\r\n"
        "Subject: Follow-up\r\nMessage-ID: <bench-fp@example.org>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
        f"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{plain}\r\n"
        f"--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n--b--\r\n"
    ).encode()


def shipped_policy_with(people: int, avoid: frozenset[str]) -> str:
    """The shipped policy, its cases followed by ``people`` more protected people (none named in ``avoid``)."""
    shipped = (REPO / "gateway" / "data" / "default-policy.yaml").read_text(encoding="utf-8")
    if people == 0:
        return shipped
    cases = policy_text(people, random.Random(20261124), avoid).split("\ncases:\n", 1)[1]
    return shipped.rstrip("\n") + "\n" + cases


class _CollectionLog:
    """A ``gc.callbacks`` entry: how many collections of each generation ran, and how long they took."""

    def __init__(self) -> None:
        self.counts = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self.longest = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        elapsed = time.perf_counter() - self._started
        generation = info["generation"]
        self.counts[generation] += 1
        self.seconds[generation] += elapsed
        self.longest = max(self.longest, elapsed)

    def summary(self) -> str:
        return (
            ", ".join(
                f"generation {generation}: {count} ({seconds * 1000:.1f} ms)"
                for generation, (count, seconds) in enumerate(zip(self.counts, self.seconds, strict=True))
            )
            + f", the longest {self.longest * 1000:.2f} ms"
        )


def run(quick: bool, rounds: int, people: int | None, argv: list[str], freeze: bool = True) -> str:
    rng = random.Random(20261125)
    vocab = vocabulary(rng)
    documents = 1_000 if quick else 10_000
    people = (1_000 if quick else 10_000) if people is None else people
    samples_per_round = {"8 KB": 100 if quick else 1000, "200 KB": 10 if quick else 100}
    text = shipped_policy_with(people, frozenset(vocab))
    started = time.perf_counter()
    policy = compile_policy(parse_policy_text(text, Path("default-policy.yaml")), text.encode())
    policy_seconds = time.perf_counter() - started
    envelope = Envelope(
        mail_from="ada.quill@example.org",
        rcpt_tos=("mods@forum.example.com", "conduct@example.org"),
        authenticated_as="ada.quill@example.org",
    )
    with tempfile.TemporaryDirectory() as folder:
        state = Path(folder)
        protected: list[list[str]] = []
        total_words = 0
        started = time.perf_counter()
        with FingerprintStore.open(state) as writer:
            for number in range(documents):
                words = prose(rng, vocab, rng.randint(300, 700))
                total_words += len(words)
                if number < 10:
                    protected.append(words)
                writer.learn("home shelf", f"doc-{number}", " ".join(words), person="quiet-heron")
        learn_seconds = time.perf_counter() - started
        db_size = fingerprints_path(state).stat().st_size
        started = time.perf_counter()
        FingerprintStore.open(state).close()
        load_seconds = time.perf_counter() - started  # without tracemalloc, which slows allocation
        gc.collect()
        tracemalloc.start()
        store = FingerprintStore.open(state)
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        stats = store.statistics()
        # What a full collection costs with the policy and the index loaded, and after gc.freeze()
        # (which a policy worker does once it has loaded them): a collection that walks them would
        # land on one message.
        started = time.perf_counter()
        gc.collect()
        full_collection = time.perf_counter() - started
        if freeze:
            gc.freeze()
        started = time.perf_counter()
        gc.collect()
        full_collection_after = time.perf_counter() - started
        collections = _CollectionLog()
        gc.callbacks.append(collections)
        rows = []
        p99_8k: dict[str, tuple[float, float]] = {}
        unrelated = prose(random.Random(7), vocab, 2000)
        for label, size in SIZES.items():
            # One word in six of the quoted passage changed: an edited copy the rule must still find.
            edited = [word if n % 6 != 5 else "zzedit" for n, word in enumerate(protected[5])]
            for kind, words in (
                ("unrelated prose", unrelated),
                ("quotes a protected message", protected[3]),
                ("quotes it with 1 word in 6 changed", edited),
            ):
                body = words if kind == "unrelated prose" else [*unrelated[:40], *words[:60], *unrelated[40:]]
                raw = message(body, size)
                serials = itertools.count(1)
                outcome = Outcome.DELIVER
                figures: list[list[float]] = []  # per round: wall p50, p99, CPU p50, p99
                for _round in range(rounds):
                    samples, cpu_samples = [], []
                    unique = [message(body, size, next(serials)) for _ in range(samples_per_round[label] + 5)]
                    for index, raw in enumerate(unique):
                        start, cpu = time.perf_counter(), time.thread_time()
                        # As a policy worker does: one check for other processes' changes per message.
                        verdict = evaluate(
                            parse_message(raw),
                            envelope,
                            policy,
                            ThreadFacts(),
                            protected_content=store.for_message(),
                        )
                        elapsed, cpu_elapsed = time.perf_counter() - start, time.thread_time() - cpu
                        outcome = verdict.outcome
                        if index >= 5:  # the first few warm caches
                            samples.append(elapsed)
                            cpu_samples.append(cpu_elapsed)
                    figures.append(
                        [
                            percentile(values, share)
                            for values in (samples, cpu_samples)
                            for share in (0.5, 0.99)
                        ]
                    )
                p50, p99, cpu_p50, cpu_p99 = (
                    statistics.median(column) for column in zip(*figures, strict=True)
                )
                if label == "8 KB":
                    p99_8k[kind] = (p99, cpu_p99)
                rows.append(
                    [
                        f"{label}, {kind}",
                        f"{len(raw) / 1024:.0f} KB",
                        *(f"{value * 1000:.2f}" for value in (p50, p99, cpu_p50, cpu_p99)),
                        outcome.value,
                    ]
                )
        gc.callbacks.remove(collections)
        store.close()
    lines = [
        "### Protected-content fingerprints (`bench/fingerprints.py`)",
        "",
        *machine_description(argv),
        "",
        f"{stats.documents:,} protected messages ({total_words:,} words, {stats.shingles:,} shingles held); "
        f"learning them took {learn_seconds:.1f} s, loading the index at start {load_seconds:.1f} s. "
        f"{people:,} protected people besides the shipped policy's ({len(policy.identities):,} identities); "
        f"reading and compiling the policy took {policy_seconds:.1f} s. Medians of {rounds} rounds.",
        "",
        *markdown_table(
            [
                "message (parse + evaluate, every rule)",
                "size",
                "p50 ms",
                "p99 ms",
                "CPU p50 ms",
                "CPU p99 ms",
                "verdict",
            ],
            rows,
        ),
        "",
        *markdown_table(
            ["memory", "MiB"],
            [
                ["index held after start-up load (tracemalloc)", f"{current / 2**20:.1f}"],
                ["peak during the load (tracemalloc)", f"{peak / 2**20:.1f}"],
                ["fingerprints.sqlite3 on disk", f"{db_size / 2**20:.1f}"],
            ],
        ),
        "",
        f"Garbage collection: a full collection with the policy and the index loaded took "
        f"{full_collection * 1000:.0f} ms, "
        + (
            f"{full_collection_after * 1000:.1f} ms after gc.freeze(); "
            if freeze
            else f"(not frozen: --no-freeze) {full_collection_after * 1000:.0f} ms again; "
        )
        + f"during the measured evaluations: {collections.summary()}.",
        "",
        f"Targets: 8 KB p99 <= 2 ms with 10,000 people and 10,000 protected messages (measured "
        f"{max(wall for wall, _ in p99_8k.values()) * 1000:.2f} ms wall clock, "
        f"{max(cpu for _, cpu in p99_8k.values()) * 1000:.2f} ms CPU"
        + (f", with {people:,} people and {documents:,} messages: --quick" if quick else "")
        + f"); < 100 MB for 10,000 protected messages (index {current / 2**20:.1f} MiB)",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1,000 documents and people, fewer samples")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per message (medians reported)")
    parser.add_argument("--people", type=int, help="protected people added to the policy (default 10,000)")
    parser.add_argument(
        "--no-freeze", action="store_true", help="leave the loaded policy and index to the collector"
    )
    arguments = parser.parse_args()
    print(run(arguments.quick, arguments.rounds, arguments.people, sys.argv, freeze=not arguments.no_freeze))


if __name__ == "__main__":
    main()
