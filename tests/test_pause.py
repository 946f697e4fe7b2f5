"""Pause and resume: the operator's switch. A paused schedule has no job, the watchdog queues
none, the occurrences that fall meanwhile are recorded ``paused``, and resume continues at the
next grid point after now. Real PostgreSQL/SQLite and Beanstalkd."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from postburner_py import Postburner, Schedule
from postburner_py.errors import ScheduleValidationError
from postburner_py.store.dispatch_log import SqlDispatchRegistry
from postburner_py.store.history import HistoryStore
from postburner_py.watchdog.reconcile_pass import reconcile_pass
from postburner_py.worker.process import Worker
from tests.factories import ManualClock, create_schedule

MakePostburner = Callable[..., Postburner]
BOTH_STORES = pytest.mark.usefixtures("database_url")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _every_second(pb: Postburner, name: str, **overrides: object) -> int:
    return create_schedule(
        pb,
        name=name,
        cron=None,
        anchor=EPOCH,
        interval=1,
        interval_unit="seconds",
        args=[name],
        **overrides,
    )


def _jobs_in_tube(pb: Postburner) -> int:
    stats = pb.queue.stats_tube("default") or {}
    return sum(int(stats.get(f"current-jobs-{state}", 0)) for state in ("delayed", "ready"))


def _schedule(pb: Postburner, schedule_id: int) -> Schedule:
    with pb.session() as session:
        return session.get_one(Schedule, schedule_id)


def _dispatches(pb: Postburner, key: str, status: str) -> list[datetime]:
    registry = SqlDispatchRegistry(pb.session_factory)
    return sorted(e.fire_time for e in registry.find_by_key(key, status=status, limit=1000))


@BOTH_STORES
def test_ten_seconds_paused_records_each_occurrence_paused_and_resumes_on_the_grid(
    make_postburner: MakePostburner,
) -> None:
    clock = ManualClock(datetime.now(UTC).replace(microsecond=500_000))
    pb = make_postburner(clock=clock)
    schedule_id = _every_second(pb, "pulse")
    assert _jobs_in_tube(pb) == 1
    paused_at = clock()
    with pb.session() as session:
        schedule = session.get_one(Schedule, schedule_id)
        assert schedule.pause(reason="database maintenance") is True
        assert schedule.pause(reason="again") is False  # already paused: nothing changes
        assert (schedule.paused_at, schedule.pause_reason) == (paused_at, "database maintenance")
        assert schedule.future_live() == []
    assert _jobs_in_tube(pb) == 0

    clock.advance(seconds=5)
    report = reconcile_pass(pb, now=clock())  # the watchdog must not queue a paused schedule
    assert (report.created, report.requeued) == (0, 0)
    assert _jobs_in_tube(pb) == 0
    clock.advance(seconds=5)

    with pb.session() as session:
        schedule = session.get_one(Schedule, schedule_id)
        assert schedule.resume() is True
        assert schedule.resume() is False
        [queued] = schedule.future_live()
    assert queued.run_at == clock().replace(microsecond=0) + timedelta(seconds=1)
    assert _dispatches(pb, "pulse", "paused") == [
        paused_at.replace(microsecond=0) + timedelta(seconds=n) for n in range(1, 11)
    ]
    assert _dispatches(pb, "pulse", "missed") == []
    assert _jobs_in_tube(pb) == 1
    assert reconcile_pass(pb, now=clock()).created == 0  # converged: nothing left to repair


def test_a_worker_runs_nothing_while_paused_and_the_next_grid_point_after_resume(
    make_postburner: MakePostburner, postgres_url: str
) -> None:
    pb = make_postburner(database_url=postgres_url)  # the worker's batch path; the rules are
    # the store's and run on SQLite in the controlled-clock tests above
    name = f"pulse-{uuid.uuid4().hex[:8]}"
    schedule_id = _every_second(pb, name)
    worker = Worker(pb, reserve_timeout=0.2)
    thread = threading.Thread(target=worker.run)
    thread.start()
    history = HistoryStore(pb.session_factory)
    try:
        _wait(lambda: len(history.query(schedule_name=name)) >= 1)
        with pb.session() as session:
            schedule = session.get_one(Schedule, schedule_id)
            assert schedule.pause(reason="deploy")
            paused_at = schedule.paused_at
            time.sleep(3.2)
            assert schedule.resume()
            resumed_at = schedule.resumed_at
        assert paused_at is not None and resumed_at is not None
        _wait(lambda: any(e.run_at > resumed_at for e in history.query(schedule_name=name)))
    finally:
        worker.stop()
        thread.join(timeout=30)
    runs = sorted(entry.run_at for entry in history.query(schedule_name=name))
    # At most the one occurrence a worker had admitted just before the pause returned may
    # still start (the start-instant re-check closes that); none of the paused seconds runs.
    assert [at for at in runs if paused_at + timedelta(seconds=1) < at <= resumed_at] == []
    first_after = min(at for at in runs if at > resumed_at)
    assert first_after == resumed_at.replace(microsecond=0) + timedelta(seconds=1)
    paused = _dispatches(pb, name, "paused")
    assert len(paused) >= 2
    assert all(paused_at < at <= resumed_at for at in paused)
    assert set(paused).isdisjoint(runs)
    assert _jobs_in_tube(pb) == 1


@BOTH_STORES
def test_pause_of_a_waiting_due_occurrence_records_it_paused_instead_of_running_it(
    make_postburner: MakePostburner,
) -> None:
    clock = ManualClock(datetime.now(UTC).replace(microsecond=500_000))
    pb = make_postburner(clock=clock)
    schedule_id = _every_second(pb, "late")
    with pb.session() as session:
        schedule = session.get_one(Schedule, schedule_id)
        [due] = schedule.future_live()
        clock.advance(seconds=1)  # due, its job not reserved by any worker yet
        assert schedule.pause()
    assert _dispatches(pb, "late", "paused") == [due.run_at]
    assert _jobs_in_tube(pb) == 0


@BOTH_STORES
def test_a_pause_reason_that_is_not_text_is_refused_and_nothing_is_written(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner()
    schedule_id = _every_second(pb, "pulse")
    with pb.session() as session:
        schedule = session.get_one(Schedule, schedule_id)
        with pytest.raises(ScheduleValidationError, match="reason"):
            schedule.pause(reason=42)  # type: ignore[arg-type]
        with pytest.raises(ScheduleValidationError, match="reason"):
            schedule.pause(reason="nul \x00 inside")
    assert _schedule(pb, schedule_id).paused_at is None
    assert _jobs_in_tube(pb) == 1


def _wait(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)
