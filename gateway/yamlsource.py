"""Load YAML keeping line numbers, and turn validation errors into file/line/key messages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from gateway.errors import ConfigError

Loc = tuple[str | int, ...]
ModelT = TypeVar("ModelT", bound=BaseModel)


@dataclass
class LoadedYaml:
    """Plain data read from a YAML file, with the 1-based line of every key and list item."""

    path: Path
    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)
    # Keys set from somewhere other than the file (e.g. environment variables), with a label.
    overrides: dict[Loc, str] = field(default_factory=dict)

    def where(self, loc: Loc) -> str:
        """Describe where the value at ``loc`` came from: an override, or the nearest line."""
        if loc and loc not in self.lines:
            # An unknown section set only by an override (CONDUCT_GATEWAY_SERVR__PORT) is reported at
            # the section, which the override created: name the override, not the file.
            for key, label in self.overrides.items():
                if len(key) > len(loc) and key[: len(loc)] == loc:
                    return label
        for end in range(len(loc), -1, -1):
            prefix = loc[:end]
            if prefix in self.overrides:
                return self.overrides[prefix]
            if prefix in self.lines:
                return f"{self.path}, line {self.lines[prefix]}"
        return str(self.path)


def _plain(node: Any, loc: Loc, lines: dict[Loc, int]) -> Any:
    if isinstance(node, CommentedMap):
        out: dict[Any, Any] = {}
        for key, value in node.items():
            line, _col = node.lc.key(key)
            lines[(*loc, str(key))] = line + 1
            out[key] = _plain(value, (*loc, str(key)), lines)
        return out
    if isinstance(node, CommentedSeq):
        items = []
        for index, value in enumerate(node):
            line, _col = node.lc.item(index)
            lines[(*loc, index)] = line + 1
            items.append(_plain(value, (*loc, index), lines))
        return items
    return node


def parse_yaml_text(text: str, path: Path) -> LoadedYaml:
    """Parse YAML text; syntax errors become a ConfigError naming the file and line."""
    yaml = YAML(typ="rt", pure=True)
    yaml.allow_duplicate_keys = False
    try:
        raw = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f", line {mark.line + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"{path}{line}: {problem}") from None
    except YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    lines: dict[Loc, int] = {}
    return LoadedYaml(path=path, data=_plain(raw, (), lines), lines=lines)


def load_yaml_file(path: Path) -> LoadedYaml:
    """Read and parse a YAML file; unreadable files become a ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return parse_yaml_text(text, path)


def format_loc(loc: Sequence[str | int]) -> str:
    """Render a pydantic location as a dotted key path (list items as [n])."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "(top level)"


def validate_yaml(model: type[ModelT], loaded: LoadedYaml, **context: Any) -> ModelT:
    """Validate loaded YAML against ``model``; errors name file, line and key path, one per line."""
    data = loaded.data if loaded.data is not None else {}
    try:
        return model.model_validate(data, context=context or None)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, loaded)) from None


def describe_validation_error(exc: ValidationError, loaded: LoadedYaml) -> str:
    """One line per problem: ``file, line N, key a.b.c: message``."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = tuple(part for part in error["loc"] if not _is_union_tag(part))
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see the configuration reference)"
        problems.append(f"{loaded.where(loc)}, key {format_loc(loc)}: {message}")
    return "\n".join(problems)


def _is_union_tag(part: str | int) -> bool:
    # pydantic puts the chosen union member's tag in the location; users never wrote it.
    return isinstance(part, str) and (part.startswith("function-") or "[" in part)


def set_path(data: dict[str, Any], loc: Sequence[str], value: Any) -> None:
    """Set ``data[a][b][c] = value``, creating mappings on the way."""
    node: Any = data
    for key in loc[:-1]:
        child = node.get(key) if isinstance(node, Mapping) else None
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[loc[-1]] = value
