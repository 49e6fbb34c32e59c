"""The /metrics and /healthz endpoint: the statistics collector and the small HTTP server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import Health, MetricsServer, StatisticsCollector, build_registry
from gateway.settings import MetricsSettings


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
    from prometheus_client import generate_latest

    return samples(generate_latest(build_registry(sources)).decode())


class TestCollector:
    def test_numbers_become_gauges_and_totals_counters(self) -> None:
        found = scrape({"spool": FakeSpoolStatistics})
        assert found[("conduct_gateway_spool_commits_total", ())] == 7
        assert found[("conduct_gateway_spool_messages", (("state", "incoming"),))] == 2
        assert found[("conduct_gateway_spool_messages", (("state", "deferred"),))] == 1
        assert not any("note" in name for name, _ in found)

    def test_known_fields_have_their_own_help_text(self) -> None:
        from prometheus_client import generate_latest

        text = generate_latest(build_registry({"spool": FakeSpoolStatistics})).decode()
        assert "# HELP conduct_gateway_spool_commits_total Messages durably committed to the spool" in text

    def test_mapping_snapshots_and_build_info(self) -> None:
        found = scrape({"smtp": lambda: {"connections": 3, "auth_failures_total": 1}})
        assert found[("conduct_gateway_smtp_connections", ())] == 3
        assert found[("conduct_gateway_smtp_auth_failures_total", ())] == 1
        assert ("conduct_gateway_build_info", (("version", "0.1.0"),)) in found

    def test_keys_that_could_identify_someone_never_become_labels(self) -> None:
        snapshot = {
            "refusals_by": {
                "policy": 1,
                "alice@example.org": 2,
                "example.org": 3,
                "Alice": 4,
                "x" * 40: 5,
            }
        }
        found = scrape({"smtp": lambda: snapshot})
        labels = {dict(lbl).get("kind") for name, lbl in found if name == "conduct_gateway_smtp_refusals_by"}
        assert labels == {"policy"}

    def test_a_failing_snapshot_does_not_break_the_scrape(self, caplog: pytest.LogCaptureFixture) -> None:
        def broken() -> object:
            raise RuntimeError("boom")

        found = scrape({"delivery": broken, "spool": FakeSpoolStatistics})
        assert found[("conduct_gateway_spool_commits_total", ())] == 7
        assert "statistics snapshot of delivery failed" in caplog.text

    def test_collector_describes_nothing_up_front(self) -> None:
        assert list(StatisticsCollector({"spool": FakeSpoolStatistics}).describe()) == []


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
