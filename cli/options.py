"""Small parsers for command-line values shared by several commands."""

from __future__ import annotations

import json
from typing import Any, Iterable

from alanet.errors import InputError


def parse_assignments(items: Iterable[str], flag: str) -> dict[str, Any]:
    """``["units=16", "mode=fast"]`` → ``{"units": 16, "mode": "fast"}`` (values parsed as JSON,
    else kept as strings); a malformed item is an :class:`InputError` naming ``flag``."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"{flag} {item!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out
