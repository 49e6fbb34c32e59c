"""Validated value types the policy file and the rules' options share (an address, a domain name).

They live apart from ``config`` so that a rule's ``Params`` can use them: ``config`` imports the rule
registry, so a rule importing ``config`` would import itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator


@dataclass(frozen=True)
class Shown:
    """How the policy reference names a constrained type (e.g. "email address")."""

    text: str


def _valid_address(value: str) -> str:
    value = value.strip()
    try:
        # Reserved test domains (*.test) are allowed: examples and test policies use them.
        validate_email(value, check_deliverability=False, test_environment=True)
    except EmailNotValidError as exc:
        raise ValueError(f"not a valid email address: {exc}") from None
    return value


def _valid_domain(value: str) -> str:
    value = value.strip().lower().rstrip(".")
    try:
        validate_email(f"postmaster@{value}", check_deliverability=False, test_environment=True)
    except EmailNotValidError as exc:
        # The check runs on postmaster@DOMAIN: say what is wrong with the domain, not with an @-sign.
        detail = str(exc).replace("The part after the @-sign ", "It ").replace("after the @-sign", "")
        raise ValueError(f"not a valid domain name: {detail}") from None
    return value


EmailAddress = Annotated[str, AfterValidator(_valid_address), Shown("email address")]
DomainName = Annotated[str, AfterValidator(_valid_domain), Shown("domain name")]
