"""Prometheus ``/metrics`` and ``/healthz`` on their own loopback port, read from statistics() snapshots."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from gateway import __version__
from gateway.settings import MetricsSettings

log = logging.getLogger("gateway.metrics")

NAMESPACE = "conduct_gateway"
REQUEST_TIMEOUT = 5.0
MAX_REQUEST_HEAD = 8192

# Only code-defined words may become label values (queue states, reply classes, outcomes). Anything
# with '@' or '.' (an address, a domain, a host name) or mixed case cannot, so no identity can end up
# in a time series even if a statistics() snapshot grows a mapping keyed by something it should not.
_SAFE_LABEL_VALUE = re.compile(r"^[a-z0-9_]{1,32}$")
_METRIC_WORD = re.compile(r"[^a-zA-Z0-9_]")

StatisticsSource = Callable[[], Any]

# The label a mapping field's keys go in (anything else: "kind").
LABEL_NAMES = {"messages": "state", "outcomes_total": "outcome", "recipients_total": "result"}

# HELP texts of the fields we know; a field added later is exported with a generic text.
DESCRIPTIONS = {
    "spool.messages": "Messages in the spool by state, counted on disk at scrape time.",
    "spool.commits_total": "Messages durably committed to the spool (answered 250).",
    "spool.commit_failures_total": "Spool commits that failed (the client got a temporary error).",
    "spool.directory_syncs_total": "Folder fsyncs; one is shared by every commit that waited for it.",
    "spool.file_syncs_total": "File fsyncs made by the spool.",
    "spool.quarantined_total": "Unreadable spool entries moved to corrupt/.",
    "smtp.connections_open": "SMTP connections open now.",
    "smtp.connections_total": "SMTP connections admitted.",
    "smtp.connections_refused_total": "SMTP connections refused (limits, or shutting down).",
    "smtp.auth_successes_total": "Successful logins.",
    "smtp.auth_failures_total": "Failed logins.",
    "smtp.auth_throttled_total": "Logins refused because the client failed too often.",
    "smtp.messages_accepted_total": "Messages accepted (spooled, answered 250).",
    "smtp.messages_refused_total": "Messages refused with a permanent error (policy, size, ...).",
    "smtp.messages_deferred_total": "Messages answered with a temporary error.",
    "smtp.bytes_accepted_total": "Bytes of accepted messages.",
    "smtp.commits_in_flight": "Spool commits under way now.",
    "delivery.in_flight": "Messages being delivered now.",
    "delivery.ready": "Messages waiting for a delivery slot.",
    "delivery.scheduled": "Deferred messages waiting for their next attempt.",
    "delivery.connections_open": "Connections to the upstream open now.",
    "delivery.connections_total": "Connections made to the upstream.",
    "delivery.attempts_total": "Delivery attempts.",
    "delivery.outcomes_total": "Delivery attempts by outcome.",
    "delivery.recipients_total": "Recipient results of delivery attempts.",
    "delivery.dsns_total": "Delivery status notifications sent to senders.",
    "delivery.errors_total": "Internal errors of the delivery worker (the message was kept).",
    "policy_workers.workers": "Policy worker processes configured (policy.workers).",
    "policy_workers.alive": "Policy worker processes alive now.",
    "policy_workers.restarts_total": "Policy workers started again after one died or was stuck.",
    "policy_workers.lost_total": "Messages deferred (451) because their policy worker died or was stuck.",
    "policy_workers.stale_total": "Messages evaluated in the gateway process (a worker's policy differed).",
    "policy_workers.over_budget_total": "Messages refused (552) for using up policy.evaluation_budget.",
    "policy_workers.waiting": "Messages waiting for an idle policy worker now.",
}


@dataclass(frozen=True)
class Health:
    """What /healthz reports: healthy only when every check passes."""

    checks: Mapping[str, bool]

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(self.checks.values())


class StatisticsCollector:
    """Turns each component's ``statistics()`` snapshot into metric families at scrape time.

    A snapshot is a dataclass or a mapping. Every numeric field becomes
    ``conduct_gateway_<component>_<field>`` (a counter when the field name ends in ``_total``, a gauge
    otherwise); a field holding a mapping of numbers becomes one family with a ``kind`` label. Other
    values (text, lists) are never exported.
    """

    def __init__(self, sources: Mapping[str, StatisticsSource]) -> None:
        self._sources = dict(sources)

    def collect(self) -> Iterator[Metric]:
        yield InfoMetricFamily(
            f"{NAMESPACE}_build", "conduct-gateway version.", value={"version": __version__}
        )
        for component, source in self._sources.items():
            try:
                snapshot = source()
            except Exception:  # a broken snapshot must not take the whole scrape down
                log.exception("statistics snapshot of %s failed", component)
                continue
            yield from self._families(_metric_word(component), _fields(snapshot))

    def describe(self) -> Iterator[Metric]:
        # Families depend on the live snapshots; describing nothing keeps registration side-effect free.
        return iter(())

    def _families(self, component: str, fields: Mapping[str, Any]) -> Iterator[Metric]:
        for field, value in fields.items():
            word = _metric_word(field)
            counter = word.endswith("_total")
            name = f"{NAMESPACE}_{component}_{word.removesuffix('_total')}"
            doc = DESCRIPTIONS.get(f"{component}.{field}", f"{component}: {field.replace('_', ' ')}.")
            if _is_number(value):
                family = _family(name, doc, counter)
                family.add_metric([], float(value))
                yield family
            elif isinstance(value, Mapping) and value and all(_is_number(v) for v in value.values()):
                safe = {str(k): v for k, v in value.items() if _SAFE_LABEL_VALUE.match(str(k))}
                if not safe:
                    continue
                family = _family(name, doc, counter, labels=[LABEL_NAMES.get(field, "kind")])
                for kind, number in sorted(safe.items()):
                    family.add_metric([kind], float(number))
                yield family


def _family(
    name: str, doc: str, counter: bool, labels: list[str] | None = None
) -> CounterMetricFamily | GaugeMetricFamily:
    if counter:
        return CounterMetricFamily(name, doc, labels=labels)
    return GaugeMetricFamily(name, doc, labels=labels)


def _fields(snapshot: Any) -> Mapping[str, Any]:
    if dataclasses.is_dataclass(snapshot) and not isinstance(snapshot, type):
        return {f.name: getattr(snapshot, f.name) for f in dataclasses.fields(snapshot)}
    if isinstance(snapshot, Mapping):
        return {str(k): v for k, v in snapshot.items()}
    if hasattr(snapshot, "_asdict"):
        return dict(snapshot._asdict())
    return {}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float)


def _metric_word(text: str) -> str:
    return _METRIC_WORD.sub("_", text).strip("_").lower()


def build_registry(sources: Mapping[str, StatisticsSource]) -> CollectorRegistry:
    """A registry of its own (never the process-global one) with our statistics and process metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatisticsCollector(sources))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


class MetricsServer:
    """A minimal HTTP/1.1 server for ``GET /metrics`` and ``GET /healthz``; everything else is 404/405."""

    def __init__(
        self, settings: MetricsSettings, registry: CollectorRegistry, health: Callable[[], Health]
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._health = health
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self._settings.host, self._settings.port, limit=MAX_REQUEST_HEAD
        )

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); with port 0 in the settings, the port the system picked."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("metrics server is not running")
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
                status, content_type, body = self._respond(head)
                if head.startswith(b"HEAD "):
                    length, body = len(body), b""
                else:
                    length = len(body)
                head_out = (
                    f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n"
                    "Cache-Control: no-store\r\nConnection: close\r\n\r\n"
                )
                writer.write(head_out.encode("ascii") + body)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # a scraper that hangs up or sends junk gets nothing more
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    await writer.wait_closed()

    def _respond(self, head: bytes) -> tuple[str, str, bytes]:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return "400 Bad Request", "text/plain; charset=utf-8", b"bad request\n"
        method, target = parts[0], parts[1].split("?", 1)[0]
        if target not in ("/metrics", "/healthz"):
            return "404 Not Found", "text/plain; charset=utf-8", b"not found: try /metrics or /healthz\n"
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain; charset=utf-8", b"use GET\n"
        if target == "/healthz":
            health = self._health()
            text = "".join(f"{name}: {'up' if up else 'down'}\n" for name, up in health.checks.items())
            status = "200 OK" if health.ok else "503 Service Unavailable"
            return (
                status,
                "text/plain; charset=utf-8",
                (("ok\n" if health.ok else "unhealthy\n") + text).encode(),
            )
        accept = next(
            (line.split(":", 1)[1].strip() for line in lines[1:] if line.lower().startswith("accept:")), ""
        )
        encoder, content_type = choose_encoder(accept)
        return "200 OK", content_type, encoder(self._registry)
