"""Whole seconds: the one representation the time grid computes in. Pure, no I/O.

An *instant* is UTC seconds since 1970-01-01; a *wall time* is a naive local datetime, whose
seconds count from the same naive epoch. Only the edges convert to and from ``datetime``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

SECOND = timedelta(seconds=1)
DAY = 86_400
EPOCH = datetime(1970, 1, 1)  # naive: epoch of UTC seconds and of local wall-clock seconds
EPOCH_UTC = EPOCH.replace(tzinfo=UTC)


def wall_seconds(wall: datetime) -> int:
    """Whole seconds of a naive datetime since the naive epoch (floor)."""
    return (wall - EPOCH) // SECOND


def naive(seconds: int) -> datetime:
    """The naive datetime ``seconds`` after the naive epoch."""
    return EPOCH + timedelta(seconds=seconds)


def instant(seconds: int) -> datetime:
    """Aware UTC datetime of a UTC-seconds value."""
    return EPOCH_UTC + timedelta(seconds=seconds)


def instant_seconds(value: object, name: str) -> int:
    """UTC seconds of an aware datetime, rounded down; naive datetimes are refused."""
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be an aware datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"naive datetime {value.isoformat()} refused as {name}: "
            "pass an aware datetime, e.g. datetime.now(UTC)"
        )
    return (value - EPOCH_UTC) // SECOND
