"""What every settings section shares: the strict base model, durations ("30m", "72h") and ports."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    WithJsonSchema,
)

ENV_PREFIX = "CONDUCT_GATEWAY_"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> Any:
    """Accept seconds as a number, or a string such as "45s", "30m", "72h", "5d", "2w"."""
    if isinstance(value, str):
        match = _DURATION.match(value.lower())
        if not match:
            raise ValueError('use seconds, or a number with a unit: "45s", "30m", "72h", "5d"')
        return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    return value


# What the settings file may hold for a duration, for editors reading the JSON Schema.
_DURATION_SCHEMA = WithJsonSchema(
    {
        "anyOf": [
            {"type": "number", "minimum": 0},
            {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*[smhdwSMHDW]?\s*$"},
        ],
        "description": 'Seconds, or a number with a unit: "45s", "30m", "72h", "5d", "2w".',
    }
)
Seconds = Annotated[PositiveFloat, BeforeValidator(parse_duration), _DURATION_SCHEMA]
Retention = Annotated[NonNegativeFloat, BeforeValidator(parse_duration), _DURATION_SCHEMA]
Port = Annotated[int, Field(ge=0, le=65535)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
