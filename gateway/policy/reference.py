"""The policy file's JSON Schema (for editors) and Markdown reference, generated from the models and rules."""

from __future__ import annotations

import datetime
import json
import types
from collections.abc import Sequence
from enum import Enum
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from gateway.policy.config import (
    ApprovalCounts,
    AudienceGroup,
    AudienceLists,
    Case,
    ConsentRecord,
    Member,
    NameForms,
    Organisation,
    Person,
    PolicyDocument,
    ReviewPolicy,
    RuleEntryBase,
    When,
)
from gateway.policy.registry import RULES, documentation, finding_codes
from gateway.policy.value_types import Shown


def policy_json_schema() -> dict[str, Any]:
    """JSON Schema of the policy file, for editors (policies/schema.json)."""
    schema = PolicyDocument.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "conduct-gateway policy"
    return schema


def policy_json_schema_text() -> str:
    """The schema as written to policies/schema.json (stable key order, trailing newline)."""
    return json.dumps(policy_json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


_SECTIONS: tuple[tuple[str, type[BaseModel]], ...] = (
    ("Top level", PolicyDocument),
    ("organisation", Organisation),
    ("organisation.members[]", Member),
    ("audiences", AudienceLists),
    ("audiences.admins / moderators / organisers", AudienceGroup),
    ("rules[]", RuleEntryBase),
    ("rules[].when", When),
    ("review", ReviewPolicy),
    ("review.approvals", ApprovalCounts),
    ("name_forms", NameForms),
    ("cases[]", Case),
    ("person", Person),
    ("cases[].consents[]", ConsentRecord),
)


def policy_reference_markdown() -> str:
    """The policy file reference and the rule reference, generated from field descriptions and docstrings."""
    out = ["## Policy file reference", ""]
    headings: dict[type[BaseModel], str] = {
        PolicyDocument: "Top level",
        Person: "A person (`reporters[]`, `witnesses[]`, `reported[]`)",
    }
    for title, model in _SECTIONS:
        heading = headings.get(model, f"`{title}`")
        out += [f"### {heading}", "", _first_paragraph(model.__doc__), "", *_field_table(model), ""]
    out += ["## Rule reference", ""]
    for module in RULES:
        out += [f"### {module.NAME}", "", documentation(module), ""]
        if module.Params.model_fields:
            out += ["Options (`params`):", "", *_field_table(module.Params), ""]
        codes = finding_codes(module)
        if codes:
            out += ["| Finding code | Meaning |", "| --- | --- |"]
            out += [f"| `{code}` | {_cell(text)} |" for code, text in codes.items()]
            out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def _first_paragraph(doc: str | None) -> str:
    return " ".join((doc or "").strip().split("\n\n", 1)[0].split())


def _field_table(model: type[BaseModel]) -> list[str]:
    rows = ["| Key | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for name, info in model.model_fields.items():
        shown = _type_text(info.annotation, info.metadata)
        rows.append(
            f"| `{name}` | {_cell(shown)} | {_cell(_default_text(info))} | {_cell(info.description or '')} |"
        )
    return rows


_LONG_DEFAULT = 200


def _default_text(info: Any) -> str:
    if info.is_required():
        return "required"
    if info.default_factory is not None:
        value = info.default_factory()
        return "{}" if isinstance(value, dict | BaseModel) else repr(value)
    default = info.default
    if default is PydanticUndefined:
        return "required"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, tuple):
        if not default:
            return "`[]`"
        shown = f"`{list(default)}`"
        # A long list (the built-in patterns) would swamp the table; the rule's source has it.
        return (
            shown
            if len(shown) <= _LONG_DEFAULT
            else f"{len(default)} built-in entries (see the rule's source)"
        )
    if isinstance(default, str):
        return f'`"{default}"`' if default == "" else f"`{default}`"
    return f"`{default}`"


def _type_text(annotation: Any, metadata: Sequence[Any] = ()) -> str:
    for item in metadata:
        if isinstance(item, Shown):
            return item.text
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Annotated:
        return _type_text(args[0], args[1:])
    if origin is Literal:
        return " | ".join(f"`{value}`" for value in args)
    if origin in (tuple, list):
        return f"list of {_type_text(args[0])}"
    if origin is dict:
        return f"mapping of {_type_text(args[0])} to {_type_text(args[1])}"
    if origin in (Union, types.UnionType):
        if len(args) > 2 or not any(arg is type(None) for arg in args):
            return "`rules[]` entry"
        return _type_text(next(arg for arg in args if arg is not type(None))) + " (optional)"
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return " | ".join(f"`{member.value}`" for member in annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        titles = {model: title for title, model in _SECTIONS}
        return f"`{titles[annotation]}`" if annotation in titles else "mapping (see the rule reference)"
    simple = {
        bool: "true/false",
        str: "text",
        int: "number",
        float: "number",
        datetime.date: "date (YYYY-MM-DD)",
    }
    return simple.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
