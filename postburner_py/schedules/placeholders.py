"""``{{...}}`` placeholders in job arguments, filled per occurrence.

``{{fire_time.iso8601}}``, ``{{fire_time.unix}}``, ``{{idempotency_key}}`` and ``{{key}}``.
A string that is exactly one placeholder takes the value's own type (``"{{fire_time.unix}}"``
becomes an ``int``); a placeholder inside a longer string is formatted into it.

A backslash escapes the braces: ``\\{{key}}`` is the literal text ``{{key}}``, and ``\\\\``
before ``{{`` is one literal backslash (so ``\\\\{{key}}`` is a backslash and the key).
Backslashes anywhere else are kept as they are.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

PLACEHOLDER = re.compile(r"\{\{\s*([a-z_][a-z0-9_.]*)\s*\}\}")
#: ``{{`` with the backslashes before it, and the placeholder name when one follows.
_BRACES = re.compile(r"(\\*)\{\{(?:\s*([a-z_][a-z0-9_.]*)\s*\}\})?")
NAMES = ("fire_time.iso8601", "fire_time.unix", "idempotency_key", "key")


def is_escaped(text: str, start: int) -> bool:
    """True when the ``{{`` at ``start`` follows an odd number of backslashes."""
    run = len(text[:start]) - len(text[:start].rstrip("\\"))
    return bool(run % 2)


def render_arguments(
    args: list[Any],
    kwargs: dict[str, Any],
    *,
    key: str,
    fire_time: datetime,
    idempotency_key: str,
) -> tuple[list[Any], dict[str, Any]]:
    """``args`` and ``kwargs`` with every placeholder filled for one occurrence."""
    values: dict[str, Any] = {
        "fire_time.iso8601": fire_time.astimezone(UTC).isoformat(),
        "fire_time.unix": int(fire_time.timestamp()),
        "idempotency_key": idempotency_key,
        "key": key,
    }
    return [_render(item, values) for item in args], {
        name: _render(item, values) for name, item in kwargs.items()
    }


def _render(value: Any, values: dict[str, Any]) -> Any:
    if isinstance(value, str):
        if "{{" not in value:
            return value
        whole = PLACEHOLDER.fullmatch(value)
        if whole and whole.group(1) in values:
            return values[whole.group(1)]
        return _BRACES.sub(lambda m: _fill(m, values), value)
    if isinstance(value, list):
        return [_render(item, values) for item in value]
    if isinstance(value, dict):
        return {name: _render(item, values) for name, item in value.items()}
    return value


def _fill(match: re.Match[str], values: dict[str, Any]) -> str:
    slashes = len(match.group(1))
    braces = match.group(0)[slashes:]
    name = match.group(2)
    if slashes % 2 or name not in values:
        return "\\" * (slashes // 2) + braces
    return "\\" * (slashes // 2) + str(values[name])
