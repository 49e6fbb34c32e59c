"""Prometheus ``/metrics`` and ``/healthz`` on their own loopback port, read from statistics() snapshots."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from gateway import __version__
from gateway.histogram import HistogramSnapshot
from gateway.metric_catalogue import CATALOGUE, NAMESPACE, MetricSpec
from gateway.settings import MetricsSettings

log = logging.getLogger("gateway.metrics")

REQUEST_TIMEOUT = 5.0
MAX_REQUEST_HEAD = 8192

# Only code-defined words may become label values (queue states, reply classes, outcomes). Anything
# with '@' or '.' (an address, a domain, a host name) or mixed case cannot, so no identity can end up
# in a time series even if a statistics() snapshot grows a mapping keyed by something it should not.
_SAFE_LABEL_VALUE = re.compile(r"^[a-z0-9_]{1,32}$")
_SAFE_INFO_VALUE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")

StatisticsSource = Callable[[], Any]


@dataclass(frozen=True)
class Health:
    """What /healthz reports: healthy only when every check passes."""

    checks: Mapping[str, bool]

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(self.checks.values())


class StatisticsCollector:
    """Turns each component's ``statistics()`` snapshot into metric families at scrape time.

    A snapshot is a dataclass or a mapping. Only the fields declared in
    :data:`~gateway.metric_catalogue.CATALOGUE` (as ``"<component>.<field>"``) are exported, with the
    type, name, help text and label declared there: a number becomes a counter or gauge, a mapping of
    numbers one family with a label, a :class:`~gateway.histogram.HistogramSnapshot` a histogram.
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
            yield from self._families(component, _fields(snapshot))

    def describe(self) -> Iterator[Metric]:
        # Families depend on the live snapshots; describing nothing keeps registration side-effect free.
        return iter(())

    def _families(self, component: str, fields: Mapping[str, Any]) -> Iterator[Metric]:
        for field, value in fields.items():
            spec = CATALOGUE.get(f"{component}.{field}")
            if spec is not None and (family := _family(spec, value)) is not None:
                yield family


def _family(spec: MetricSpec, value: Any) -> Metric | None:
    name = f"{NAMESPACE}_{spec.name}"
    if spec.kind == "histogram":
        if not isinstance(value, HistogramSnapshot):
            return None
        buckets = [("+Inf" if math.isinf(bound) else repr(bound), count) for bound, count in value.buckets]
        return HistogramMetricFamily(name, spec.help, buckets=buckets, sum_value=value.total)
    if spec.kind == "info":
        if not isinstance(value, Mapping):
            return None
        # Ids and digests only (hex, dashes): anything else is left out, so no name can get in.
        labels = {str(k): str(v) for k, v in value.items() if _SAFE_INFO_VALUE.match(str(v))}
        return InfoMetricFamily(name, spec.help, value=labels) if labels else None
    family_type = CounterMetricFamily if spec.kind == "counter" else GaugeMetricFamily
    if _is_number(value):
        family = family_type(name, spec.help)
        family.add_metric([], float(value))
        return family
    if isinstance(value, Mapping) and spec.label is not None:
        # Only code-defined words become label values (see _SAFE_LABEL_VALUE).
        safe = {str(k): v for k, v in value.items() if _SAFE_LABEL_VALUE.match(str(k)) and _is_number(v)}
        family = family_type(name, spec.help, labels=[spec.label])
        for key, number in sorted(safe.items()):
            family.add_metric([key], float(number))
        return family
    return None


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
