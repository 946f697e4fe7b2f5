"""Pre-enqueue lifecycle against real PostgreSQL/SQLite and a real Beanstalkd."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text

from postburner_py import Postburner, Schedule, ScheduleExecution
from postburner_py.errors import JobNotAllowedError, NextExecutionRunAtConflict
from postburner_py.queue.signing import decode_body
from tests.factories import ManualClock, create_schedule, make_schedule

MakePostburner = Callable[..., Postburner]
pytestmark = pytest.mark.usefixtures("database_url")


def _live(pb: Postburner, schedule_id: int) -> list[ScheduleExecution]:
    with pb.session() as session:
        schedule = session.get(Schedule, schedule_id)
        assert schedule is not None
        return schedule.future_live(pb.clock())


def _tube_counts(pb: Postburner, queue: str = "default") -> dict[str, int]:
    stats = pb.queue.stats_tube(queue) or {}
    return {
        "delayed": int(stats.get("current-jobs-delayed", 0)),
        "ready": int(stats.get("current-jobs-ready", 0)),
    }


def _statuses(pb: Postburner, schedule_id: int) -> dict[str, int]:
    with pb.session() as session:
        rows = session.execute(
            select(ScheduleExecution.status, func.count())
            .where(ScheduleExecution.schedule_id == schedule_id)
            .group_by(ScheduleExecution.status)
        ).all()
    return {status: count for status, count in rows}


def test_creating_a_schedule_queues_its_first_execution_in_the_right_tube(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner()
    schedule_id = create_schedule(pb, cron="*/5 * * * *")
    [execution] = _live(pb, schedule_id)
    assert execution.status == "scheduled"
    assert execution.beanstalk_job_id is not None
    assert execution.beanstalk_server_id == pb.queue.server_id()
    stats = pb.queue.stats_job(execution.beanstalk_job_id)
    assert stats is not None
    assert stats["tube"] == f"{pb.settings.namespace}.default"
    assert stats["state"] == "delayed"
    # The put delay is floor(run_at - now - PUT_LEAD) (the worker waits out the rest) and
    # Beanstalkd reports whole seconds, truncated: they cost up to 1.1 s and 1 s.
    expected_left = (execution.run_at - datetime.now(UTC)).total_seconds()
    assert 0 <= expected_left - int(stats["time-left"]) < 2.1
    job = pb.queue.peek(execution.beanstalk_job_id)
    assert job is not None
    body = decode_body(job.body, pb.secret())
    assert (body.kind, body.id, body.run_at) == ("execution", execution.id, execution.run_at)
    assert len(job.body) < 300


def test_reconcile_twice_keeps_one_live_execution_and_one_job(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner()
    schedule_id = create_schedule(pb)
    with pb.session() as session:
        schedule = session.get(Schedule, schedule_id)
        assert schedule is not None
        assert schedule.reconcile() is True
        assert schedule.reconcile() is True
    assert len(_live(pb, schedule_id)) == 1
    assert _tube_counts(pb) == {"delayed": 1, "ready": 0}
    assert _statuses(pb, schedule_id) == {"scheduled": 1}


def test_reconcile_from_two_threads_at_once_creates_one_execution(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner()
    schedule_id = create_schedule(pb, enabled=False)
    with pb.session() as session:
        session.execute(text("UPDATE postburner_schedules SET enabled = :on"), {"on": True})
        session.commit()
    from postburner_py.schedules.lifecycle import reconcile_schedule

    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            reconcile_schedule(pb, schedule_id)
        except BaseException as exc:  # pragma: no cover - surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert len(_live(pb, schedule_id)) == 1
    assert _tube_counts(pb) == {"delayed": 1, "ready": 0}


def test_changing_the_cron_supersedes_the_old_execution_and_deletes_its_job(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner()
    schedule_id = create_schedule(pb, cron="0 * * * *")
    [old] = _live(pb, schedule_id)
    with pb.session() as session:
        schedule = session.get(Schedule, schedule_id)
        assert schedule is not None
        schedule.cron = "30 * * * *"
        session.commit()
    [new] = _live(pb, schedule_id)
    assert new.id != old.id
    assert new.run_at.minute == 30
    assert new.run_at - pb.clock() <= timedelta(hours=1)
    assert old.beanstalk_job_id is not None
    assert pb.queue.stats_job(old.beanstalk_job_id) is None
    assert _statuses(pb, schedule_id) == {"scheduled": 1, "superseded": 1}
    assert _tube_counts(pb) == {"delayed": 1, "ready": 0}


def test_a_save_that_changes_nothing_cached_supersedes_nothing(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner()
    schedule_id = create_schedule(pb)
    with pb.session() as session:
        schedule = session.get(Schedule, schedule_id)
        assert schedule is not None
        schedule.description = "nightly numbers"
        schedule.cron = "0 * * * *"
        session.commit()
    assert _statuses(pb, schedule_id) == {"scheduled": 1}


def test_disable_removes_the_job_and_enable_queues_the_next_grid_point(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner()
    schedule_id = create_schedule(pb, cron="*/10 * * * *")
    with pb.session() as session:
        schedule = session.get(Schedule, schedule_id)
        assert schedule is not None
        schedule.disable()
    assert _live(pb, schedule_id) == []
    assert _tube_counts(pb) == {"delayed": 0, "ready": 0}
    with pb.session() as session:
        schedule = session.get(Schedule, schedule_id)
        assert schedule is not None
        schedule.enable()
        expected = schedule.next_run_at(pb.clock())
    [execution] = _live(pb, schedule_id)
    assert execution.run_at == expected
    assert _tube_counts(pb) == {"delayed": 1, "ready": 0}


def test_deleting_a_schedule_removes_its_job(make_postburner: MakePostburner) -> None:
    pb = make_postburner()
    schedule_id = create_schedule(pb)
    with pb.session() as session:
        schedule = session.get(Schedule, schedule_id)
        session.delete(schedule)
        session.commit()
    assert _tube_counts(pb) == {"delayed": 0, "ready": 0}
    with pb.session() as session:
        live = session.scalar(
            select(func.count()).where(ScheduleExecution.status.in_(["pending", "scheduled"]))
        )
    assert live == 0


def test_skip_queues_the_following_grid_point_and_never_recreates_the_skipped_one(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner()
    schedule_id = create_schedule(pb, cron="0 * * * *")
    with pb.session() as session:
        [first] = session.get_one(Schedule, schedule_id).future_live()
        assert first.skip() is True
        assert first.status == "skipped"
        assert first.beanstalk_job_id is None
    [following] = _live(pb, schedule_id)
    assert following.run_at == first.run_at + timedelta(hours=1)
    with pb.session() as session:
        assert session.get_one(Schedule, schedule_id).reconcile() is True
    assert [e.run_at for e in _live(pb, schedule_id)] == [following.run_at]
    assert _tube_counts(pb) == {"delayed": 1, "ready": 0}


def test_skip_twice_returns_false_the_second_time(make_postburner: MakePostburner) -> None:
    pb = make_postburner()
    schedule_id = create_schedule(pb)
    with pb.session() as session:
        [execution] = session.get_one(Schedule, schedule_id).future_live()
        assert execution.skip() is True
        assert execution.skip() is False
        assert execution.supersede() is False


def test_skip_refuses_an_occurrence_a_worker_has_claimed(make_postburner: MakePostburner) -> None:
    from postburner_py.store.dispatch_log import SqlDispatchRegistry

    pb = make_postburner()
    schedule_id = create_schedule(pb)
    [execution] = _live(pb, schedule_id)
    registry = SqlDispatchRegistry(pb.session_factory, node_id="worker-1")
    registry.claim(
        execution.cached_schedule["name"],
        execution.run_at,
        lease_seconds=60,
        max_attempts=1,
        now=pb.clock(),
    )
    with pb.session() as session:
        loaded = session.get_one(ScheduleExecution, execution.id)
        assert loaded.skip() is False
        assert loaded.status == "scheduled"


def test_skip_works_from_an_admin_script(make_postburner: MakePostburner) -> None:
    pb = make_postburner()
    schedule_id = create_schedule(pb)
    [execution] = _live(pb, schedule_id)
    with pb.session() as session:
        assert session.get_one(ScheduleExecution, execution.id).skip() is True


def test_supersede_deletes_the_job(make_postburner: MakePostburner) -> None:
    pb = make_postburner()
    schedule_id = create_schedule(pb)
    with pb.session() as session:
        [execution] = session.get_one(Schedule, schedule_id).future_live()
        job_id = execution.beanstalk_job_id
        assert execution.supersede() is True
    assert job_id is not None and pb.queue.stats_job(job_id) is None


def test_enqueue_twice_puts_one_job(make_postburner: MakePostburner) -> None:
    pb = make_postburner()
    schedule_id = create_schedule(pb)
    with pb.session() as session:
        [execution] = session.get_one(Schedule, schedule_id).future_live()
        first_job = execution.beanstalk_job_id
        execution.enqueue()
        execution.enqueue()
        assert execution.beanstalk_job_id == first_job
    assert _tube_counts(pb) == {"delayed": 1, "ready": 0}


def test_is_drifted_ignores_representation_but_sees_real_changes(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner()
    anchor = datetime(2025, 1, 31, 11, tzinfo=UTC).astimezone(
        __import__("zoneinfo").ZoneInfo("Europe/Prague")
    )
    schedule_id = create_schedule(pb, cron=None, anchor=anchor, interval=1, interval_unit="days")
    with pb.session() as session:
        schedule = session.get_one(Schedule, schedule_id)
        [execution] = schedule.future_live()
        assert isinstance(execution.cached_schedule["anchor"], str)
        assert execution.is_drifted(schedule) is False
        schedule.args = ["changed"]
        assert execution.is_drifted(schedule) is True


def test_validate_next_execution_compares_to_the_second() -> None:
    current = ScheduleExecution(id=7, run_at=datetime(2025, 1, 1, 10, tzinfo=UTC))
    following = ScheduleExecution(run_at=datetime(2025, 1, 1, 11, 0, 0, 400_000, tzinfo=UTC))
    assert current.validate_next_execution(following) is True
    current.next_run_at = datetime(2025, 1, 1, 11, tzinfo=UTC)
    assert current.validate_next_execution(following) is True
    current.next_run_at = datetime(2025, 1, 1, 12, tzinfo=UTC)
    with pytest.raises(NextExecutionRunAtConflict, match="2025-01-01T12:00:00"):
        current.validate_next_execution(following)


def test_job_class_outside_the_allow_list_is_refused_and_nothing_is_written(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner(allowed_job_prefixes=["myapp.jobs."])
    with pb.session() as session:
        session.add(make_schedule(job_class="os.system"))
        with pytest.raises(JobNotAllowedError, match="allowed_job_prefixes"):
            session.commit()
        session.rollback()
        assert session.scalar(select(func.count()).select_from(Schedule)) == 0


def test_schedule_created_while_beanstalkd_is_down_is_queued_once_it_is_back(
    make_postburner: MakePostburner, beanstalkd_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = beanstalkd_factory()
    pb = make_postburner(beanstalkd_url=server.url)
    server.stop()
    with caplog.at_level(logging.WARNING, logger="postburner_py"):
        schedule_id = create_schedule(pb)
    assert "unreachable" in caplog.text
    [execution] = _live(pb, schedule_id)
    assert (execution.status, execution.beanstalk_job_id) == ("scheduled", None)
    server.start()
    with pb.session() as session:
        assert session.get_one(Schedule, schedule_id).reconcile() is True
        assert session.get_one(Schedule, schedule_id).reconcile() is True
    [queued] = _live(pb, schedule_id)
    assert queued.id == execution.id and queued.beanstalk_job_id is not None
    assert _tube_counts(pb) == {"delayed": 1, "ready": 0}


def test_catch_up_false_records_missed_occurrences_and_resumes_after_now(
    make_postburner: MakePostburner,
) -> None:
    from postburner_py.store.dispatch_log import SqlDispatchRegistry

    clock = ManualClock(datetime.now(UTC).replace(second=30, microsecond=0))
    pb = make_postburner(clock=clock)
    schedule_id = create_schedule(pb, name="every-minute", cron="* * * * *")
    with pb.session() as session:
        [first] = session.get_one(Schedule, schedule_id).future_live()
        first.supersede()  # the job is lost and nothing runs for three minutes
    clock.advance(minutes=3)
    with pb.session() as session:
        assert session.get_one(Schedule, schedule_id).reconcile() is True
    [current] = _live(pb, schedule_id)
    assert current.run_at == clock().replace(second=0) + timedelta(minutes=1)
    missed = SqlDispatchRegistry(pb.session_factory).find_by_key("every-minute", status="missed")
    assert sorted(entry.fire_time for entry in missed) == [
        first.run_at + timedelta(minutes=n) for n in range(3)
    ]


def test_catch_up_true_runs_the_oldest_missed_occurrence_now(
    make_postburner: MakePostburner,
) -> None:
    clock = ManualClock(datetime.now(UTC).replace(second=30, microsecond=0))
    pb = make_postburner(clock=clock, catch_up_window=600)
    schedule_id = create_schedule(pb, cron="* * * * *", catch_up=True)
    with pb.session() as session:
        [first] = session.get_one(Schedule, schedule_id).future_live()
        first.supersede()
    clock.advance(minutes=3)
    with pb.session() as session:
        assert session.get_one(Schedule, schedule_id).reconcile() is True
    with pb.session() as session:
        live = session.scalars(
            select(ScheduleExecution).where(
                ScheduleExecution.schedule_id == schedule_id,
                ScheduleExecution.status == "scheduled",
            )
        ).all()
    assert [e.run_at for e in live] == [first.run_at]
    assert _tube_counts(pb) == {"delayed": 0, "ready": 1}


def test_a_failure_after_commit_is_logged_and_never_undoes_the_commit(
    make_postburner: MakePostburner,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import postburner_py.schedules.lifecycle

    def broken(*_args: Any, **_kwargs: Any) -> bool:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(postburner_py.schedules.lifecycle, "reconcile_schedule", broken)
    pb = make_postburner()
    with caplog.at_level(logging.ERROR, logger="postburner_py"):
        schedule_id = create_schedule(pb)
    assert "the watchdog will repair it" in caplog.text
    with pb.session() as session:
        assert session.get(Schedule, schedule_id) is not None
