"""The /metrics and /healthz endpoint: the statistics collector and the small HTTP server."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.decision.overriding import OverrideStatistics
from gateway.decision.policy_screener import ScreenerStatistics
from gateway.decision.policy_workers import WorkerStatistics
from gateway.decision.shadow import ShadowStatistics
from gateway.delivery.worker import DeliveryStatistics
from gateway.histogram import Histogram, combined
from gateway.intake.journal import JournalStatistics
from gateway.intake.smtp import SmtpStatistics
from gateway.metric_catalogue import CATALOGUE, NOT_EXPORTED
from gateway.metrics import Health, MetricsServer, StatisticsCollector, build_registry
from gateway.milter.server import MilterStatistics
from gateway.settings import MetricsSettings
from gateway.state.spool import SpoolStatistics


@dataclass(frozen=True)
class FakeSpoolStatistics:
    messages: dict[str, int] = field(default_factory=lambda: {"incoming": 2, "deferred": 1})
    commits_total: int = 7
    note: str = "text is never exported"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(sources: dict[str, Callable[[], object]]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return samples(generate_latest(build_registry(sources)).decode())


class TestCollector:
    def test_declared_numbers_become_their_declared_types(self) -> None:
        found = scrape({"spool": FakeSpoolStatistics})
        assert found[("conduct_gateway_spool_commits_total", ())] == 7
        assert found[("conduct_gateway_spool_messages", (("state", "incoming"),))] == 2
        assert found[("conduct_gateway_spool_messages", (("state", "deferred"),))] == 1
        assert not any("note" in name for name, _ in found)

    def test_types_come_from_the_catalogue_not_from_field_names(self) -> None:
        # The screener's counters have no _total suffix in their field names.
        text = generate_latest(
            build_registry(
                {"policy": lambda: {"outcomes": {"deliver": 3}, "reloads": 2, "policy_version": "x"}}
            )
        ).decode()
        assert "# TYPE conduct_gateway_policy_decisions_total counter" in text
        assert 'conduct_gateway_policy_decisions_total{outcome="deliver"} 3.0' in text
        assert "# TYPE conduct_gateway_policy_reloads_total counter" in text
        assert "policy_version" not in text

    def test_undeclared_fields_are_never_exported(self) -> None:
        found = scrape({"smtp": lambda: {"connections_open": 3, "something_new": 1, "secret_total": 4}})
        assert found[("conduct_gateway_smtp_connections_open", ())] == 3
        assert not any("something_new" in name or "secret" in name for name, _ in found)
        assert ("conduct_gateway_build_info", (("version", "0.1.0"),)) in found

    def test_histograms(self) -> None:
        histogram = Histogram((0.01, 0.1))
        for seconds in (0.005, 0.05, 0.05, 3.0):
            histogram.observe(seconds)
        found = scrape({"smtp": lambda: {"submission_seconds": histogram.snapshot()}})
        name = "conduct_gateway_smtp_submission_duration_seconds"
        assert found[(f"{name}_bucket", (("le", "0.01"),))] == 1
        assert found[(f"{name}_bucket", (("le", "0.1"),))] == 3
        assert found[(f"{name}_bucket", (("le", "+Inf"),))] == 4
        assert found[(f"{name}_count", ())] == 4
        assert found[(f"{name}_sum", ())] == pytest.approx(3.105)

    def test_keys_that_could_identify_someone_never_become_labels(self) -> None:
        outcomes = {"delivered": 1, "alice@example.org": 2, "example.org": 3, "Alice": 4, "x" * 40: 5}
        found = scrape({"delivery": lambda: {"outcomes_total": outcomes}})
        labels = {
            dict(lbl).get("outcome")
            for name, lbl in found
            if name == "conduct_gateway_delivery_outcomes_total"
        }
        assert labels == {"delivered"}

    def test_a_failing_snapshot_does_not_break_the_scrape(self, caplog: pytest.LogCaptureFixture) -> None:
        def broken() -> object:
            raise RuntimeError("boom")

        found = scrape({"delivery": broken, "spool": FakeSpoolStatistics})
        assert found[("conduct_gateway_spool_commits_total", ())] == 7
        assert "statistics snapshot of delivery failed" in caplog.text

    def test_collector_describes_nothing_up_front(self) -> None:
        assert list(StatisticsCollector({"spool": FakeSpoolStatistics}).describe()) == []


STATISTICS = {
    "spool": SpoolStatistics,
    "smtp": SmtpStatistics,
    "delivery": DeliveryStatistics,
    "policy": ScreenerStatistics,
    "policy_workers": WorkerStatistics,
    "journal": JournalStatistics,
    "shadow": ShadowStatistics,
    "overrides": OverrideStatistics,
    "milter": MilterStatistics,
}


@pytest.mark.parametrize("component", sorted(STATISTICS))
def test_every_statistics_field_is_declared_or_deliberately_left_out(component: str) -> None:
    for declared in dataclasses.fields(STATISTICS[component]):
        key = f"{component}.{declared.name}"
        assert key in CATALOGUE or key in NOT_EXPORTED, f"{key} is neither in CATALOGUE nor in NOT_EXPORTED"


def test_names_follow_prometheus_conventions() -> None:
    names = [spec.name for spec in CATALOGUE.values()]
    assert len(names) == len(set(names))
    for spec in CATALOGUE.values():
        assert spec.name == spec.name.lower() and not spec.name.endswith("_total")
        words = spec.name.split("_")
        assert all(a != b for a, b in itertools.pairwise(words)), f"{spec.name} repeats itself"
        if spec.kind == "histogram":
            assert spec.name.endswith("_seconds"), "durations are in seconds, named so"


@pytest.fixture
def health_state() -> dict[str, bool]:
    return {"listeners": True, "delivery": True}


@pytest.fixture
async def server(health_state: dict[str, bool]) -> AsyncIterator[MetricsServer]:
    registry = build_registry({"spool": FakeSpoolStatistics})
    running = MetricsServer(MetricsSettings(port=0), registry, lambda: Health(dict(health_state)))
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def request(server: MetricsServer, head: str) -> tuple[str, dict[str, str], bytes]:
    host, port = server.address
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(head.encode())
        await writer.drain()
        async with asyncio.timeout(5):
            raw = await reader.read()
    except ConnectionResetError:  # the server hung up on unread input: the peer sees a reset
        raw = b""
    finally:
        writer.close()
        await writer.wait_closed()
    head_part, _, body = raw.partition(b"\r\n\r\n")
    status, *header_lines = head_part.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
    return status, headers, body


def get(path: str, *extra: str) -> str:
    return "\r\n".join([f"GET {path} HTTP/1.1", "Host: 127.0.0.1", *extra, "", ""])


class TestServer:
    async def test_metrics(self, server: MetricsServer) -> None:
        status, headers, body = await request(server, get("/metrics"))
        assert status == "HTTP/1.1 200 OK"
        assert headers["content-type"].startswith("text/plain; version=0.0.4")
        assert int(headers["content-length"]) == len(body)
        found = samples(body.decode())
        assert found[("conduct_gateway_spool_commits_total", ())] == 7
        assert any(name.startswith("process_") for name, _ in found)

    async def test_openmetrics_when_asked(self, server: MetricsServer) -> None:
        status, headers, body = await request(server, get("/metrics", "Accept: application/openmetrics-text"))
        assert status == "HTTP/1.1 200 OK"
        assert headers["content-type"].startswith("application/openmetrics-text")
        assert body.endswith(b"# EOF\n")

    async def test_healthz_ok(self, server: MetricsServer) -> None:
        status, _, body = await request(server, get("/healthz"))
        assert status == "HTTP/1.1 200 OK"
        assert body == b"ok\nlisteners: up\ndelivery: up\n"

    async def test_healthz_unhealthy(self, server: MetricsServer, health_state: dict[str, bool]) -> None:
        health_state["delivery"] = False
        status, _, body = await request(server, get("/healthz"))
        assert status == "HTTP/1.1 503 Service Unavailable"
        assert body == b"unhealthy\nlisteners: up\ndelivery: down\n"

    async def test_head_has_no_body(self, server: MetricsServer) -> None:
        status, headers, body = await request(server, "HEAD /healthz HTTP/1.1\r\n\r\n")
        assert status == "HTTP/1.1 200 OK"
        assert int(headers["content-length"]) > 0
        assert body == b""

    @pytest.mark.parametrize(
        ("head", "status"),
        [
            pytest.param(get("/"), "HTTP/1.1 404 Not Found", id="other-path"),
            pytest.param("POST /metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 405 Method Not Allowed", id="post"),
            pytest.param("nonsense\r\n\r\n", "HTTP/1.1 400 Bad Request", id="junk"),
        ],
    )
    async def test_everything_else_is_refused(self, server: MetricsServer, head: str, status: str) -> None:
        assert (await request(server, head))[0] == status

    async def test_query_string_is_ignored(self, server: MetricsServer) -> None:
        assert (await request(server, get("/healthz?verbose=1")))[0] == "HTTP/1.1 200 OK"

    async def test_oversized_request_gets_nothing(self, server: MetricsServer) -> None:
        status, _, _ = await request(server, "GET /metrics HTTP/1.1\r\nX-Junk: " + "a" * 20000 + "\r\n\r\n")
        assert status == ""

    def test_no_health_checks_means_unhealthy(self) -> None:
        assert not Health({}).ok
        assert Health({"a": True}).ok


def test_histograms_of_a_restarted_helper_add_up() -> None:
    first, second = Histogram((1.0,)), Histogram((1.0,))
    first.observe(0.5)
    second.observe(2.0)
    second.observe(0.1)
    both = combined(first.snapshot(), second.snapshot())
    assert both is not None
    assert both.buckets == ((1.0, 2), (float("inf"), 3))
    assert (both.count, both.total) == (3, pytest.approx(2.6))
    assert combined(None, first.snapshot()) == first.snapshot()
    with pytest.raises(ValueError, match="different buckets"):
        combined(first.snapshot(), Histogram((2.0,)).snapshot())
