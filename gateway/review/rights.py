"""Review rights read live from the users file: they end with the member's account (``user remove``)."""

from __future__ import annotations

from gateway.policy.reviewers import AccountCheck
from gateway.state.ports import AccountsPort


def account_check(accounts: AccountsPort) -> AccountCheck:
    """Review rights end with the member's account (``user remove``), read live from ``accounts``.

    With no accounts at all the users file is not in use (nobody can submit), and nobody is refused.
    """

    def has_account(address: str) -> bool:
        members = accounts.members()
        lowered = address.lower()
        return not members or any(lowered in accounts.addresses_of(member) for member in members)

    return has_account
