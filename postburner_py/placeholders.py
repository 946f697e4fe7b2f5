"""``{{...}}`` placeholders in job arguments, filled per occurrence.

``{{fire_time.iso8601}}``, ``{{fire_time.unix}}``, ``{{idempotency_key}}`` and ``{{key}}``.
A string that is exactly one placeholder takes the value's own type (``"{{fire_time.unix}}"``
becomes an ``int``); a placeholder inside a longer string is formatted into it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

PLACEHOLDER = re.compile(r"\{\{\s*([a-z_][a-z0-9_.]*)\s*\}\}")
NAMES = ("fire_time.iso8601", "fire_time.unix", "idempotency_key", "key")


def unknown_placeholders(value: Any) -> list[str]:
    """Placeholder names in ``value`` (nested lists/dicts) that are not in :data:`NAMES`."""
    found: list[str] = []
    _walk(value, lambda text: found.extend(PLACEHOLDER.findall(text)))
    return sorted({name for name in found if name not in NAMES})


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
        whole = PLACEHOLDER.fullmatch(value)
        if whole and whole.group(1) in values:
            return values[whole.group(1)]
        return PLACEHOLDER.sub(lambda m: str(values.get(m.group(1), m.group(0))), value)
    if isinstance(value, list):
        return [_render(item, values) for item in value]
    if isinstance(value, dict):
        return {name: _render(item, values) for name, item in value.items()}
    return value


def _walk(value: Any, visit: Callable[[str], None]) -> None:
    if isinstance(value, str):
        visit(value)
    elif isinstance(value, list):
        for item in value:
            _walk(item, visit)
    elif isinstance(value, dict):
        for item in value.values():
            _walk(item, visit)
