"""`conduct-gateway serve` with the policy seam set to PassThrough: the relay core as a benchmark target.

    python bench/passthrough_gateway.py --config FILE

Everything else is the real service (listeners, AUTH, fsynced spool, delivery worker, metrics, logs);
only ``gateway.app.build_screener`` (and the policy check at startup) are replaced, so the figure is
the relay core's, comparable with the bare relay. ``bench/relay.py --policy FILE`` measures the real
`serve` with a policy instead.
"""

from __future__ import annotations

import sys

from gateway import app
from gateway.cli import main
from gateway.decision.screening import PassThrough
from gateway.settings import GatewaySettings


def passthrough(settings: GatewaySettings, accounts: object = None) -> PassThrough:
    return PassThrough()


def no_policy(settings: GatewaySettings) -> tuple[str, tuple[str, ...]]:
    return "PassThrough (benchmark: no policy file is read)", ()


if __name__ == "__main__":
    # Fail loudly if the seam moves: patching a name app.py no longer uses would benchmark the policy.
    for seam in ("build_screener", "check_policy"):
        if not callable(getattr(app, seam, None)):
            sys.exit(f"bench/passthrough_gateway.py: gateway.app.{seam} is gone; update the benchmark's seam")
    app.build_screener = passthrough
    app.check_policy = no_policy
    sys.exit(main(["serve", *sys.argv[1:]]))
