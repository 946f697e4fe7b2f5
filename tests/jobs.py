"""Job callables the tests schedule (importable as ``tests.jobs:...``)."""

from __future__ import annotations

import threading
from typing import Any

RUNS: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
_lock = threading.Lock()


def record_run(*args: Any, **kwargs: Any) -> None:
    """Remember the call (tests inspect ``RUNS``)."""
    with _lock:
        RUNS.append((args, kwargs))
