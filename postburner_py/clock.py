"""Time as the library takes it: an injected clock and aware instants only."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

#: What loops and processes take instead of reading the wall clock: returns an aware "now".
Clock = Callable[[], datetime]


def require_aware(name: str, value: datetime) -> datetime:
    """``value`` in UTC; raises ``ValueError`` naming ``name`` when it is naive."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name}: naive datetime {value.isoformat()} refused; pass an aware one")
    return value.astimezone(UTC)
