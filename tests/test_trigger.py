"""Run now and backfill: occurrences an operator asks for, through the same gate."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from postburner_py import Postburner, Schedule
from postburner_py.errors import PostburnerError, ScheduleValidationError
from postburner_py.schedules.run_control import backfill, trigger_now
from postburner_py.store.dispatch_log import SqlDispatchRegistry
from postburner_py.store.history import HistoryRecord
from postburner_py.worker.process import Worker
from tests.factories import make_schedule

MakePostburner = Callable[..., Postburner]
pytestmark = pytest.mark.usefixtures("database_url")


def _schedule(pb: Postburner, **overrides: Any) -> Schedule:
    attributes: dict[str, Any] = {
        "name": f"rc-{uuid.uuid4().hex[:8]}",
        "job_class": "tests.jobs:record_run",
        "cron": None,
        "anchor": datetime(2025, 1, 1, tzinfo=UTC),
        "interval": 1,
        "interval_unit": "minutes",
        "args": [uuid.uuid4().hex],
    }
    attributes.update(overrides)
    with pb.session() as session:
        schedule = make_schedule(**attributes)
        session.add(schedule)
        session.commit()
        session.refresh(schedule)
        session.expunge(schedule)
        return schedule


def _history(pb: Postburner, key: str) -> list[HistoryRecord]:
    with pb.session() as session:
        statement = select(HistoryRecord).where(HistoryRecord.schedule_name == key)
        return list(session.scalars(statement.order_by(HistoryRecord.run_at)))


def _run_until(pb: Postburner, done: Callable[[], bool], timeout: float = 20) -> None:
    worker = Worker(pb, reserve_timeout=0.2, concurrency=4)
    thread = threading.Thread(target=worker.run)
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while not done() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        worker.stop()
        thread.join(timeout=30)
    assert done(), f"not done in {timeout} s; outcomes {dict(worker.outcomes)}"


def test_trigger_now_twice_at_the_same_instant_runs_once_marked_manual(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner()
    schedule = _schedule(pb)
    now = datetime.now(UTC)
    answers: list[Any] = []
    threads = [
        threading.Thread(target=lambda: answers.append(trigger_now(pb, schedule.id, now=now)))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(answer.queued for answer in answers) == [False, True]
    _run_until(pb, lambda: any(row.status == "completed" for row in _history(pb, schedule.name)))
    time.sleep(0.5)  # a second run, were there one, would be recorded by now
    [run] = _history(pb, schedule.name)
    assert (run.trigger, run.run_at) == ("manual", now.replace(microsecond=0))
    entry = SqlDispatchRegistry(pb.session_factory).find_dispatch(schedule.name, run.run_at)
    assert entry is not None and entry.trigger == "manual"
    with pb.session() as session:  # the grid is untouched: its future execution stays
        assert len(session.get_one(Schedule, schedule.id).future_live()) == 1


def test_trigger_now_refuses_a_bad_overlap_and_a_disabled_schedule(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner()
    schedule = _schedule(pb)
    with pytest.raises(ScheduleValidationError, match="overlap"):
        trigger_now(pb, schedule.id, overlap="sometimes")
    off = _schedule(pb, enabled=False)
    with pytest.raises(PostburnerError, match="disabled"):
        trigger_now(pb, off.id)


def test_backfill_runs_only_the_missed_points_each_once_even_started_twice(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner()
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    schedule = _schedule(pb, overlap="allow")
    start, end = now - timedelta(minutes=6), now - timedelta(minutes=1)
    ran = [start + timedelta(minutes=1), start + timedelta(minutes=3)]
    SqlDispatchRegistry(pb.session_factory).record_missed(schedule.name, ran, now=now)
    # ... recorded (as missed: any row counts as accounted for).
    dry = backfill(pb, schedule.id, start, end, dry_run=True, now=now)
    assert len(dry.points) == 4 and dry.queued == 0

    results: list[Any] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(backfill(pb, schedule.id, start, end, now=now))
        )
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(result.queued for result in results) == 4
    missed = [point for point in dry.points]
    _run_until(pb, lambda: len(_history(pb, schedule.name)) >= 4)
    time.sleep(0.5)
    runs = _history(pb, schedule.name)
    assert [(row.run_at, row.trigger) for row in runs] == [(p, "backfill") for p in missed]


def test_backfill_refuses_a_future_or_too_large_window_and_writes_nothing(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner()
    schedule = _schedule(pb, interval_unit="seconds")
    now = datetime.now(UTC)
    with pytest.raises(ScheduleValidationError, match="future"):
        backfill(pb, schedule.id, now - timedelta(minutes=1), now + timedelta(minutes=1), now=now)
    with pytest.raises(ScheduleValidationError, match="1000 grid points"):
        backfill(pb, schedule.id, now - timedelta(hours=1), now, now=now)
    assert _history(pb, schedule.name) == []


def test_the_dispatches_command_accepts_every_dispatch_status() -> None:
    from postburner_py.cli.inspect import _DISPATCH_STATUSES
    from postburner_py.store.dispatch_records import DispatchStatus

    assert list(_DISPATCH_STATUSES) == [str(status) for status in DispatchStatus]
