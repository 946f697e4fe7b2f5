"""Skip ahead: any future grid point can be skipped, not only the queued one; an instant off
the grid is refused naming the nearest points. Real PostgreSQL/SQLite and Beanstalkd."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from postburner_py import Postburner, Schedule
from postburner_py.cli.admin import skip_occurrence
from postburner_py.errors import OffGridError, ScheduleValidationError
from postburner_py.schedules.chaining import chain_next_many
from postburner_py.store.dispatch_log import SqlDispatchRegistry
from postburner_py.store.history import HistoryStore
from postburner_py.watchdog.reconcile_pass import reconcile_pass
from postburner_py.worker.process import Worker
from tests.factories import ManualClock, at, create_schedule

MakePostburner = Callable[..., Postburner]
BOTH_STORES = pytest.mark.usefixtures("database_url")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _queued(pb: Postburner, schedule_id: int) -> list[datetime]:
    with pb.session() as session:
        return [e.run_at for e in session.get_one(Schedule, schedule_id).future_live()]


def _skipped(pb: Postburner, key: str) -> list[datetime]:
    registry = SqlDispatchRegistry(pb.session_factory)
    return sorted(e.fire_time for e in registry.find_by_key(key, status="skipped"))


@BOTH_STORES
def test_a_holiday_next_month_is_skipped_and_the_chain_steps_over_it(
    make_postburner: MakePostburner,
) -> None:
    clock = ManualClock(at("2030-12-01 12:00"))
    pb = make_postburner(clock=clock)
    schedule_id = create_schedule(pb, name="daily", cron="0 9 * * *")
    holiday = at("2030-12-25 09:00")
    with pb.session() as session:
        schedule = session.get_one(Schedule, schedule_id)
        assert schedule.skip_occurrence(holiday) is True
        assert schedule.skip_occurrence(holiday) is False  # already skipped
    assert _skipped(pb, "daily") == [holiday]
    assert not SqlDispatchRegistry(pb.session_factory).dispatched("daily", holiday)
    assert _queued(pb, schedule_id) == [at("2030-12-02 09:00")]  # the queued one is untouched

    # The day before: the worker's chaining plans the next occurrence, and steps over it.
    clock.now = at("2030-12-24 09:00")
    _ran(pb, schedule_id, at("2030-12-24 09:00"))
    chain_next_many(pb, {schedule_id: at("2030-12-24 09:00")}, now=clock())
    assert _queued(pb, schedule_id) == [at("2030-12-26 09:00")]
    # A reconcile plans the same: the skipped point never gets an execution.
    with pb.session() as session:
        session.get_one(Schedule, schedule_id).reconcile()
    assert _queued(pb, schedule_id) == [at("2030-12-26 09:00")]
    assert reconcile_pass(pb, now=clock()).created == 0


@BOTH_STORES
def test_skipping_the_queued_occurrence_ahead_uses_the_execution_skip(
    make_postburner: MakePostburner,
) -> None:
    clock = ManualClock(at("2030-12-01 12:00"))
    pb = make_postburner(clock=clock)
    schedule_id = create_schedule(pb, name="daily", cron="0 9 * * *")
    result = skip_occurrence(pb, schedule="daily", at=at("2030-12-02 09:00"))
    assert result.skipped and result.execution_id is not None
    assert _queued(pb, schedule_id) == [at("2030-12-03 09:00")]
    assert result.next_run_at == at("2030-12-03 09:00")
    assert _skipped(pb, "daily") == []  # the execution row says skipped, no dispatch row


@BOTH_STORES
def test_an_instant_off_the_grid_is_refused_naming_the_nearest_points_and_nothing_is_written(
    make_postburner: MakePostburner,
) -> None:
    clock = ManualClock(at("2030-12-01 12:00"))
    pb = make_postburner(clock=clock)
    schedule_id = create_schedule(pb, name="daily", cron="0 9 * * MON-FRI")
    with pb.session() as session:
        schedule = session.get_one(Schedule, schedule_id)
        with pytest.raises(OffGridError) as refused:
            schedule.skip_occurrence(at("2030-12-07 09:00"))  # a Saturday
        assert refused.value.field == "run_at"
        assert (refused.value.before, refused.value.after) == (
            at("2030-12-06 09:00"),
            at("2030-12-09 09:00"),
        )
        assert "2030-12-06T09:00:00+00:00" in str(refused.value)
        assert "2030-12-09T09:00:00+00:00" in str(refused.value)
        with pytest.raises(ScheduleValidationError, match="not in the future"):
            schedule.skip_occurrence(at("2030-11-29 09:00"))
        with pytest.raises(ScheduleValidationError, match="naive"):
            schedule.skip_occurrence(datetime(2030, 12, 9, 9))
    assert _skipped(pb, "daily") == []
    assert _queued(pb, schedule_id) == [at("2030-12-02 09:00")]


@BOTH_STORES
def test_a_point_outside_the_run_window_is_not_an_occurrence(
    make_postburner: MakePostburner,
) -> None:
    clock = ManualClock(at("2030-12-01 12:00"))
    pb = make_postburner(clock=clock)
    schedule_id = create_schedule(
        pb, name="daily", cron="0 9 * * *", ends_at=at("2030-12-10 12:00")
    )
    with pb.session() as session, pytest.raises(OffGridError) as refused:
        session.get_one(Schedule, schedule_id).skip_occurrence(at("2030-12-11 09:00"))
    assert (refused.value.before, refused.value.after) == (at("2030-12-10 09:00"), None)


def test_a_worker_never_starts_an_occurrence_skipped_ahead(
    make_postburner: MakePostburner, postgres_url: str
) -> None:
    pb = make_postburner(database_url=postgres_url)  # planning is store-generic (see above)
    name = f"pulse-{uuid.uuid4().hex[:8]}"
    schedule_id = create_schedule(
        pb, name=name, cron=None, anchor=EPOCH, interval=1, interval_unit="seconds"
    )
    holiday = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=3)
    with pb.session() as session:
        assert session.get_one(Schedule, schedule_id).skip_occurrence(holiday)
    history = HistoryStore(pb.session_factory)
    worker = Worker(pb, reserve_timeout=0.2)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not any(e.run_at > holiday for e in history.query(schedule_name=name)):
            assert time.monotonic() < deadline, f"no run after {holiday}"
            time.sleep(0.05)
    finally:
        worker.stop()
        thread.join(timeout=30)
    runs = {entry.run_at for entry in history.query(schedule_name=name)}
    assert holiday not in runs
    assert holiday + timedelta(seconds=1) in runs
    assert _skipped(pb, name) == [holiday]


@BOTH_STORES
def test_skip_on_the_command_line_says_why_it_was_refused_and_exits_1(
    make_postburner: MakePostburner, capsys: pytest.CaptureFixture[str]
) -> None:
    from postburner_py.cli.jobs import _run_skip

    clock = ManualClock(at("2030-12-01 12:00"))
    pb = make_postburner(clock=clock)
    create_schedule(pb, name="daily", cron="0 9 * * *")
    registry = SqlDispatchRegistry(pb.session_factory)
    claimed = registry.claim(
        "daily", at("2030-12-05 09:00"), lease_seconds=60, max_attempts=1, now=clock()
    )
    assert claimed.should_run  # a worker has it (e.g. a retry started it early)
    result = skip_occurrence(pb, schedule="daily", at=at("2030-12-05 09:00"))
    assert not result.skipped
    assert "a worker has already claimed it" in result.describe()
    args = _skip_args(pb, "daily", "2030-12-05T09:00:00+00:00")
    assert _run_skip(args) == 1
    assert "not skipped: a worker has already claimed it" in capsys.readouterr().out
    assert _run_skip(_skip_args(pb, "daily", "2030-12-06T09:00:00+00:00")) == 0
    assert "schedule daily at 2030-12-06T09:00:00+00:00 skipped" in capsys.readouterr().out


def _skip_args(pb: Postburner, schedule: str, when: str) -> object:
    import argparse

    return argparse.Namespace(
        execution_id=None,
        schedule=schedule,
        at=when,
        database_url=pb.settings.database_url,
        beanstalkd_url=pb.settings.beanstalkd_url,
        namespace=pb.settings.namespace,
        allowed_job_prefixes=",".join(pb.settings.allowed_job_prefixes),
        secret=pb.settings.secret,
        catch_up_window=None,
        node_id=None,
    )


def _ran(pb: Postburner, schedule_id: int, run_at: datetime) -> None:
    """Mark the queued occurrence at ``run_at`` started, as a worker's claim does."""
    registry = SqlDispatchRegistry(pb.session_factory)
    with pb.session() as session:
        name = session.get_one(Schedule, schedule_id).name
    registry.claim(name, run_at, lease_seconds=60, max_attempts=1, now=run_at)
