"""Trivial jobs for the benchmarks in ``bench/``."""

from __future__ import annotations

import threading
import time
from typing import Any

#: Start lateness in milliseconds of each :func:`record_lateness` call in this process.
LATENESS_MS: list[float] = []
_LOCK = threading.Lock()


def noop(*_args: Any, **_kwargs: Any) -> None:
    """Does nothing (whatever it is given): measures the scheduler, not the job."""


def record_lateness(due_unix: float) -> None:
    """Remember how late (ms) this call starts relative to ``due_unix`` (seconds since epoch).

    The peer scheduler's jobs call it, so their lateness is measured inside the job.
    """
    late_ms = (time.time() - due_unix) * 1000
    with _LOCK:
        LATENESS_MS.append(late_ms)
