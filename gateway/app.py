"""Wiring only: settings -> spool, accounts, TLS, screener, SMTP, delivery, metrics -> one TaskGroup."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import shlex
import signal
import ssl
import string
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gateway import systemd
from gateway.decision.build import policy_screener
from gateway.decision.digest_schedule import DigestSchedule, committee_digest
from gateway.decision.policy_source import ReloadResult, load_compiled_policy, load_policy_for
from gateway.decision.presence import Presence
from gateway.decision.screening import RoundTask, Screener
from gateway.decision.shared_limits import sync_shared_counts
from gateway.delivery.process import DeliveryProcess, wants_own_process
from gateway.delivery.restart import run_restarting
from gateway.delivery.worker import DeliveryWorker
from gateway.errors import AccountError, ConfigError
from gateway.example_policy import write_example_policy
from gateway.intake.journal import JournalService
from gateway.intake.smtp import SubmissionService
from gateway.logs import log_event
from gateway.metrics import Health, MetricsServer, build_registry
from gateway.netaddr import host_port, is_loopback
from gateway.review.outgoing import spool_outgoing
from gateway.settings import DEFAULT_CONFIG, GatewaySettings
from gateway.state.opening import open_state
from gateway.state.ports import AccountsPort, QueuePort
from gateway.state.tls import SELF_SIGNED_CERT, server_context

log = logging.getLogger("gateway.app")

# A reserved domain (RFC 2606): the demo account can never be mistaken for a real person's address.
DEMO_ADDRESS = "demo@example.org"
ACCOUNTS_POLL_INTERVAL = 2.0

Announce = Callable[[str], None]


# --- the policy seam: the policy engine plugs in here, and only here --------------------------------


def build_screener(settings: GatewaySettings, accounts: AccountsPort | None = None) -> Screener:
    """Build the screener every submission goes through before it is spooled (see
    ``gateway.decision.build``); review rights follow ``accounts``. The benchmarks replace this."""
    return policy_screener(settings, accounts)


def check_policy(settings: GatewaySettings) -> tuple[str, tuple[str, ...]]:
    """Validate the policy file without starting anything, for `config validate`: a one-line
    summary, and every difference between the policy's members and the accounts.

    Raises ConfigError (file, line, key) when the policy is invalid, and when the case registry
    cannot be decrypted or clashes with the policy.
    """
    path = settings.policy.path
    if settings.delivery.upstream is None and not path.exists():
        # The first start will write the shipped example there: check that, and write nothing now.
        with tempfile.TemporaryDirectory() as folder:
            example = Path(folder) / path.name
            write_example_policy(example)
            state = open_state(settings)
            policy, _stamp = load_compiled_policy(example, state.cases, state.accounts)
        summary = (
            f"{path} does not exist yet: the first start writes the shipped example there (version "
            f"{policy.version}, {len(policy.rules)} rules, {len(policy.document.cases)} cases)"
        )
        return summary, policy.committee_notes
    policy, _stamp = load_policy_for(settings)
    summary = (
        f"{path} (version {policy.version}, {len(policy.rules)} rules, "
        f"{len(policy.document.cases)} cases, {len(policy.document.organisation.members)} members in force)"
    )
    return summary, policy.committee_notes


# --- checks before anything starts ------------------------------------------------------------------


@dataclass(frozen=True)
class PreflightReport:
    """What `config validate` prints and `serve` logs: a summary, and warnings that do not stop startup."""

    summary: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def preflight(
    settings: GatewaySettings, environ: os._Environ[str] | dict[str, str] | None = None
) -> PreflightReport:
    """Check what pydantic cannot see (files, environment, combinations) without writing anything.

    Raises ConfigError naming the key for anything that would stop the gateway from working.
    """
    env = os.environ if environ is None else environ
    report = PreflightReport()
    summary, warnings = report.summary, report.warnings
    summary.append(("state_dir", str(settings.state_dir)))

    listeners = {"submission": ("STARTTLS", settings.server.submission)}
    listeners["submissions"] = ("implicit TLS", settings.server.submissions)
    if not any(listener.enabled for _kind, listener in listeners.values()):
        raise ConfigError(
            "server.submission.enabled and server.submissions.enabled are both false: "
            "nothing would accept mail; enable at least one listener"
        )
    for name, (kind, listener) in listeners.items():
        where = f"{host_port(listener.host, listener.port)} ({kind})" if listener.enabled else "disabled"
        summary.append((name, where))

    tls = settings.tls
    if tls.cert_file is not None and tls.key_file is not None:
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(tls.cert_file, tls.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"tls.cert_file / tls.key_file: cannot load {tls.cert_file} with {tls.key_file}: {exc}"
            ) from None
        summary.append(("tls", str(tls.cert_file)))
    else:
        summary.append(
            ("tls", f"self-signed certificate for {settings.server.hostname}, made at first start")
        )

    users = settings.auth.users_file
    accounts = open_state(settings).accounts
    if settings.state.backend == "postgresql":
        if accounts.exists():
            summary.append(("accounts", f"PostgreSQL: {len(accounts.open().members())} account(s)"))
        else:
            summary.append(("accounts", "PostgreSQL: none added yet"))
    elif accounts.exists():
        members = accounts.open().members()
        summary.append(("accounts", f"{users}: {len(members)} account(s)"))
        if users.stat().st_mode & 0o077:
            warnings.append(f"{users} can be read by other users; run: chmod 600 {shlex.quote(str(users))}")
    else:
        summary.append(("accounts", f"{users} does not exist yet"))

    upstream = settings.delivery.upstream
    if upstream is None:
        summary.append(("delivery", f"local maildir {settings.delivery.maildir} (no upstream set)"))
    else:
        if upstream.password_env is not None and not env.get(upstream.password_env):
            raise ConfigError(
                f"delivery.upstream.password_env names the environment variable {upstream.password_env}, "
                "which is not set (or empty)"
            )
        for key, path in (("password_file", upstream.password_file), ("ca_file", upstream.ca_file)):
            if path is not None and not os.access(path, os.R_OK):
                raise ConfigError(f"delivery.upstream.{key}: cannot read {path}")
        verify = "" if upstream.verify_certificates else ", certificate NOT verified"
        summary.append(
            ("delivery", f"upstream {host_port(upstream.host, upstream.port)} ({upstream.security}{verify})")
        )
        if not upstream.verify_certificates and upstream.security != "none":
            warnings.append(
                "delivery.upstream.verify_certificates is false: the upstream is not authenticated"
            )

    metrics = settings.metrics
    if metrics.enabled:
        summary.append(("metrics", f"http://{host_port(metrics.host, metrics.port)}/metrics and /healthz"))
        if not is_loopback(metrics.host):
            warnings.append(
                f"metrics.host is {metrics.host}, not a loopback address: /metrics is reachable from the "
                "network (fine inside a container whose port is published on loopback only)"
            )
    else:
        summary.append(("metrics", "disabled"))

    policy_summary, committee_notes = check_policy(settings)
    summary.append(("policy", policy_summary))
    warnings.extend(committee_notes)
    return report


# --- the first start: a one-time demo account --------------------------------------------------------


@dataclass(frozen=True)
class DemoAccount:
    address: str
    password: str


def wants_demo_account(settings: GatewaySettings) -> bool:
    """The embedded default's first start: no accounts yet, and no upstream to relay to."""
    return settings.delivery.upstream is None and not open_state(settings).accounts.exists()


def create_demo_account(settings: GatewaySettings) -> DemoAccount | None:
    """On the embedded default's first start (no users file), make a demo account with a random password.

    Never with an upstream configured: an account nobody asked for must not be able to relay to a real
    mail server. The password is shown once; only its hash is stored. So it is made only once every
    listener is up, just before the banner shows it: a start that fails earlier (a port in use) leaves
    no account behind, and the next start makes one and shows its password.
    """
    users = settings.auth.users_file
    if not wants_demo_account(settings):
        return None
    # Letters and digits only (143 bits): nothing a shell or swaks could take for an option or quote.
    password = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(24))
    if settings.state.backend == "files":
        users.parent.mkdir(parents=True, exist_ok=True)
    try:
        open_state(settings).accounts.open().add(DEMO_ADDRESS, password)
    except AccountError:
        if not open_state(settings).accounts.exists():
            raise
        return None  # another gateway on the shared accounts made it first: its banner shows it
    log_event(log, "demo_account_created", address=DEMO_ADDRESS, users_file=users)
    return DemoAccount(DEMO_ADDRESS, password)


def startup_banner(
    settings: GatewaySettings,
    addresses: dict[str, tuple[str, int]],
    demo: DemoAccount | None,
    config_path: Path | None,
    program: str = "conduct-gateway",
) -> str:
    """What a new user needs to send a first message: account, password, exact swaks command, maildir.

    Printed on standard output (never logged: it may hold the demo password).
    """
    paragraphs: list[list[str]] = []
    if settings.delivery.upstream is None:
        paragraphs.append(
            [
                "No upstream mail server is set (delivery.upstream), so accepted mail is delivered to",
                f"the local Maildir {settings.delivery.maildir} (one file per message in new/).",
            ]
        )
    if settings.tls.cert_file is None:
        paragraphs.append(
            [
                f"TLS uses a self-signed certificate, {open_state(settings).layout.tls / SELF_SIGNED_CERT}:",
                "mail clients ask you to accept it once "
                "(Gmail needs a CA-signed one: see docs/guides/senders.md).",
            ]
        )
    if demo is not None:
        paragraphs.append(
            [
                "First start: a one-time demo account was made. Its password is shown only now",
                "(the users file keeps only a hash):",
                f"    address:  {demo.address}",
                f"    password: {demo.password}",
            ]
        )
        command = swaks_command(addresses, demo)
        if command:
            paragraphs.append(["Send a first message with:", f"    {command}"])
        add = cli_command(program, config_path, "user", "add", "ADDRESS")
        remove = cli_command(program, config_path, "user", "remove", demo.address)
        paragraphs.append([f"Add real accounts with `{add}`", f"and remove this one with `{remove}`."])
    if not paragraphs:
        return ""
    rule = "-" * 78
    body = [line for paragraph in paragraphs for line in ("", *paragraph)][1:]
    return "\n".join([rule, *body, rule])


def cli_command(program: str, config_path: Path | None, *words: str) -> str:
    """A command line to copy: the program as started, and the settings file unless it is the default."""
    args = [program, *words]
    if config_path is not None and config_path != DEFAULT_CONFIG:
        args += ["--config", str(config_path)]
    return shlex.join(args)


def _listing(addresses: dict[str, tuple[str, int]]) -> str:
    return ", ".join(f"{name} {host_port(host, port)}" for name, (host, port) in addresses.items())


def swaks_command(addresses: dict[str, tuple[str, int]], demo: DemoAccount) -> str:
    """The swaks command line that sends a first message through the listener the gateway opened."""
    if "submission" in addresses:
        host, port = addresses["submission"]
        tls = "--tls"  # STARTTLS
    elif "submissions" in addresses:
        host, port = addresses["submissions"]
        tls = "--tlsc"  # TLS from the first byte
    else:
        return ""
    args = ["swaks", "--server", _client_host(host), "--port", str(port), tls, "--auth", "PLAIN"]
    args += ["--auth-user", demo.address, "--auth-password", demo.password]
    args += ["--from", demo.address, "--to", demo.address]
    args += ["--header", "Subject: first message through conduct-gateway"]
    return shlex.join(args)


# --- running ------------------------------------------------------------------------------------------


async def recover_releases(screener: Screener, spool: QueuePort) -> None:
    """Spool the releases of approvals a crash kept out of the spool: nothing approved is lost.

    A release already in the spool (the crash came after its commit) is only marked, never sent twice.
    """
    for reference, release in await asyncio.to_thread(screener.unreleased_holds):
        if spool.locate(release.queue_id) is None and await spool_outgoing(spool, [release]):
            continue  # not stored (logged): the next round tries again
        await asyncio.to_thread(screener.release_recovered, reference)
        log_event(log, "release_recovered", level=logging.WARNING, reference=reference)


class Gateway:
    """Everything the gateway runs, started together and stopped in order (intake, then delivery)."""

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        config_path: Path | None = None,
        program: str = "conduct-gateway",
        announce: Announce | None = None,
    ) -> None:
        self.settings = settings
        self._config_path = config_path
        self._program = program
        self._announce = announce or functools.partial(print, flush=True)
        self._stop_requested = asyncio.Event()
        self._stopping = asyncio.Event()
        self._listening = False
        self._accounts: AccountsPort | None = None
        self._screener: Screener | None = None
        self._delivery_task: asyncio.Task[None] | None = None
        self._delivery_process: DeliveryProcess | None = None
        self._main_task: asyncio.Task[object] | None = None
        # Set when the users file or the policy changed: the review round runs at once (offboarding).
        self._review_nudge = asyncio.Event()
        # Set when the policy was reloaded: the shared state learns this gateway's new version at once.
        self._presence_nudge = asyncio.Event()

    def request_stop(self) -> None:
        """Begin a graceful stop (SIGTERM, SIGINT). A second request stops without waiting."""
        if self._stop_requested.is_set():
            log_event(log, "stop_now", level=logging.WARNING, reason="second stop request")
            if self._main_task is not None:
                self._main_task.cancel()
            return
        log_event(log, "stopping", grace=self.settings.shutdown_grace)
        self._stop_requested.set()

    def reload(self) -> None:
        """SIGHUP: re-read the users file and the policy. Settings changes need a restart."""
        systemd.notify("RELOADING=1")
        if self._accounts is not None:
            # A signal handler runs on the event loop: a database's accounts follow at the next poll.
            self._accounts.reload_if_changed()
        policy = self._screener.reload() if self._screener is not None else None
        self._presence_nudge.set()
        accounts = len(self._accounts.members()) if self._accounts is not None else None
        log_event(log, "reloaded", accounts=accounts, policy=policy)
        systemd.notify("READY=1")

    def health(self) -> Health:
        """Healthy while the listeners accept connections and the delivery worker runs."""
        delivery = self._delivery_task is not None and not self._delivery_task.done()
        if self._delivery_process is not None:
            delivery = delivery and self._delivery_process.alive
        return Health({"listeners": self._listening, "delivery": delivery and not self._stopping.is_set()})

    async def run(self, *, handle_signals: bool = True) -> None:
        """Run until a stop is requested; then stop accepting, drain, and return."""
        settings = self.settings
        self._main_task = asyncio.current_task()
        if settings.delivery.upstream is None and write_example_policy(settings.policy.path):
            # The embedded default's first start: the admin edits this copy; the package keeps its own.
            log_event(log, "example_policy_written", path=settings.policy.path)
        for warning in preflight(settings).warnings:
            log_event(log, "config_warning", level=logging.WARNING, detail=warning)
        settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        state = open_state(settings)
        accounts = self._accounts = state.accounts.open()
        if not accounts.members() and not wants_demo_account(settings):
            log_event(
                log,
                "no_accounts",
                level=logging.WARNING,
                hint="nobody can send yet; add an account with: conduct-gateway user add ADDRESS",
            )
        spool = state.queue.open()
        tls_context = server_context(settings.tls, settings.state_dir, settings.server.hostname)
        screener = self._screener = build_screener(settings, accounts)
        await screener.start()
        service = SubmissionService(settings, spool, accounts, screener, tls_context)
        worker: DeliveryWorker | DeliveryProcess
        if wants_own_process(settings.delivery.own_process):
            worker = self._delivery_process = DeliveryProcess(settings, spool)
        else:
            worker = DeliveryWorker(
                spool, settings.delivery, hostname=settings.server.hostname, crash_at=settings.crash_at
            )
        sources = {
            "spool": spool.recent_statistics,
            "delivery": worker.statistics,
            "smtp": service.statistics,
        }
        sources.update(screener.metric_sources())
        presence = Presence(state.instances, functools.partial(_policy_version, screener))
        sources["presence"] = presence.statistics
        # Journal intake: copies of inbound committee mail (started with the listeners below).
        shared_policy = screener.policy_source
        journal = JournalService.from_settings(settings, shared_policy) if settings.journal.enabled else None
        if journal is not None:
            sources["journal"] = journal.statistics
        registry = build_registry(sources)
        metrics = MetricsServer(settings.metrics, registry, self.health)
        delivery_stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        if handle_signals:
            loop.add_signal_handler(signal.SIGTERM, self.request_stop)
            loop.add_signal_handler(signal.SIGINT, self.request_stop)
            loop.add_signal_handler(signal.SIGHUP, self.reload)
        service_stopped = False
        try:
            await service.start()
            self._listening = True
            for name, (host, port) in service.addresses.items():
                log_event(log, "listening", name=name, address=host_port(host, port))
            if settings.metrics.enabled:
                await metrics.start()
                host, port = metrics.address
                log_event(log, "listening", name="metrics", address=host_port(host, port))
            if journal is not None:
                await journal.start()
                log_event(log, "listening", name="journal", address=host_port(*journal.address))
            async with asyncio.TaskGroup() as group:
                self._delivery_task = group.create_task(
                    self._deliver(
                        worker, delivery_stop, shared=spool.shared and not isinstance(worker, DeliveryProcess)
                    )
                )
                group.create_task(self._watch_files(accounts, screener, delivery_stop))
                if state.counts.shared:
                    group.create_task(sync_shared_counts(state.counts, delivery_stop))
                if state.instances.shared:
                    group.create_task(presence.run(delivery_stop, self._presence_nudge))
                digests = committee_digest(settings, state, spool, screener)
                group.create_task(self._review_housekeeping(screener, spool, delivery_stop, digests))
                demo = create_demo_account(settings)
                if demo is not None:
                    await asyncio.to_thread(accounts.reload_if_changed)
                    # The users file now exists: the committee in force follows it from this message on.
                    await asyncio.to_thread(screener.reload_if_changed)
                banner = startup_banner(settings, service.addresses, demo, self._config_path, self._program)
                if banner:
                    self._announce(banner)
                log_event(log, "ready")
                systemd.notify("READY=1", f"STATUS=accepting mail on {_listing(service.addresses)}")
                if (interval := systemd.watchdog_interval()) is not None:
                    group.create_task(self._watchdog(interval, delivery_stop))
                await self._stop_requested.wait()
                systemd.notify("STOPPING=1", "STATUS=stopping: finishing transactions in flight")
                self._stopping.set()
                self._listening = False
                await service.stop(settings.shutdown_grace)
                service_stopped = True
                log_event(log, "intake_stopped")
                delivery_stop.set()
            log_event(log, "stopped")
        finally:
            self._listening = False
            self._stopping.set()
            delivery_stop.set()
            if not service_stopped:
                with contextlib.suppress(Exception):
                    await service.stop(0)
            await metrics.stop()
            if journal is not None:
                await journal.stop()
                journal.close()
            await screener.stop()
            screener.close()
            if handle_signals:
                for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    loop.remove_signal_handler(signum)

    async def _watchdog(self, interval: float, stop: asyncio.Event) -> None:
        """Ping systemd's watchdog while the event loop turns and the service is healthy.

        A loop stuck in one call never gets here, so systemd notices and restarts the service; an
        unhealthy service (listeners or delivery down) stops pinging for the same outcome.
        """
        while not stop.is_set():
            if self.health().ok:
                systemd.notify("WATCHDOG=1")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await stop.wait()

    async def _deliver(
        self, worker: DeliveryWorker | DeliveryProcess, stop: asyncio.Event, *, shared: bool = False
    ) -> None:
        await run_restarting(functools.partial(worker.run, stop), stop, shared=shared)
        if not stop.is_set():
            # A worker that ends on its own would leave accepted mail undelivered while we answer 250.
            raise RuntimeError("the delivery worker stopped by itself")
        log_event(log, "delivery_stopped")

    async def _review_housekeeping(
        self, screener: Screener, spool: QueuePort, stop: asyncio.Event, digests: DigestSchedule | None = None
    ) -> None:
        # Held messages expire (the sender gets a notice; nothing else is sent), review decisions
        # made with the CLI while we run reach the audit trail, reviewers who were offboarded or
        # became conflicted are replaced, and cases past their expunge date are expunged. At start,
        # then every check_interval, and at once when the users file or the policy changes.
        expunger: RoundTask | None = screener.expunger
        while not stop.is_set():
            self._review_nudge.clear()
            if expunger is not None:
                try:
                    await asyncio.to_thread(expunger.run)
                except Exception as exc:  # e.g. the registry key is missing: review goes on regardless
                    log_event(log, "expunge_round_failed", logging.ERROR, error=str(exc))
            try:
                await spool_outgoing(spool, await asyncio.to_thread(screener.review_housekeeping))
                await recover_releases(screener, spool)
                if digests is not None:  # the committee digest of each period that has ended
                    await digests.run()
            except Exception as exc:  # the next round tries again; intake and delivery go on
                log_event(log, "review_housekeeping_failed", logging.ERROR, error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.review.check_interval):
                    nudged = asyncio.ensure_future(self._review_nudge.wait())
                    stopped = asyncio.ensure_future(stop.wait())
                    try:
                        await asyncio.wait((nudged, stopped), return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        nudged.cancel()
                        stopped.cancel()
                        await asyncio.gather(nudged, stopped, return_exceptions=True)

    async def _watch_files(self, accounts: AccountsPort, screener: Screener, stop: asyncio.Event) -> None:
        # `user add|remove` and policy edits change files while we run: pick them up without a
        # restart. Compiling a large policy takes a while, so it runs off the event loop.
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(ACCOUNTS_POLL_INTERVAL):
                    await stop.wait()
            if not stop.is_set():
                before = _account_snapshot(accounts)
                # On a thread: on PostgreSQL the poll is a query (the intake never waits on it).
                await asyncio.to_thread(accounts.reload_if_changed)
                reloaded = await asyncio.to_thread(screener.reload_if_changed)
                if before != _account_snapshot(accounts) or reloaded == ReloadResult.RELOADED:
                    self._review_nudge.set()  # offboarding takes effect on held messages at once
                    self._presence_nudge.set()


def _policy_version(screener: Screener) -> str:
    source = screener.policy_source
    return source.policy.version if source is not None else ""


def _account_snapshot(accounts: AccountsPort) -> tuple[tuple[str, frozenset[str]], ...]:
    return tuple((member, accounts.addresses_of(member)) for member in accounts.members())


def _client_host(host: str) -> str:
    # A listener on every address is reached locally through loopback.
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
