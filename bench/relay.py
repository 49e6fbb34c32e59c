"""Relay benchmark: the gateway vs a bare aiosmtpd -> aiosmtplib relay vs Postfix, in one run.

    .venv/bin/python bench/relay.py              # full run, about 3 minutes on 2 cores
    .venv/bin/python bench/relay.py --quick      # smoke run (a tenth of the messages)

Every target relays to the same capture sink (bench/sink.py) on loopback. Load comes from aiosmtplib
clients in their own process (bench/load.py), one reused connection each, logging in where the
target wants it. For each message size and client count a target gets a short warm-up and then a
fixed number of messages. Reported per run:

* msg/s: messages divided by the time from the first submission to the last message reaching the
  sink (end to end: the gateway answers after its fsync and relays afterwards, so its queue is
  included; so is Postfix's);
* 250s/s: messages divided by the time the clients took to get all their 250s (intake alone);
* p50 / p99: one whole submission transaction (MAIL to the final 250) as the client saw it;
* ratio: msg/s against the bare relay measured in the same run, at the same size and client count;
* CPU ms/msg: user + system CPU of the target's processes (the relay and every process it started:
  policy workers, a delivery process, Postfix's daemons) per message, over the measured run.

Targets: ``bare`` (bench/bare_relay.py: no spool, no policy, relays before answering), ``gateway``
(``conduct-gateway serve`` through bench/passthrough_gateway.py, which sets the policy seam to
PassThrough: the relay core with its fsynced spool and delivery worker), ``postfix`` (a private Postfix, default queue settings, relaying to the sink; it has no SASL
here, so its clients do not log in). ``--policy FILE`` adds the unmodified ``serve`` with
``policy.path`` set, for the policy engine's end-to-end figure (issue 3; bench/policy.py is the place
for per-message evaluation times), measured as two targets on that one gateway:

* ``gateway+policy``: the message lacks the policy's conduct address, so conduct-cc (with the shipped
  ``rewrite`` action) adds it to Cc and to the envelope: every message is inspected and rewritten;
* ``gateway+policy:cc``: the message already has the conduct address in Cc and in the envelope:
  every rule inspects it and nothing changes (what most committee mail looks like).

Both go to an outside recipient, so reporter-protection scans every message. The sending account
(``--member``) defaults to the policy's first committee member; the sink counts one message per
relayed transaction whatever its recipient count.

``--state postgresql`` adds, for each gateway target (``gateway``, ``gateway+policy``), the same gateway
on ``state.backend: postgresql`` (bench/postgresql_state.py: the tests' private cluster with fsync on),
in the same run as the files backend: ``NAME@pg1`` is one instance, ``NAME@pg2`` two instances on one
database with the clients spread over both (each instance runs its own delivery worker on the shared
queue). Each gets a fresh database migrated by ``conduct-gateway state migrate``. The table then
adds the peak resident memory of the gateway processes (RSS MiB, summed over every instance and its
workers) and the PostgreSQL server's CPU per message (PG ms/msg: the postmaster and every backend, the
WAL writer and the checkpointer); CPU ms/msg stays the gateways' own.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import multiprocessing
import os
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from multiprocessing.context import SpawnContext, SpawnProcess
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path

import report
from bare_relay import run_bare_relay
from cpu import CpuSampler
from load import LoadResult, LoadSpec, load_process
from sink import run_sink

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from gateway.errors import ConfigError  # noqa: E402
from gateway.policy.loader import read_policy  # noqa: E402

try:  # the gateway and Postfix targets are driven by the end-to-end suite's helpers
    import postgresql_state

    from tests.e2e.gateway_process import GatewayProcess, conduct_gateway_command
    from tests.e2e.postfix import PostfixInstance, free_port
    from tests.e2e.sasl import DovecotAuth
    from tests.e2e.tls import TlsMaterial, make_tls_material
except ModuleNotFoundError as missing:
    raise SystemExit(
        f"bench/relay.py needs the test environment ({missing.name} is not installed): run "
        "`bash scripts/test` once, or `.venv/bin/pip install -e '.[test]'`"
    ) from None

HOST = "127.0.0.1"
MEMBER = "maya.member@example.org"
RECIPIENT = "bench.recipient@example.net"
PASSWORD = secrets.token_urlsafe(16)
SIZES = {"8KB": 8 * 1024, "200KB": 200 * 1024}
CLIENTS = (1, 8, 32)
# Messages per measured run; enough for stable p99 at each point without making the run long.
COUNTS = {
    ("8KB", 1): 400,
    ("8KB", 8): 1500,
    ("8KB", 32): 2500,
    ("200KB", 1): 60,
    ("200KB", 8): 200,
    ("200KB", 32): 320,
}


def build_message(size: int, member: str, seed: int = 2024, cc: str | None = None) -> bytes:
    """A plain-text message of ``size`` bytes (CRLF) from ``member``, ASCII prose lines (Cc ``cc``)."""
    rng = random.Random(seed)
    words = [
        "conduct",
        "committee",
        "report",
        "witness",
        "thread",
        "reply",
        "policy",
        "relay",
        "queue",
        "mail",
    ]
    header = (
        f"From: Bench Member <{member}>\r\nTo: <{RECIPIENT}>\r\n"
        + (f"Cc: Conduct Committee <{cc}>\r\n" if cc else "")
        + "Subject: relay benchmark\r\n"
        f"Message-ID: <bench.{size}@example.org>\r\nDate: Mon, 02 Dec 2024 10:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    ).encode()
    lines: list[bytes] = []
    total = len(header)
    while total < size:
        line = " ".join(rng.choice(words) for _ in range(11)).encode()[:76] + b"\r\n"
        lines.append(line)
        total += len(line)
    body = b"".join(lines)[: size - len(header)]
    return header + body.rsplit(b"\r\n", 1)[0] + b"\r\n"


@dataclass
class Run:
    target: str
    size: str
    clients: int
    messages: int
    seconds: float
    messages_per_second: float
    accepted_per_second: float
    p50_ms: float
    p99_ms: float
    failures: int
    cpu_ms_per_message: float | None = None  # the target's processes (see bench/cpu.py)
    round: int = 0  # with --rounds, which turn of the targets this was
    resident_mib: float | None = None  # peak RSS of the target's processes during the run
    database_cpu_ms_per_message: float | None = None  # the PostgreSQL server's CPU, with --state
    cipher: str | None = None  # with --tls: the protocol and cipher the clients' STARTTLS negotiated


@dataclass(frozen=True)
class Target:
    name: str
    port: int
    login: bool
    cc: str | None = None  # an address the message has in Cc and the envelope (the conduct address)
    pid: int | None = None  # the target's root process, for its CPU time
    other_pids: tuple[int, ...] = ()  # more process trees the target runs (Postfix's milter)
    more_ports: tuple[int, ...] = ()  # more instances: the clients are spread over port + these
    database_pid: int | None = None  # the PostgreSQL postmaster the target keeps its state in
    tls_ca: str | None = None  # --tls: clients use STARTTLS and trust this CA


class Sink:
    """The capture upstream in its own process; counts arrivals in shared memory."""

    def __init__(self, context: SpawnContext) -> None:
        self.received: Synchronized[int] = context.Value("q", 0)  # type: ignore[assignment]
        self.last_arrival: Synchronized[float] = context.Value("d", 0.0)  # type: ignore[assignment]
        ready: Synchronized[int] = context.Value("q", 0)  # type: ignore[assignment]
        self.process = context.Process(
            target=run_sink, args=(HOST, 0, self.received, self.last_arrival, ready), daemon=True
        )
        self.process.start()
        self.port = wait_ready(ready, self.process, "sink")

    def wait_for(self, count: int, timeout: float) -> float:
        """Wait until ``count`` messages have arrived in total; return when the last one did."""
        deadline = time.monotonic() + timeout
        while self.received.value < count:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"sink got {self.received.value} of {count} messages within {timeout:.0f}s"
                )
            time.sleep(0.002)
        return float(self.last_arrival.value)


def wait_ready(ready: Synchronized[int], process: SpawnProcess, what: str, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while ready.value == 0:
        if not process.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the {what} did not start")
        time.sleep(0.01)
    return int(ready.value)


def run_load(context: SpawnContext, spec: LoadSpec) -> LoadResult:
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=load_process, args=(spec, sender), daemon=True)
    process.start()
    sender.close()
    result = receiver.recv()
    process.join(timeout=30)
    if isinstance(result, str):
        raise RuntimeError(result)
    assert isinstance(result, LoadResult)
    return result


def measure(
    context: SpawnContext, sink: Sink, target: Target, member: str, size: str, clients: int, count: int
) -> Run:
    message = build_message(SIZES[size], member, cc=target.cc)
    login = (member, PASSWORD) if target.login else (None, None)
    recipients = (RECIPIENT, target.cc) if target.cc else (RECIPIENT,)

    def spec(messages: int) -> LoadSpec:
        return LoadSpec(
            HOST,
            target.port,
            clients,
            messages,
            message,
            member,
            recipients,
            username=login[0],
            password=login[1],
            more_ports=target.more_ports,
            tls_ca=target.tls_ca,
        )

    warmup = max(2 * clients, 10)
    before = sink.received.value
    run_load(context, spec(warmup))
    sink.wait_for(before + warmup, timeout=120)
    before = sink.received.value
    with contextlib.ExitStack() as stack:
        # CPU from the first submission to the last arrival: the clients' logins before are left out.
        sampler = stack.enter_context(CpuSampler(target.pid)) if target.pid is not None else None
        others = [stack.enter_context(CpuSampler(pid)) for pid in target.other_pids]
        database = (
            stack.enter_context(CpuSampler(target.database_pid)) if target.database_pid is not None else None
        )
        result = run_load(context, spec(count))
        delivered = count - len(result.failures)
        last = sink.wait_for(before + delivered, timeout=300)
        time.sleep(0.1)  # one more sample after the last arrival
    seconds = max(last, result.finished) - result.started
    cpu_ms = database_ms = resident = None
    end = max(last, result.finished)
    if sampler is not None and delivered:
        spent = sampler.between(result.started, end) + sum(o.between(result.started, end) for o in others)
        cpu_ms = round(spent * 1000 / delivered, 3)
        peak = sampler.peak_resident(result.started, end)
        resident = round((peak + sum(o.peak_resident(result.started, end) for o in others)) / 2**20, 1)
    if database is not None and delivered:
        database_ms = round(database.between(result.started, end) * 1000 / delivered, 3)
    return Run(
        target=target.name,
        size=size,
        clients=clients,
        messages=delivered,
        seconds=round(seconds, 3),
        messages_per_second=round(delivered / seconds, 1),
        accepted_per_second=round(delivered / (result.finished - result.started), 1),
        p50_ms=round(report.percentile(result.latencies, 0.50) * 1000, 2),
        p99_ms=round(report.percentile(result.latencies, 0.99) * 1000, 2),
        failures=len(result.failures),
        cpu_ms_per_message=cpu_ms,
        resident_mib=resident,
        database_cpu_ms_per_message=database_ms,
        cipher=result.cipher,
    )


@contextlib.contextmanager
def bare_relay(context: SpawnContext, sink: Sink, tls: TlsMaterial | None = None) -> Iterator[Target]:
    ready: Synchronized[int] = context.Value("q", 0)  # type: ignore[assignment]
    chain = (str(tls.cert_file), str(tls.key_file)) if tls is not None else None
    process = context.Process(target=run_bare_relay, args=(HOST, sink.port, ready, chain), daemon=True)
    process.start()
    try:
        port = wait_ready(ready, process, "bare relay")
        yield Target("bare", port, login=True, pid=process.pid, tls_ca=_ca(tls))
    finally:
        process.terminate()
        process.join(timeout=10)


@contextlib.contextmanager
def gateway(
    workdir: Path,
    sink: Sink,
    name: str,
    member: str,
    policy: Path | None,
    cluster: postgresql_state.BenchCluster | None = None,
    instances: int = 1,
    tls: TlsMaterial | None = None,
    policy_workers: str | None = None,
) -> Iterator[Target]:
    """``instances`` gateways (more than one only on ``cluster``'s PostgreSQL), ready for the clients.

    With ``tls``, the gateway presents that certificate (the clients use STARTTLS before AUTH).
    ``policy_workers``: the ``policy.workers`` setting (``0`` evaluates on the event loop); default ``auto``."""
    settings: dict[str, object] = {
        "server": {"submissions": {"enabled": False}},
        "auth": {"allow_plaintext_auth_on_loopback": True},
        # 32 benchmark clients come from one address; the default per-client cap is for the internet.
        "limits": {"max_connections_per_client": 100, "max_connections": 400},
        "delivery": {"upstream": {"host": HOST, "port": sink.port, "security": "none"}},
        "metrics": {"enabled": False},
    }
    if tls is not None:
        settings["tls"] = {"cert_file": str(tls.cert_file), "key_file": str(tls.key_file)}
        settings["auth"] = {"allow_plaintext_auth_on_loopback": False}
    if policy is not None:
        settings["policy"] = {"path": str(policy.resolve())}
        if policy_workers is not None:
            settings["policy"] = {
                "path": str(policy.resolve()),
                "workers": int(policy_workers) if policy_workers.isdigit() else policy_workers,
            }
        serve_command = None
    else:
        serve_command = [sys.executable, str(Path(__file__).with_name("passthrough_gateway.py"))]
    if cluster is not None:
        settings.update(cluster.database(workdir / name))
    roots = [workdir / name / f"instance-{n + 1}" for n in range(instances)]
    processes = [GatewayProcess(root, settings, serve_command=serve_command) for root in roots]
    if cluster is not None:
        postgresql_state.share_fingerprint_key([process.state_dir for process in processes])
        migrated = processes[0].cli("state", "migrate")
        if migrated.returncode != 0:
            raise RuntimeError(f"`conduct-gateway state migrate` failed:\n{migrated.stdout}{migrated.stderr}")
    try:
        # On PostgreSQL the accounts are in the database, shared: one `user add` serves every instance.
        for process in processes if cluster is None else processes[:1]:
            process.add_user(member, PASSWORD)
        for process in processes:
            process.start()
        pids = [process.pid for process in processes]
        ports = [process.addresses["submission"][1] for process in processes]
        yield Target(
            name,
            ports[0],
            login=True,
            pid=pids[0],
            other_pids=tuple(pids[1:]),
            more_ports=tuple(ports[1:]),
            database_pid=cluster.postmaster_pid() if cluster is not None else None,
            tls_ca=_ca(tls),
        )
    finally:
        for process in processes:
            process.close()


def policy_people(policy: Path) -> tuple[str, str]:
    """The policy's conduct address and first member's first address (the default sender)."""
    try:
        document, _ = read_policy(policy)
    except ConfigError as exc:
        sys.exit(f"bench/relay.py: --policy: {exc}")
    organisation = document.organisation
    return str(organisation.conduct_address), str(organisation.members[0].addresses[0])


def _ca(tls: TlsMaterial | None) -> str | None:
    return str(tls.ca_file) if tls is not None else None


def postfix_security(tls: TlsMaterial | None, member: str) -> tuple[dict[str, object], DovecotAuth | None]:
    """With ``tls``: PostfixInstance's arguments for STARTTLS with that certificate and SASL logins
    (the Dovecot protocol, answered by tests/e2e/sasl.py as in the end-to-end suite), TLS 1.2 at
    least as on the gateway, AUTH only after STARTTLS; and the SASL server to start and stop."""
    if tls is None:
        return {}, None
    sasl = DovecotAuth({member: PASSWORD})
    main_cf = {
        "smtpd_sasl_auth_enable": "yes",
        "smtpd_sasl_type": "dovecot",
        "smtpd_sasl_path": sasl.path,
        "smtpd_tls_auth_only": "yes",
        "smtpd_tls_protocols": ">=TLSv1.2",
        "smtpd_tls_mandatory_protocols": ">=TLSv1.2",
    }
    return {"tls_cert_file": tls.cert_file, "tls_key_file": tls.key_file, "extra_main_cf": main_cf}, sasl


@contextlib.contextmanager
def postfix(sink: Sink, member: str, tls: TlsMaterial | None = None) -> Iterator[Target]:
    arguments, sasl = postfix_security(tls, member)
    instance = PostfixInstance(relayhost=(HOST, sink.port), **arguments)  # type: ignore[arg-type]
    try:
        if sasl is not None:
            sasl.start()
        instance.start()
        master = instance.queue_directory / "pid" / "master.pid"
        pid = int(master.read_text().split()[0]) if master.exists() else None
        yield Target("postfix", instance.port, login=tls is not None, pid=pid, tls_ca=_ca(tls))
    finally:
        instance.close()
        if sasl is not None:
            sasl.close()


@contextlib.contextmanager
def postfix_milter(
    workdir: Path, sink: Sink, policy: Path, member: str, tls: TlsMaterial | None = None
) -> Iterator[Target]:
    """Postfix relaying to the sink, every message screened by `conduct-gateway milter` with ``policy``."""
    milter_port = free_port(HOST)
    milter = GatewayProcess(
        workdir / "milter",
        {
            "policy": {"path": str(policy.resolve())},
            "milter": {"listen": f"inet:{milter_port}@{HOST}"},
            "delivery": {"upstream": {"host": HOST, "port": sink.port, "security": "none"}},
            "metrics": {"enabled": False},
        },
        serve_command=[*conduct_gateway_command(), "milter"],
    )
    milter.start()
    arguments, sasl = postfix_security(tls, member)
    main_cf: dict[str, object] = {
        **arguments.pop("extra_main_cf", {}),  # type: ignore[dict-item]
        "smtpd_milters": f"inet:{HOST}:{milter_port}",
        "milter_default_action": "tempfail",
        "milter_protocol": "6",
    }
    instance = PostfixInstance(relayhost=(HOST, sink.port), extra_main_cf=main_cf, **arguments)  # type: ignore[arg-type]
    try:
        if sasl is not None:
            sasl.start()
        instance.start()
        master = instance.queue_directory / "pid" / "master.pid"
        pid = int(master.read_text().split()[0]) if master.exists() else None
        assert milter.process is not None
        yield Target(
            "postfix+milter",
            instance.port,
            login=tls is not None,
            pid=pid,
            other_pids=(milter.process.pid,),
            tls_ca=_ca(tls),
        )
    finally:
        instance.close()
        milter.close()
        if sasl is not None:
            sasl.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a tenth of the messages (smoke run)")
    parser.add_argument("--messages", type=int, help="this many messages at every point (overrides counts)")
    parser.add_argument("--targets", default="bare,gateway,postfix", help="comma-separated subset")
    parser.add_argument("--clients", default=",".join(map(str, CLIENTS)), help="client counts, e.g. 1,8,32")
    parser.add_argument("--sizes", default=",".join(SIZES), help="message sizes: 8KB,200KB")
    parser.add_argument("--policy", type=Path, help="also run the real `serve` with this policy file")
    parser.add_argument(
        "--member", help=f"the sending account (default: {MEMBER}; with --policy, its first member)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="the targets take this many turns at each point; the table shows medians, and each "
        "ratio is the median of the rounds' ratios against the bare relay of the same round",
    )
    parser.add_argument(
        "--state",
        choices=("files", "postgresql"),
        default="files",
        help="postgresql: also run each gateway target on a private PostgreSQL, one and two instances",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="clients use STARTTLS (one test CA's certificate on every target, TLS 1.2 at least) and "
        "AUTH on every target: Postfix through SASL (the Dovecot protocol), the bare relay too",
    )
    parser.add_argument(
        "--policy-workers",
        help="policy.workers for the gateways with --policy: a number (0: evaluate on the event loop, "
        "no worker process) or auto (the default)",
    )
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args(argv)
    if args.policy_workers is not None and not (
        args.policy_workers.isdigit() or args.policy_workers == "auto"
    ):
        parser.error(f"--policy-workers takes a number or auto, not {args.policy_workers!r}")
    if args.policy_workers is not None and args.policy is None:
        parser.error("--policy-workers sets the workers of the gateway with --policy: add --policy")
    targets = args.targets.split(",")
    conduct = None
    if args.policy is not None:
        conduct, first_member = policy_people(args.policy)
        args.member = args.member or first_member
        targets.append("gateway+policy")
        if "postfix" in targets:
            targets.append("postfix+milter")
    args.member = args.member or MEMBER
    sizes = args.sizes.split(",")
    if "postfix" in targets and os.geteuid() != 0:
        parser.error(
            "the postfix target runs a private Postfix, whose master needs root; use --targets bare,gateway"
        )
    if unknown := [
        name
        for name in targets
        if name not in ("bare", "gateway", "gateway+policy", "postfix", "postfix+milter")
    ]:
        parser.error(f"unknown target(s): {', '.join(unknown)}")
    if args.state == "postgresql":
        on_database = [name for name in targets if name in ("gateway", "gateway+policy")]
        if not on_database:
            parser.error("--state postgresql runs the gateway targets on PostgreSQL: add gateway or --policy")
        targets += [f"{name}@pg{instances}" for name in on_database for instances in (1, 2)]
    if unknown := [size for size in sizes if size not in SIZES]:
        parser.error(f"unknown size(s): {', '.join(unknown)}; use {', '.join(SIZES)}")
    client_counts = [int(value) for value in args.clients.split(",")]

    context = multiprocessing.get_context("spawn")
    workdir = Path(tempfile.mkdtemp(prefix="conduct-bench-"))
    tls = None
    if args.tls:
        (workdir / "tls").mkdir()
        tls = make_tls_material(workdir / "tls")
    runs: list[Run] = []
    cluster: postgresql_state.BenchCluster | None = None
    try:
        sink = Sink(context)
        with contextlib.ExitStack() as stack:
            if args.state == "postgresql":
                cluster = postgresql_state.BenchCluster()
                stack.callback(cluster.close)
            factories: dict[str, Callable[[], contextlib.AbstractContextManager[Target]]] = {
                "bare": lambda: bare_relay(context, sink, tls),
                "gateway": lambda: gateway(workdir, sink, "gateway", args.member, None, tls=tls),
                "gateway+policy": lambda: gateway(
                    workdir,
                    sink,
                    "gateway+policy",
                    args.member,
                    args.policy,
                    tls=tls,
                    policy_workers=args.policy_workers,
                ),
                "postfix": lambda: postfix(sink, args.member, tls),
                "postfix+milter": lambda: postfix_milter(workdir, sink, args.policy, args.member, tls),
            }
            for name in ("gateway", "gateway+policy"):
                for instances in (1, 2):
                    policy = args.policy if name == "gateway+policy" else None
                    factories[f"{name}@pg{instances}"] = functools.partial(
                        gateway,
                        workdir,
                        sink,
                        f"{name}@pg{instances}",
                        args.member,
                        policy,
                        cluster,
                        instances,
                        policy_workers=args.policy_workers,
                    )
            started = [stack.enter_context(factories[name]()) for name in targets]
            if conduct is not None:
                # The same gateway again, sent messages that already copy the conduct address.
                policy_target = next(target for target in started if target.name == "gateway+policy")
                on_files = sum("@pg" not in target.name for target in started)  # before the @pg ones
                started.insert(
                    on_files,
                    dataclasses.replace(policy_target, name="gateway+policy:cc", cc=conduct),
                )
            for size in sizes:
                for clients in client_counts:
                    count = args.messages or COUNTS.get((size, clients), 1000)
                    if args.quick and not args.messages:
                        count = max(clients * 2, count // 10)
                    # Targets take turns at each point, so drift on the machine hits them alike.
                    for round_number in range(args.rounds):
                        for target in started:
                            run = measure(context, sink, target, args.member, size, clients, count)
                            run = dataclasses.replace(run, round=round_number)
                            runs.append(run)
                            print(
                                f"  {run.target:>15} {size:>6} {clients:>3} clients: "
                                f"{run.messages_per_second:8.1f} msg/s ({run.accepted_per_second:8.1f} 250s/s)"
                                f"  p50 {run.p50_ms:7.2f} ms  p99 {run.p99_ms:7.2f} ms"
                                + (f"  ({run.failures} failed)" if run.failures else ""),
                                file=sys.stderr,
                                flush=True,
                            )
        sink.process.terminate()
        sink.process.join(timeout=10)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    database = f"PostgreSQL {cluster.version} (fsync on)" if cluster is not None else None
    print("\n".join(render(runs, ["bench/relay.py", *argv], database)))
    if args.tls:
        print("\n".join(cipher_lines(runs)))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(run) for run in runs], indent=2) + "\n")
    return 1 if any(run.failures for run in runs) else 0


def cipher_lines(runs: list[Run]) -> list[str]:
    """What each target's STARTTLS negotiated (the same certificate everywhere; this shows the
    same protocol and cipher too)."""
    negotiated: dict[str, set[str]] = {}
    for run in runs:
        negotiated.setdefault(run.target, set()).add(run.cipher or "no TLS")
    return [f"- TLS, {target}: {', '.join(sorted(ciphers))}" for target, ciphers in negotiated.items()]


def render(runs: list[Run], argv: list[str], database: str | None = None) -> list[str]:
    """One row per target and point; over several rounds, the median of each column, and the ratio
    is the median of each round's ratio against that round's bare relay (bare varies by ±10 %).
    With ``database`` (the PostgreSQL runs' server), RSS and the server's CPU get columns too."""
    bare = {
        (run.size, run.clients, run.round): run.messages_per_second for run in runs if run.target == "bare"
    }
    groups: dict[tuple[str, str, int], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.target, run.size, run.clients), []).append(run)
    rounds = max((run.round for run in runs), default=0) + 1
    rows = []
    for (target, size, clients), group in groups.items():
        ratios = [
            run.messages_per_second / base
            for run in group
            if (base := bare.get((run.size, run.clients, run.round)))
        ]
        cpu = [run.cpu_ms_per_message for run in group if run.cpu_ms_per_message is not None]
        row = [
            target,
            size,
            str(clients),
            f"{statistics.median(run.messages_per_second for run in group):.0f}",
            f"{statistics.median(ratios):.2f}x" if ratios else "-",
            f"{statistics.median(run.accepted_per_second for run in group):.0f}",
            f"{statistics.median(run.p50_ms for run in group):.1f}",
            f"{statistics.median(run.p99_ms for run in group):.1f}",
            f"{statistics.median(cpu):.2f}" if cpu else "-",
        ]
        if database is not None:
            resident = [run.resident_mib for run in group if run.resident_mib is not None]
            server = [
                run.database_cpu_ms_per_message
                for run in group
                if run.database_cpu_ms_per_message is not None
            ]
            row.append(f"{statistics.median(resident):.0f}" if resident else "-")
            row.append(f"{statistics.median(server):.2f}" if server else "-")
        if rounds > 1:
            row.append(f"{min(ratios):.2f}x-{max(ratios):.2f}x" if ratios else "-")
        rows.append(row)
    header = ["target", "size", "clients", "msg/s", "vs bare", "250s/s", "p50 ms", "p99 ms", "CPU ms/msg"]
    if database is not None:
        header += ["RSS MiB", "PG ms/msg"]
    if rounds > 1:
        header.append(f"vs bare, {rounds} rounds")
    described = report.machine_description(argv)
    if database is not None:
        described.insert(2, f"- {database}")
    return ["", *report.markdown_table(header, rows), "", *described]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
