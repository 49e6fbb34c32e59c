"""Journal intake: an SMTP listener for copies of inbound committee mail; learns, records, discards.

The organisation's real mail server sends a copy of every message to the committee here (Postfix
``recipient_bcc_maps``, Google Workspace "Also deliver to"; see docs/guides/protected-content.md).
For each copy:

- if its From address or envelope sender is a recorded address of a reporter or witness of a case,
  their words are learnt as fingerprints under that case (``gateway.state.fingerprints``), so that
  protected-content finds them in later outgoing mail;
- the thread ledger records its Message-ID, references and participants, so recipient banners work
  on threads whose earlier messages came from outside;
- the mailing list addresses it shows, if a list distributed it (``List-Post``, ``List-Id``), are
  remembered in the ledger, for the reply-all net (the ``list-reply-all`` rule);
- the copy itself is discarded: nothing of it is stored but fingerprints and ledger metadata, and
  nothing is ever relayed.

The listener has no AUTH and no TLS: it is meant for loopback or a private link, and only clients in
``journal.allowed_clients`` may send (everyone else gets ``550 5.7.1`` at MAIL, RCPT and DATA). A
copy is answered 250 only after it has been learnt and recorded; if that fails the answer is 451 and
the mail server tries again. aiosmtpd's stock command loop is used: the clients are mail servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from gateway.decision.policy_source import PolicySource
from gateway.errors import GatewayError
from gateway.logs import log_event
from gateway.policy.engine import CompiledPolicy
from gateway.policy.mailing_lists import learnt_list_addresses
from gateway.policy.mime import parse_message
from gateway.settings import GatewaySettings, JournalSettings
from gateway.state.opening import open_state
from gateway.state.ports import FingerprintsPort, Learnt, LedgerPort

log = logging.getLogger("gateway.intake.journal")

REFUSED_CLIENT = "550 5.7.1 This client may not send journal copies here"
ACCEPTED = "250 2.0.0 Journal copy learnt and discarded (never relayed)"
FAILED = "451 4.3.0 The journal copy could not be recorded; try again later"

STOP_WAIT = 5.0  # seconds stop() waits for closed sessions to go

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class JournalResult:
    """What one copy taught the gateway (metadata only)."""

    learnt: tuple[Learnt, ...]  # one per case whose reporter or witness sent it
    recorded: bool  # the ledger recorded its Message-ID


@dataclass(frozen=True)
class JournalStatistics:
    """Counters since start."""

    copies_total: int
    learnt_total: int
    refused_clients_total: int
    failures_total: int


class Journal:
    """What a journal copy does to the gateway's knowledge: learn protected words, record the thread."""

    def __init__(
        self, policy: Callable[[], CompiledPolicy], store: FingerprintsPort, ledger: LedgerPort
    ) -> None:
        self._policy = policy
        self._store = store
        self._ledger = ledger
        self._authors_version = ""
        self._authors: dict[str, tuple[tuple[str, str], ...]] = {}

    def receive(self, content: bytes, mail_from: str) -> JournalResult:
        """Learn from one copy and record it in the ledger; the copy itself is not kept."""
        message = parse_message(content)
        senders = [address.address for address in message.from_]
        if mail_from:
            senders.append(mail_from)
        authors = self._authors_of(senders)
        finder = self._policy().finder
        learnt = tuple(
            self._store.learn_message(case, message, person=person, source="journal", finder=finder)
            for case, person in authors
        )
        cases = {case for case, _ in authors}
        policy = self._policy()
        lists = [
            address
            for address in learnt_list_addresses(content)
            if address != policy.conduct_address and address not in policy.committee
        ]
        if lists:
            self._ledger.record_lists(lists)
        recorded = False
        if message.message_id is not None:
            case = next(iter(cases)) if len(cases) == 1 else None
            if case is None:
                case = self._ledger.lookup(message).case
            recorded = self._ledger.record_message(message, case=case)
        return JournalResult(learnt=learnt, recorded=recorded)

    def _authors_of(self, senders: list[str]) -> tuple[tuple[str, str], ...]:
        """(case, person) of every reporter or witness among ``senders``."""
        policy = self._policy()
        if policy.version != self._authors_version:
            table: dict[str, list[tuple[str, str]]] = {}
            for case in policy.document.cases:
                for person in case.protected():
                    for address in person.addresses:
                        table.setdefault(address.lower(), []).append((case.code, person.id))
            self._authors = {address: tuple(dict.fromkeys(found)) for address, found in table.items()}
            self._authors_version = policy.version
        found: dict[tuple[str, str], None] = {}
        for sender in senders:
            for author in self._authors.get(sender.strip().strip("<>").lower(), ()):
                found[author] = None
        return tuple(found)


class _Handler:
    """aiosmtpd hooks: refuse foreign clients, then learn from the copy at end of DATA."""

    def __init__(self, service: JournalService) -> None:
        self._service = service

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if not self._service.allowed(session.peer):
            return REFUSED_CLIENT
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if not self._service.allowed(session.peer):
            return REFUSED_CLIENT
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if not self._service.allowed(session.peer):
            return REFUSED_CLIENT
        content = envelope.original_content or b""
        return await self._service.receive(content, envelope.mail_from or "")


class _JournalProtocol(SMTP):
    """aiosmtpd's SMTP session (public API only), tracked so that ``stop`` can close it."""

    def __init__(self, service: JournalService, **options: Any) -> None:
        super().__init__(_Handler(service), **options)
        self._service = service

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._service.session_opened(self)

    def connection_lost(self, error: Exception | None) -> None:
        # aiosmtpd cancels the session's task here.
        super().connection_lost(error)
        self._service.session_closed(self)


class JournalService:
    """The journal listener: binds, receives copies, stops."""

    def __init__(self, settings: JournalSettings, hostname: str, journal: Journal) -> None:
        self.settings = settings
        self.hostname = hostname
        self.journal = journal
        self.networks: tuple[IpNetwork, ...] = tuple(
            ipaddress.ip_network(network, strict=False) for network in settings.allowed_clients
        )
        self.connections: set[_JournalProtocol] = set()
        self._all_closed = asyncio.Event()
        self._all_closed.set()
        self._learning: set[asyncio.Task[Any]] = set()  # sessions whose copy is being learnt
        self._server: asyncio.Server | None = None
        self._address: tuple[str, int] | None = None
        self._closers: list[Callable[[], None]] = []
        self._copies = self._learnt = self._refused = self._failures = 0

    @classmethod
    def from_settings(cls, settings: GatewaySettings, source: PolicySource | None = None) -> JournalService:
        """Open the policy, the fingerprint store and the ledger the journal writes to.

        ``source``: the policy the gateway's screener holds, shared rather than compiled a second time.
        """
        if source is None:
            source = PolicySource.from_settings(settings)  # the policy file and the case registry
        state = open_state(settings)
        store = state.fingerprints.open()
        try:
            ledger = state.ledger.open()
        except GatewayError:
            store.close()
            raise

        def current_policy() -> CompiledPolicy:
            source.reload_if_changed()  # a stat; the policy names the reporters whose words we learn
            return source.policy

        service = cls(settings.journal, settings.server.hostname, Journal(current_policy, store, ledger))
        service._closers = [store.close, ledger.close]
        return service

    def allowed(self, peer: Any) -> bool:
        """Whether the client address is in ``allowed_clients``."""
        try:
            address = ipaddress.ip_address(str(peer[0]).split("%", 1)[0])
        except (TypeError, ValueError, IndexError):
            self._refused += 1
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self.networks):
            return True
        self._refused += 1
        log_event(log, "journal-client-refused", logging.WARNING, client=str(address))
        return False

    def session_opened(self, protocol: _JournalProtocol) -> None:
        self.connections.add(protocol)
        self._all_closed.clear()

    def session_closed(self, protocol: _JournalProtocol) -> None:
        self.connections.discard(protocol)
        if not self.connections:
            self._all_closed.set()

    async def receive(self, content: bytes, mail_from: str) -> str:
        # The session's own task (aiosmtpd awaits its hooks in it): stop() waits for it.
        session = asyncio.current_task()
        if session is not None:
            self._learning.add(session)
        try:
            # Parsing and fingerprinting a large copy takes CPU time: keep it off the event loop.
            result = await asyncio.to_thread(self.journal.receive, content, mail_from)
        except Exception as exc:
            self._failures += 1
            log_event(log, "journal-copy-failed", logging.ERROR, error=type(exc).__name__)
            return FAILED
        finally:
            if session is not None:
                self._learning.discard(session)
        self._copies += 1
        self._learnt += sum(1 for item in result.learnt if item.shingles)
        log_event(
            log,
            "journal-copy",
            learnt=len(result.learnt),
            cases=",".join(sorted({item.case for item in result.learnt})) or None,
            recorded=result.recorded,
        )
        return ACCEPTED

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: _JournalProtocol(
                    self,
                    data_size_limit=self.settings.max_message_size,
                    enable_SMTPUTF8=True,
                    hostname=self.hostname,
                    ident="conduct-gateway journal",
                    loop=loop,
                ),
                host=self.settings.host,
                port=self.settings.port,
            )
        except OSError as exc:
            raise GatewayError(f"cannot listen for journal copies: {exc}") from exc
        host, port = self._server.sockets[0].getsockname()[:2]
        self._address = (str(host), int(port))

    @property
    def address(self) -> tuple[str, int]:
        if self._address is None:
            raise RuntimeError("the journal listener is not started")
        return self._address

    async def stop(self) -> None:
        """Stop listening and close every session (a copy being learnt finishes first)."""
        if self._server is not None:
            self._server.close()
        learning = list(self._learning)
        for protocol in list(self.connections):
            if protocol.transport is not None:
                protocol.transport.close()
        for task in learning:
            task.cancel()
        await asyncio.gather(*learning, return_exceptions=True)
        # A closed connection's session is cancelled by aiosmtpd: wait until every one is gone.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_WAIT):
                await self._all_closed.wait()
        await asyncio.sleep(0)  # let the cancelled sessions unwind
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def close(self) -> None:
        """Close the store and ledger opened by ``from_settings``."""
        for closer in self._closers:
            with contextlib.suppress(Exception):
                closer()
        self._closers = []

    def statistics(self) -> JournalStatistics:
        return JournalStatistics(self._copies, self._learnt, self._refused, self._failures)
