"""Jobs used by ``examples/schedules.yml`` and ``postburner dev``: they print what they do."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

from postburner_py.context import current_execution

_beats = itertools.count(1)


def _say(message: str) -> None:
    occurrence = current_execution()
    late_ms = (datetime.now(UTC) - occurrence.run_at).total_seconds() * 1000
    print(
        f"[{occurrence.run_at:%H:%M:%S}] {occurrence.key}: {message} "
        f"(attempt {occurrence.attempt}, started {late_ms:.1f} ms after its time)",
        flush=True,
    )


def heartbeat() -> None:
    """Prints one line per run: proof that the chain of executions is alive."""
    _say(f"heartbeat #{next(_beats)}")


def minute_report(**details: Any) -> None:
    """Prints a one-line 'report' for the minute it runs for."""
    _say(f"minute report, idempotency key {details.get('idempotency_key', '-')}")


def welcome(name: str = "operator") -> None:
    """The demo's one-off delayed job."""
    _say(f"one-off delayed job says hello to {name}")
