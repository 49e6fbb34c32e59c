"""Two `conduct-gateway serve` processes on one PostgreSQL: accounts, the login throttle and each
gateway's policy version are shared, seen through SMTP, `user add`, `status` and `/metrics`."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
from pathlib import Path

import aiosmtplib
from click.testing import CliRunner

from gateway.cli import main
from tests.cli.test_serve import GatewayProcess, StartGateway, http_get, start_gateway  # noqa: F401
from tests.cli.test_serve_postgresql import _config
from tests.postgresql import ScratchDatabase

PASSWORD = "a long password for sam"


async def _login(gateway: GatewayProcess, user: str, password: str) -> int:
    host, port = gateway.address("submission")
    client = aiosmtplib.SMTP(
        hostname=host, port=port, start_tls=True, tls_context=gateway.tls_context(), timeout=10
    )
    await client.connect()
    await client.ehlo()
    try:
        await client.auth_plain(user, password)  # one attempt (login() tries each mechanism)
    except aiosmtplib.SMTPAuthenticationError as refused:
        return refused.code
    except aiosmtplib.SMTPResponseException as refused:
        return refused.code
    finally:
        client.close()
    return 235


async def _eventually(check: object, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():  # type: ignore[operator]
            await asyncio.sleep(0.2)


async def test_two_gateways_share_accounts_throttle_and_policy_version(
    start_gateway: StartGateway,  # noqa: F811
    tmp_path: Path,
    pg_database: ScratchDatabase,
) -> None:
    first_dir, second_dir = tmp_path / "a", tmp_path / "b"
    first_dir.mkdir()
    second_dir.mkdir()
    gateway_a = await start_gateway(_config(first_dir, pg_database))
    # The second host: its own state folder, the same database, the same two keys.
    (second_dir / "state").mkdir(mode=0o700)
    shutil.copy(first_dir / "state" / "fingerprints.key", second_dir / "state" / "fingerprints.key")
    config_b = _config(second_dir, pg_database)
    gateway_b = await start_gateway(config_b)
    assert "password:" not in "\n".join(gateway_b.stdout)  # the demo account exists already (made by A)

    # An account added with B's command line logs in through A, without a restart.
    added = CliRunner().invoke(
        main,
        ["user", "add", "sam@example.org", "--password-stdin", "--config", str(config_b)],
        input=PASSWORD,
    )
    assert added.exit_code == 0, added.output
    assert not (second_dir / "users.passwd").exists()

    await gateway_a.wait_for_log(r"accounts\.reloaded", timeout=10)  # its poll, every two seconds
    assert await _login(gateway_a, "sam@example.org", PASSWORD) == 235

    # Five failed logins through A (auth.max_failures' default): B refuses the client too.
    for _ in range(5):
        assert await _login(gateway_a, "sam@example.org", "wrong guess") == 535

    async def b_refuses_the_client() -> bool:
        return await _login(gateway_b, "sam@example.org", PASSWORD) == 454

    await _eventually(b_refuses_the_client)

    # Both gateways are listed with the same policy version, and each exports its own.
    status = CliRunner().invoke(main, ["status", "--config", str(config_b)])
    assert status.exit_code == 0, status.output
    assert "2 live gateway(s), all on policy version" in status.output
    version = re.search(r"all on policy version (\w+)", status.output)
    assert version is not None

    async def a_sees_one_version() -> bool:  # A beats every 15 s (a `user add` changes versions)
        _code, scraped = await http_get(gateway_a.address("metrics"), "/metrics")
        return "conduct_gateway_instances_policy_versions 1.0" in scraped

    await _eventually(a_sees_one_version, timeout=40)
    _code, scraped = await http_get(gateway_a.address("metrics"), "/metrics")
    assert re.search(
        rf'conduct_gateway_policy_info{{gateway_instance="[0-9a-f]+",version="{version[1]}"}}', scraped
    )
    assert "conduct_gateway_instances 2.0" in scraped

    # A clean stop takes the gateway off the list.
    gateway_b.signal(signal.SIGTERM)
    assert await gateway_b.wait() == 0, gateway_b.output
    after = CliRunner().invoke(main, ["status", "--config", str(config_b)])
    assert "1 live gateway(s)" in after.output, after.output
    gateway_a.signal(signal.SIGTERM)
    assert await gateway_a.wait() == 0, gateway_a.output
    assert not any("Traceback" in line for line in gateway_a.stderr + gateway_b.stderr)
