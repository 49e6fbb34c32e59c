"""End-to-end fixtures: one private Postfix per session, real gateway processes, TLS material, accounts.

Every test here is marked ``e2e`` and runs in the normal suite. When Postfix cannot start the tests
fail with Postfix's own log, never skip: a green run must mean mail really went through a real MTA.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.e2e.clients import Account, new_password  # noqa: E402
from tests.e2e.gateway_process import (  # noqa: E402
    RELAY_POLICY,
    GatewayFactory,
    GatewayProcess,
    deep_merge,
    gateway_settings,
)
from tests.e2e.messages import unique_address  # noqa: E402
from tests.e2e.postfix import PostfixError, PostfixInstance  # noqa: E402
from tests.e2e.shared_state import (  # noqa: E402
    add_accounts,
    add_database_accounts,
    postgresql_state,
    share_fingerprint_key,
)
from tests.e2e.tls import TlsMaterial, make_tls_material  # noqa: E402
from tests.postgresql import ScratchDatabase  # noqa: E402

MEMBER = "maya.member@example.org"


@pytest.fixture(scope="session")
def tls_material() -> Iterator[TlsMaterial]:
    folder = Path(tempfile.mkdtemp(prefix="conduct-e2e-tls-"))
    yield make_tls_material(folder)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postfix(tls_material: TlsMaterial) -> Iterator[PostfixInstance]:
    """The upstream: a private Postfix with STARTTLS (and an implicit-TLS port) on free loopback ports."""
    instance = PostfixInstance(tls_cert_file=tls_material.cert_file, tls_key_file=tls_material.key_file)
    try:
        instance.start()
    except (PostfixError, OSError) as exc:
        instance.close()
        pytest.fail(f"the end-to-end suite needs a private Postfix upstream, which did not start:\n{exc}")
    yield instance
    instance.close()


@pytest.fixture
def running_postfix(postfix: PostfixInstance) -> Iterator[PostfixInstance]:
    """The session's Postfix, guaranteed up before and after the test (for tests that stop it)."""
    if not postfix.running:
        postfix.start()
    yield postfix
    if not postfix.running:
        postfix.start()


@pytest.fixture(scope="session")
def member() -> Account:
    return Account(MEMBER, new_password())


@pytest.fixture
def recipient(request: pytest.FixtureRequest) -> str:
    label = "".join(ch if ch.isalnum() else "-" for ch in request.node.name.lower())[:40].strip("-")
    return unique_address(label)


@pytest.fixture
def gateway_factory(
    tmp_path: Path, tls_material: TlsMaterial, postfix: PostfixInstance, member: Account
) -> Iterator[GatewayFactory]:
    """Make (and start, unless ``start=False``) gateways relaying to the session's Postfix."""
    made: list[GatewayProcess] = []

    def make(overrides: dict[str, Any] | None = None, *, start: bool = True) -> GatewayProcess:
        settings = deep_merge(gateway_settings(tls_material, postfix), overrides or {})
        process = GatewayProcess(tmp_path / f"gateway-{len(made)}", settings)
        made.append(process)
        process.add_user(member.address, member.password)
        if start:
            process.start()
        return process

    yield make
    for process in made:
        process.close()


@pytest.fixture(scope="session")
def shared_gateway(
    tmp_path_factory: pytest.TempPathFactory,
    tls_material: TlsMaterial,
    postfix: PostfixInstance,
    member: Account,
) -> Iterator[GatewayProcess]:
    """One gateway for the tests that only submit and read (started once: keeps the suite fast)."""
    process = GatewayProcess(
        tmp_path_factory.mktemp("shared-gateway"), gateway_settings(tls_material, postfix)
    )
    process.add_user(member.address, member.password)
    process.start()
    yield process
    process.close()


SharedGateways = Callable[..., list[GatewayProcess]]
"""``shared_gateways(count=2, overrides=None, *, policy=RELAY_POLICY, users=(), postgresql=None,
roots=(), start=True)``: gateways on one fresh PostgreSQL database, relaying to the session's Postfix."""


@pytest.fixture
def shared_gateways(
    tmp_path: Path,
    pg_database: ScratchDatabase,
    tls_material: TlsMaterial,
    postfix: PostfixInstance,
    member: Account,
) -> Iterator[SharedGateways]:
    """Make gateways sharing ``pg_database`` (its keys shared too); each has the member's account."""
    made: list[GatewayProcess] = []

    def make(
        count: int = 2,
        overrides: dict[str, Any] | None = None,
        *,
        policy: Path = RELAY_POLICY,
        users: Sequence[Account] = (),
        postgresql: dict[str, Any] | None = None,
        roots: Sequence[Path] = (),
        start: bool = True,
    ) -> list[GatewayProcess]:
        shared = postgresql_state(tmp_path / "shared", pg_database, **(postgresql or {}))
        settings = deep_merge(
            deep_merge(gateway_settings(tls_material, postfix, policy), shared), overrides or {}
        )
        # ``roots``: folders of gateways that ran before (on files), kept with their state and users.
        fresh = (tmp_path / f"shared-{len(made) + number}" for number in range(count - len(roots)))
        gateways = [GatewayProcess(root, settings) for root in (*roots, *fresh)]
        made.extend(gateways)
        share_fingerprint_key(gateways, tmp_path / "shared")
        if roots:
            # A files installation about to be moved: its users file goes along with `state import`.
            add_accounts(gateways[0], (member, *users))
        else:
            add_database_accounts(gateways[0], (member, *users))  # the database is every gateway's
        if start:
            for gateway in gateways:
                gateway.start()
        return gateways

    yield make
    for process in made:
        process.close()
