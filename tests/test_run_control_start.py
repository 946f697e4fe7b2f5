"""The start-instant re-check: an attempt a worker admitted ahead of its start instant does
not start when ``disable()`` returned (or a change retired its execution) meanwhile.

The worker runs on a clock that puts it 0.8 s before the occurrence's start, so it admits
the delivery ahead and waits; its injected ``sleep`` is where that wait happens, and the
test disables the schedule there, deterministically between admission and start.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from postburner_py import Postburner, Schedule
from postburner_py.store.dispatch_log import SqlDispatchRegistry
from postburner_py.store.history import HistoryRecord
from postburner_py.store.models import ScheduleExecution
from tests import jobs
from tests.test_worker import _due_soon, _wait_for
from tests.test_worker_faults import running_worker

MakePostburner = Callable[..., Postburner]
pytestmark = pytest.mark.usefixtures("database_url")

AHEAD = timedelta(seconds=0.8)


def _admitted_ahead(
    pb: Postburner, execution: ScheduleExecution, retire: Callable[[], None]
) -> dict[str, Any]:
    """Run a worker whose clock is :data:`AHEAD` before ``execution``'s start; ``retire``
    runs in the worker's first wait (after the admission, before the start). What the test
    saw at that moment."""
    shift = execution.run_at - AHEAD - datetime.now(UTC)
    key = execution.cached_schedule["name"]
    registry = SqlDispatchRegistry(pb.session_factory)
    seen: dict[str, Any] = {}

    def clock() -> datetime:
        return datetime.now(UTC) + shift

    def sleep(seconds: float) -> None:
        if "dispatch" not in seen:
            seen["dispatch"] = registry.find_dispatch(key, execution.run_at)
            retire()
            seen["returned_at"] = clock()
        time.sleep(seconds)

    assert pb.queue.kick_job(execution.beanstalk_job_id)  # ready now, not in an hour
    with running_worker(pb, concurrency=1, prefetch=0, clock=clock, sleep=sleep) as worker:
        _wait_for(lambda: _settled(registry, key, execution.run_at), timeout=20)
    seen["outcomes"] = dict(worker.outcomes)
    return seen


def _settled(registry: SqlDispatchRegistry, key: str, run_at: datetime) -> bool:
    entry = registry.find_dispatch(key, run_at)
    return entry is not None and entry.status != "dispatched"


def _started_records(pb: Postburner, key: str) -> list[HistoryRecord]:
    with pb.session() as session:
        statement = select(HistoryRecord).where(HistoryRecord.schedule_name == key)
        return list(session.scalars(statement))


def test_an_attempt_admitted_ahead_does_not_start_once_disable_returned_before_its_start(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner()
    execution = _due_soon(pb, seconds_ahead=3600)
    key, marker = execution.cached_schedule["name"], execution.cached_schedule["args"][0]

    def disable() -> None:
        with pb.session() as session:
            session.get_one(Schedule, execution.schedule_id).disable()

    seen = _admitted_ahead(pb, execution, disable)

    # The attempt was admitted (claimed) before disable() ran, and disable() returned
    # before the occurrence's start instant ...
    assert seen["dispatch"] is not None and seen["dispatch"].status == "dispatched"
    assert seen["returned_at"] < execution.run_at
    # ... so it never started: its claim is withdrawn, its start record gone.
    assert jobs.runs_with(marker) == 0
    assert seen["outcomes"].get("withdrawn") == 1, seen["outcomes"]
    entry = SqlDispatchRegistry(pb.session_factory).find_dispatch(key, execution.run_at)
    assert entry is not None
    assert (entry.status, entry.lease_expires_at, entry.running_key) == ("skipped", None, None)
    assert _started_records(pb, key) == []
    assert pb.queue.stats_job(execution.beanstalk_job_id) is None  # its job is gone
