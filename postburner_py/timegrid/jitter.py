"""Jitter: how far after its grid point an occurrence starts, the same on every node.

The offset is in ``[0, jitter)`` seconds, derived from the occurrence's key and grid point
with SHA-256 (not a random draw): every process that puts, admits or waits for the
occurrence computes the same start instant, and a re-put never moves it.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

#: Offsets are whole microseconds (what an instant can hold).
_STEPS = 2**64


def jitter_offset(key: str, run_at: datetime, jitter: float | None) -> timedelta:
    """The offset of occurrence ``(key, run_at)`` under ``jitter`` seconds (None or 0: none)."""
    if not jitter:
        return timedelta(0)
    digest = hashlib.sha256(f"{key}\n{run_at.timestamp():.6f}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / _STEPS
    return timedelta(microseconds=int(fraction * jitter * 1_000_000))


def start_instant(key: str, run_at: datetime, jitter: float | None) -> datetime:
    """When occurrence ``(key, run_at)`` starts: its grid point plus its jitter offset."""
    return run_at + jitter_offset(key, run_at, jitter)
