"""A module the prefix ``tests.trusted`` must never admit (it only shares the first letters).

Tests check that it is never imported (``sys.modules``) and never run (``tests.jobs.RUNS``).
"""

from __future__ import annotations

from typing import Any

from tests.jobs import record_run


def run(*args: Any, **kwargs: Any) -> None:
    """Records the call, as an attacker's payload would run."""
    record_run(*args, **kwargs)
