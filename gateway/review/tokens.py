"""Reply tokens and review addresses: ``<local>+TOKEN@<domain>``, one per person and held message.

Each reviewer, and the sender, gets a reply address whose TOKEN (200 random bits, base32) is bound
to that message and that person and works once. Only the token's hash is stored
(``gateway.state.holds.token_hash``). The gateway consumes mail to such an address itself; it is
never relayed.
"""

from __future__ import annotations

import base64
import re
import secrets

from gateway.policy.engine import CompiledPolicy
from gateway.settings import ReviewSettings

TOKEN_BYTES = 25  # 200 bits; base32 without padding: 40 characters, case-insensitive
_TOKEN = re.compile(r"^[a-z2-7]{40}$")


def new_token() -> str:
    """An unguessable reply token: 200 random bits in lower-case base32 (safe in any local part)."""
    return base64.b32encode(secrets.token_bytes(TOKEN_BYTES)).decode("ascii").lower()


def review_domain(settings: ReviewSettings, policy: CompiledPolicy) -> str:
    """The domain of reply addresses: the setting, else the conduct address's domain."""
    return (settings.address_domain or policy.conduct_address.rpartition("@")[2]).lower()


def reply_address(settings: ReviewSettings, policy: CompiledPolicy, token: str) -> str:
    return f"{settings.local_part}+{token}@{review_domain(settings, policy)}"


def is_review_address(address: str, settings: ReviewSettings, policy: CompiledPolicy) -> bool:
    """Any address of the review kind (valid token or not): mail to it is never relayed."""
    local, _, domain = address.rpartition("@")
    local = local.lower()
    return domain.lower() == review_domain(settings, policy) and (
        local == settings.local_part or local.startswith(settings.local_part + "+")
    )


def token_of(address: str, settings: ReviewSettings) -> str | None:
    local = address.rpartition("@")[0].lower()
    prefix = settings.local_part + "+"
    token = local[len(prefix) :] if local.startswith(prefix) else ""
    return token if _TOKEN.match(token) else None
