"""Per-schedule catch_up_window and the run window starts_at / ends_at: no occurrence outside
it, an ended schedule has no job, the schedule's own window overrides the global one, each is
validated naming the field and is part of the queued snapshot. Real servers."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from postburner_py import Postburner, Schedule
from postburner_py.errors import ScheduleValidationError
from postburner_py.schedules.chaining import chain_next_many
from postburner_py.store.dispatch_log import SqlDispatchRegistry
from postburner_py.store.models import ScheduleExecution
from postburner_py.watchdog.reconcile_pass import reconcile_pass
from postburner_py.worker.process import Worker
from tests import jobs
from tests.factories import ManualClock, at, create_schedule, make_schedule

MakePostburner = Callable[..., Postburner]
pytestmark = pytest.mark.usefixtures("database_url")


def _queued(pb: Postburner, schedule_id: int) -> list[datetime]:
    with pb.session() as session:
        return [e.run_at for e in session.get_one(Schedule, schedule_id).future_live()]


def _jobs_in_tube(pb: Postburner) -> int:
    stats = pb.queue.stats_tube("default") or {}
    return sum(int(stats.get(f"current-jobs-{state}", 0)) for state in ("delayed", "ready"))


def test_starts_at_queues_the_first_grid_point_inside_the_window(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner(clock=ManualClock(at("2030-01-01 12:00")))
    schedule_id = create_schedule(pb, cron="0 9 * * *", starts_at=at("2030-03-01 09:00"))
    assert _queued(pb, schedule_id) == [at("2030-03-01 09:00")]
    with pb.session() as session:
        schedule = session.get_one(Schedule, schedule_id)
        assert schedule.upcoming(2) == [at("2030-03-01 09:00"), at("2030-03-02 09:00")]


def test_no_occurrence_after_ends_at_and_an_ended_schedule_has_no_job(
    make_postburner: MakePostburner,
) -> None:
    clock = ManualClock(at("2030-01-01 12:00"))
    pb = make_postburner(clock=clock)
    schedule_id = create_schedule(
        pb, name="campaign", cron="0 9 * * *", ends_at=at("2030-01-03 09:00")
    )
    with pb.session() as session:
        schedule = session.get_one(Schedule, schedule_id)
        assert schedule.upcoming(5) == [at("2030-01-02 09:00"), at("2030-01-03 09:00")]
        assert schedule.next_run_at(at("2030-01-03 09:00")) is None
    registry = SqlDispatchRegistry(pb.session_factory)
    for day in ("2030-01-02 09:00", "2030-01-03 09:00"):  # the worker runs each and chains
        clock.now = at(day)
        registry.claim("campaign", at(day), lease_seconds=60, max_attempts=1, now=clock())
        chain_next_many(pb, {schedule_id: at(day)}, now=clock())
    with pb.session() as session:
        last = session.scalars(
            select(ScheduleExecution).where(ScheduleExecution.run_at == at("2030-01-03 09:00"))
        ).one()
        assert last.next_run_at is None  # the last one knows it is the last
    clock.now = at("2030-01-05 12:00")
    assert _queued(pb, schedule_id) == []
    report = reconcile_pass(pb, now=clock())
    assert (report.created, report.invalid, report.missed) == (0, 0, 0)
    with pb.session() as session:
        assert session.get_one(Schedule, schedule_id).reconcile() is True
    assert _queued(pb, schedule_id) == []


def test_moving_ends_at_before_the_queued_occurrence_removes_its_job(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner(clock=ManualClock(at("2030-01-01 12:00")))
    schedule_id = create_schedule(pb, cron="0 9 * * *")
    assert _jobs_in_tube(pb) == 1
    with pb.session() as session:
        session.get_one(Schedule, schedule_id).ends_at = at("2030-01-01 13:00")
        session.commit()
    assert _queued(pb, schedule_id) == []
    assert _jobs_in_tube(pb) == 0


def test_a_catch_up_window_change_is_drift_and_supersedes_the_queued_execution(
    make_postburner: MakePostburner,
) -> None:
    clock = ManualClock(at("2030-01-01 12:00"))
    pb = make_postburner(clock=clock)
    schedule_id = create_schedule(pb, cron="0 9 * * *", catch_up=True)
    with pb.session() as session:
        [before] = session.get_one(Schedule, schedule_id).future_live()
        assert before.cached_schedule["catch_up_window"] is None
        session.execute(  # behind the API's back: only the watchdog's drift check sees it
            Schedule.__table__.update()
            .where(Schedule.id == schedule_id)
            .values(catch_up_window=120)
        )
        session.commit()
    assert reconcile_pass(pb, now=clock()).repaired == 1
    with pb.session() as session:
        [after] = session.get_one(Schedule, schedule_id).future_live()
    assert after.id != before.id and after.cached_schedule["catch_up_window"] == 120
    assert reconcile_pass(pb, now=clock()).repaired == 0  # and no drift after that


def test_the_schedules_catch_up_window_overrides_the_global_one_when_planning(
    make_postburner: MakePostburner,
) -> None:
    clock = ManualClock(datetime.now(UTC).replace(second=30, microsecond=0))
    pb = make_postburner(clock=clock, catch_up_window=3600)
    narrow = create_schedule(pb, name="narrow", cron="* * * * *", catch_up=True)
    wide = create_schedule(pb, name="wide", cron="* * * * *", catch_up=True, catch_up_window=86_400)
    with pb.session() as session:
        for schedule_id in (narrow, wide):
            [first] = session.get_one(Schedule, schedule_id).future_live()
            first.supersede()  # the job is lost
        session.get_one(Schedule, narrow).catch_up_window = 120
        session.commit()
    clock.advance(minutes=5)
    for schedule_id in (narrow, wide):
        with pb.session() as session:
            session.get_one(Schedule, schedule_id).reconcile()
    registry = SqlDispatchRegistry(pb.session_factory)
    assert len(registry.find_by_key("narrow", status="missed")) >= 2  # older than 2 minutes
    assert registry.find_by_key("wide", status="missed") == []  # inside its day: caught up


def test_a_worker_records_missed_past_the_schedules_own_window(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner(catch_up_window=3600)
    marker = uuid.uuid4().hex
    anchor = (datetime.now(UTC) + timedelta(seconds=2)).replace(microsecond=0)
    schedule_id = create_schedule(
        pb,
        cron=None,
        anchor=anchor,
        interval=1,
        interval_unit="days",
        args=[marker],
        catch_up=True,
        catch_up_window=60,
    )
    with pb.session() as session:
        [execution] = session.get_one(Schedule, schedule_id).future_live()
    registry = SqlDispatchRegistry(pb.session_factory)
    late = ManualClock(execution.run_at + timedelta(minutes=5))  # inside 3600, past 60
    worker = Worker(pb, reserve_timeout=0.2, clock=late)
    thread = threading.Thread(target=worker.run)
    thread.start()
    key = execution.cached_schedule["name"]
    try:
        deadline = time.monotonic() + 20
        while registry.find_dispatch(key, execution.run_at) is None:
            assert time.monotonic() < deadline, "the delivery was never decided"
            time.sleep(0.05)
    finally:
        worker.stop()
        thread.join(timeout=30)
    entry = registry.find_dispatch(key, execution.run_at)
    assert entry is not None and entry.status == "missed"
    assert jobs.runs_with(marker) == 0


BAD_FIELDS: list[tuple[str, Any]] = [
    ("catch_up_window", -1),
    ("catch_up_window", 1.5),
    ("catch_up_window", True),
    ("catch_up_window", "60"),
    ("catch_up_window", 10**9),
    ("starts_at", datetime(2030, 1, 1)),
    ("ends_at", "2030-01-01"),
    ("label", ""),
    ("label", "x" * 256),
    ("label", 7),
]


def test_a_bad_window_field_is_refused_naming_it_and_nothing_is_written(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner()
    for field, value in BAD_FIELDS:
        with pb.session() as session:
            with pytest.raises(ScheduleValidationError) as refused:
                session.add(make_schedule(**{field: value}))
            assert refused.value.field == field, (field, value)
            session.commit()
    _assert_no_schedules(pb)


def test_an_ends_at_not_after_starts_at_is_refused_at_save(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner()
    with pb.session() as session:
        session.add(make_schedule(starts_at=at("2030-02-01 00:00"), ends_at=at("2030-01-01 00:00")))
        with pytest.raises(ScheduleValidationError) as refused:
            session.commit()
    assert refused.value.field == "ends_at"
    _assert_no_schedules(pb)


def _assert_no_schedules(pb: Postburner) -> None:
    with pb.session() as session:
        assert session.scalar(select(func.count()).select_from(Schedule)) == 0


def test_upgrading_to_the_run_control_schema_is_not_drift(
    make_postburner: MakePostburner, database_url: str
) -> None:
    from postburner_py.store.migrate import downgrade, upgrade

    clock = ManualClock(at("2030-01-01 12:00"))
    pb = make_postburner(clock=clock)
    schedule_id = create_schedule(pb, cron="0 9 * * *")
    [before] = _queued_ids(pb, schedule_id)
    downgrade(pb.engine, "0005_run_limits")  # the schema (and snapshots) of the release before
    upgrade(pb.engine)
    with pb.session() as session:
        assert pb.store.schedules_to_converge(session, clock()) == ([], [])
    report = reconcile_pass(pb, now=clock())
    assert (report.superseded, report.created) == (0, 0)
    assert _queued_ids(pb, schedule_id) == [before]


def test_the_watchdog_does_not_put_back_a_job_later_than_the_schedules_own_window(
    make_postburner: MakePostburner,
) -> None:
    clock = ManualClock(datetime.now(UTC).replace(minute=10, second=0, microsecond=0))
    pb = make_postburner(clock=clock, catch_up_window=3600)
    schedule_id = create_schedule(
        pb, name="narrow", cron="15 * * * *", catch_up=True, catch_up_window=60
    )
    [queued] = _queued(pb, schedule_id)
    with pb.session() as session:  # Beanstalkd lost the job
        execution = session.scalars(
            select(ScheduleExecution).where(ScheduleExecution.schedule_id == schedule_id)
        ).one()
        pb.queue.delete(execution.beanstalk_job_id)
        execution.beanstalk_job_id = None
        execution.enqueued_at = None
        session.commit()
    clock.now = queued + timedelta(minutes=5)  # inside the global hour, past its minute
    reconcile_pass(pb, now=clock())
    registry = SqlDispatchRegistry(pb.session_factory)
    entry = registry.find_dispatch("narrow", queued)
    assert entry is not None and entry.status == "missed"


def _queued_ids(pb: Postburner, schedule_id: int) -> list[int]:
    with pb.session() as session:
        return [e.id for e in session.get_one(Schedule, schedule_id).future_live()]
