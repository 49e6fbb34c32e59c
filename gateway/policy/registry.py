"""The rules the gateway knows, registered explicitly (never discovered by scanning names)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from pydantic import BaseModel

from gateway.policy.model import Envelope, Finding, ParsedMessage, RuleContext
from gateway.policy.rules import (
    anonymisation,
    audience_review,
    code_names,
    communication,
    conduct_cc,
    list_reply_all,
    protected_content,
    recipient_banner,
    reporter_protection,
)


class RuleModule(Protocol):
    """What every module in ``gateway.policy.rules`` provides.

    ``NAME`` is the rule's name in the policy YAML; the module's own name is the same with underscores.
    A module may also define ``CODES``, a mapping of its finding codes to a one-line description; the
    policy file's per-code ``actions`` are then checked against it.
    """

    # Read-only members, so that each module's own Params class satisfies the protocol.
    @property
    def NAME(self) -> str: ...

    @property
    def Params(self) -> type[BaseModel]: ...

    # ``params`` is the module's own Params model; Any because each module narrows it.
    def check(
        self, message: ParsedMessage, envelope: Envelope, context: RuleContext, params: Any
    ) -> list[Finding]: ...


RULES: tuple[RuleModule, ...] = (
    conduct_cc,
    recipient_banner,
    reporter_protection,
    protected_content,
    audience_review,
    anonymisation,
    communication,
    code_names,
    list_reply_all,
)


def rules_by_name() -> dict[str, RuleModule]:
    """Every registered rule, by its YAML name."""
    return {module.NAME: module for module in RULES}


def finding_codes(module: RuleModule) -> Mapping[str, str]:
    """The module's finding codes with descriptions; empty when the module does not declare them."""
    codes = getattr(module, "CODES", None)
    return codes if isinstance(codes, Mapping) else {}


def documentation(module: RuleModule) -> str:
    """The module docstring: user documentation of the rule."""
    return (getattr(module, "__doc__", None) or "").strip()
