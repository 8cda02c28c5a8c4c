"""Validation of incoming analytics events."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")
MAX_PROPERTIES_BYTES = 16 * 1024


class InvalidEvent(ValueError):
    pass


@dataclass(frozen=True)
class Event:
    name: str
    properties: dict[str, Any]


def validate_name(value: object) -> str:
    if not isinstance(value, str) or not NAME.match(value):
        raise InvalidEvent("name must be 1-100 letters, digits or _.:- (starting alphanumeric)")
    return value


def parse_event(body: dict[str, Any]) -> Event:
    name = validate_name(body.get("name"))
    properties = body.get("properties", {})
    if properties is None:
        properties = {}
    if not isinstance(properties, dict):
        raise InvalidEvent("properties must be an object")
    if len(json.dumps(properties, separators=(",", ":"))) > MAX_PROPERTIES_BYTES:
        raise InvalidEvent(f"properties must serialise to at most {MAX_PROPERTIES_BYTES} bytes")
    return Event(name, properties)
