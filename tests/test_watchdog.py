"""The watchdog against real PostgreSQL/SQLite and Beanstalkd: reconcile pass, queue audit,
heartbeat, outages and the process itself."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select, text

from postburner_py import Postburner, Schedule, ScheduleExecution
from postburner_py.queue.signing import decode_body
from postburner_py.schedules.lifecycle import ENQUEUE_GRACE
from postburner_py.store.dispatch_log import DispatchRecord
from postburner_py.watchdog.process import (
    PassReport,
    Retention,
    Watchdog,
    WatchdogHeartbeat,
    tick,
    watchdog_health,
)
from tests.factories import ManualClock, create_schedule
from tests.servers import free_port, wait_until

MakePostburner = Callable[..., Postburner]
REPO = Path(__file__).resolve().parents[1]
SUBPROCESS_TIMEOUT = 30.0


# --- helpers ------------------------------------------------------------------------------------


def _clock(second: int | None = None) -> ManualClock:
    """A manual clock at the current instant (Beanstalkd delays stay sensible), or at
    ``second`` past the current minute for tests on per-minute schedules."""
    start = datetime.now(UTC).replace(microsecond=0)
    return ManualClock(start if second is None else start.replace(second=second))


def _bulk_schedules(pb: Postburner, count: int, **overrides: Any) -> list[int]:
    """Insert schedules with one bulk INSERT: no object is built, so no session hook runs.

    This is what the watchdog must materialise: schedules nobody reconciled.
    """
    prefix = uuid.uuid4().hex[:6]
    rows = [
        {
            "name": f"bulk-{prefix}-{index}",
            "job_class": "tests.jobs:record_run",
            "args": [index],
            "kwargs": {},
            "queue": "default",
            "priority": 65536,
            "ttr": 60,
            "max_attempts": 3,
            "timezone": "UTC",
            "cron": "0 * * * *",
            "catch_up": False,
            "enabled": True,
            **overrides,
        }
        for index in range(count)
    ]
    with pb.session() as session:
        session.execute(insert(Schedule), rows)
        session.commit()
        return list(
            session.scalars(select(Schedule.id).where(Schedule.name.like(f"bulk-{prefix}-%")))
        )


def _future_live(pb: Postburner, now: datetime) -> list[ScheduleExecution]:
    with pb.session() as session:
        return list(
            session.scalars(
                select(ScheduleExecution)
                .where(
                    ScheduleExecution.status.in_(["pending", "scheduled"]),
                    ScheduleExecution.run_at > now,
                )
                .order_by(ScheduleExecution.schedule_id)
            )
        )


def _live_per_schedule(pb: Postburner, now: datetime) -> dict[int | None, int]:
    with pb.session() as session:
        rows = session.execute(
            select(ScheduleExecution.schedule_id, func.count())
            .where(
                ScheduleExecution.status.in_(["pending", "scheduled"]),
                ScheduleExecution.run_at > now,
            )
            .group_by(ScheduleExecution.schedule_id)
        ).all()
    return {schedule_id: count for schedule_id, count in rows}


def _tube(pb: Postburner, queue: str = "default") -> dict[str, int]:
    stats = pb.queue.stats_tube(queue) or {}
    return {
        state: int(stats.get(f"current-jobs-{state}", 0))
        for state in ("delayed", "ready", "reserved", "buried")
    }


def _server_counter(pb: Postburner, name: str) -> int:
    return int(pb.queue.stats()[name])


def _assert_every_job_names_its_execution(
    pb: Postburner, executions: list[ScheduleExecution]
) -> None:
    server_id = pb.queue.server_id()
    for execution in executions:
        assert execution.beanstalk_job_id is not None, execution
        assert execution.beanstalk_server_id == server_id
        job = pb.queue.peek(execution.beanstalk_job_id)
        assert job is not None
        body = decode_body(job.body, pb.secret())
        assert (body.kind, body.id, body.run_at) == ("execution", execution.id, execution.run_at)


def _sql(pb: Postburner, statement: str, **params: Any) -> None:
    with pb.session() as session:
        session.execute(text(statement), params)
        session.commit()


# --- the reconcile pass ------------------------------------------------------------------------


def test_first_pass_creates_and_queues_every_bulk_inserted_schedule_and_the_next_does_nothing(
    database_url: str, make_postburner: MakePostburner
) -> None:
    clock = _clock()
    pb = make_postburner(clock=clock)
    ids = _bulk_schedules(pb, 50)
    report = tick(pb, now=clock())
    assert (report.created, report.requeued, report.queue_error) == (50, 0, None)
    live = _future_live(pb, clock())
    assert sorted(e.schedule_id for e in live) == sorted(ids)
    assert {e.status for e in live} == {"scheduled"}
    _assert_every_job_names_its_execution(pb, live)
    assert _tube(pb)["delayed"] == 50
    puts, peeks = _server_counter(pb, "cmd-put"), _server_counter(pb, "cmd-peek")
    again = tick(pb, now=clock())
    assert again.counts() == PassReport().counts()
    assert (_server_counter(pb, "cmd-put"), _server_counter(pb, "cmd-peek")) == (puts, peeks)


def test_the_snapshot_a_pass_writes_is_the_schedules_own(
    database_url: str, make_postburner: MakePostburner
) -> None:
    clock = _clock()
    pb = make_postburner(clock=clock)
    anchor = datetime(2025, 3, 30, 1, 30, 15, 250_000, tzinfo=UTC)
    [schedule_id] = _bulk_schedules(
        pb,
        1,
        cron=None,
        anchor=anchor,
        interval=1,
        interval_unit="days",
        timezone="Europe/Prague",
        kwargs={"zeta": 1, "alpha": [1.5, "é"]},
    )
    tick(pb, now=clock())
    with pb.session() as session:
        schedule = session.get_one(Schedule, schedule_id)
        [execution] = schedule.future_live(clock())
        assert execution.cached_schedule == schedule.snapshot()
        assert execution.is_drifted(schedule) is False
        if pb.dialect == "postgresql":
            session.refresh(schedule)
            session.refresh(execution)
            assert execution.config_digest == schedule.config_digest is not None
    assert tick(pb, now=clock()).repaired == 0


def test_a_healthy_pass_costs_one_stats_and_one_stats_tube_per_queue(
    database_url: str, make_postburner: MakePostburner
) -> None:
    clock = _clock()
    pb = make_postburner(clock=clock)
    _bulk_schedules(pb, 20)
    _bulk_schedules(pb, 20, queue="reports")
    tick(pb, now=clock())
    before = pb.queue.stats()
    tick(pb, now=clock())
    after = pb.queue.stats()
    used = {
        name: int(after[name]) - int(before[name])
        for name in after
        if name.startswith("cmd-") and after[name] != before[name]
    }
    # The second ``stats`` is the one this test reads.
    assert used == {"cmd-stats": 2, "cmd-stats-tube": 2}


def test_a_cron_changed_with_raw_sql_is_superseded_and_recreated_by_the_next_pass(
    database_url: str, make_postburner: MakePostburner
) -> None:
    clock = _clock()
    pb = make_postburner(clock=clock)
    schedule_id = create_schedule(pb, cron="0 * * * *")
    [old] = _future_live(pb, clock())
    _sql(pb, "UPDATE postburner_schedules SET cron = '30 * * * *' WHERE id = :id", id=schedule_id)
    report = tick(pb, now=clock())
    assert (report.superseded, report.created, report.repaired) == (1, 1, 1)
    [new] = _future_live(pb, clock())
    assert new.id != old.id and new.run_at.minute == 30
    assert new.cached_schedule["cron"] == "30 * * * *"
    _assert_every_job_names_its_execution(pb, [new])
    assert old.beanstalk_job_id is not None and pb.queue.peek(old.beanstalk_job_id) is None
    assert _tube(pb)["delayed"] == 1
    assert tick(pb, now=clock()).counts() == PassReport().counts()


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("kwargs", """'{"b": 1, "a": 3}'"""),
        ("args", "'[1, 2]'"),
        ("priority", "7"),
        ("queue", "'reports'"),
        ("timezone", "'Europe/Prague'"),
        ("catch_up", "true"),
        ("name", "'renamed'"),
        ("dst_gap", "'skip'"),
        ("dst_fold", "'both'"),
    ],
)
def test_any_cached_column_changed_with_raw_sql_counts_as_drift(
    database_url: str, make_postburner: MakePostburner, column: str, value: str
) -> None:
    clock = _clock()
    pb = make_postburner(clock=clock)
    schedule_id = create_schedule(pb, kwargs={"b": 1, "a": 2}, args=[1, "two"])
    assert tick(pb, now=clock()).repaired == 0  # key order and spacing are not drift
    _sql(pb, f'UPDATE postburner_schedules SET "{column}" = {value} WHERE id = :id', id=schedule_id)
    assert tick(pb, now=clock()).repaired == 1
    assert tick(pb, now=clock()).repaired == 0


def test_an_interval_anchor_changed_with_raw_sql_counts_as_drift(
    database_url: str, make_postburner: MakePostburner
) -> None:
    clock = _clock()
    pb = make_postburner(clock=clock)
    anchor = datetime(2025, 1, 1, 0, 0, 0, 250_000, tzinfo=UTC)
    schedule_id = create_schedule(
        pb, cron=None, anchor=anchor, interval=90, interval_unit="minutes"
    )
    assert tick(pb, now=clock()).repaired == 0
    with pb.session() as session:
        schedule = session.get_one(Schedule, schedule_id)
        session.execute(
            text("UPDATE postburner_schedules SET anchor = :anchor WHERE id = :id"),
            {
                "anchor": schedule.anchor.replace(tzinfo=None) + timedelta(minutes=5),
                "id": schedule_id,
            },
        )
        session.commit()
    assert tick(pb, now=clock()).repaired == 1


def test_a_schedule_disabled_with_raw_sql_loses_its_job_after_one_pass(
    database_url: str, make_postburner: MakePostburner
) -> None:
    clock = _clock()
    pb = make_postburner(clock=clock)
    schedule_id = create_schedule(pb)
    [execution] = _future_live(pb, clock())
    _sql(pb, "UPDATE postburner_schedules SET enabled = false WHERE id = :id", id=schedule_id)
    report = tick(pb, now=clock())
    assert (report.superseded, report.removed, report.created) == (1, 1, 0)
    assert _future_live(pb, clock()) == []
    assert execution.beanstalk_job_id is not None
    assert pb.queue.peek(execution.beanstalk_job_id) is None
    assert _tube(pb)["delayed"] == 0


def test_a_schedule_deleted_with_raw_sql_loses_its_job_after_one_pass(
    database_url: str, make_postburner: MakePostburner
) -> None:
    clock = _clock()
    pb = make_postburner(clock=clock)
    schedule_id = create_schedule(pb)
    _sql(pb, "DELETE FROM postburner_schedules WHERE id = :id", id=schedule_id)
    [orphan] = _future_live(pb, clock())
    assert orphan.schedule_id is None  # ON DELETE SET NULL
    report = tick(pb, now=clock())
    assert (report.superseded, report.removed) == (1, 1)
    assert _future_live(pb, clock()) == []
    assert _tube(pb)["delayed"] == 0


def test_duplicate_live_executions_are_reduced_to_one(
    database_url: str, make_postburner: MakePostburner
) -> None:
    clock = _clock()
    pb = make_postburner(clock=clock)
    schedule_id = create_schedule(pb, cron="0 * * * *")
    [first] = _future_live(pb, clock())
    with pb.session() as session:
        session.add(
            ScheduleExecution(
                schedule_id=schedule_id,
                run_at=first.run_at + timedelta(hours=1),
                cached_schedule=first.cached_schedule,
            )
        )
        session.commit()
    report = tick(pb, now=clock())
    assert report.superseded == 1
    assert _live_per_schedule(pb, clock()) == {schedule_id: 1}
    assert _tube(pb)["delayed"] == 1


def test_an_invalid_schedule_written_with_raw_sql_does_not_stop_the_others(
    database_url: str, make_postburner: MakePostburner, caplog: pytest.LogCaptureFixture
) -> None:
    clock = _clock()
    pb = make_postburner(clock=clock)
    _bulk_schedules(pb, 1, cron="not a cron")
    good = _bulk_schedules(pb, 3)
    with caplog.at_level(logging.WARNING, logger="postburner_py.watchdog"):
        report = tick(pb, now=clock())
    assert (report.created, report.invalid) == (3, 1)
    assert "cannot be planned" in caplog.text
    assert sorted(_live_per_schedule(pb, clock())) == sorted(good)


def test_a_broken_chain_records_missed_occurrences_and_resumes_after_now(
    database_url: str, make_postburner: MakePostburner
) -> None:
    clock = _clock(second=30)
    pb = make_postburner(clock=clock)
    [schedule_id] = _bulk_schedules(pb, 1, cron="* * * * *", resumed_at=clock())
    tick(pb, now=clock())
    [first] = _future_live(pb, clock())
    clock.advance(minutes=3)  # no worker ran anything for three minutes
    report = tick(pb, now=clock())
    assert report.created == 1
    with pb.session() as session:
        missed = session.scalars(
            select(DispatchRecord.fire_time).where(DispatchRecord.status == "missed")
        ).all()
    # The first occurrence is still waiting in Beanstalkd: a worker decides about it. The
    # ones after it never had a job; they are recorded missed (catch_up=False).
    assert sorted(missed) == [first.run_at + timedelta(minutes=n) for n in (1, 2)]
    assert report.missed == 2
    [current] = _future_live(pb, clock())
    assert current.run_at == clock().replace(second=0) + timedelta(minutes=1)
    assert current.schedule_id == schedule_id


def test_catch_up_queues_the_oldest_missed_occurrence_to_run_now(
    database_url: str, make_postburner: MakePostburner
) -> None:
    clock = _clock(second=30)
    pb = make_postburner(clock=clock, catch_up_window=600)
    [schedule_id] = _bulk_schedules(pb, 1, cron="* * * * *", catch_up=True, resumed_at=clock())
    tick(pb, now=clock())
    [first] = _future_live(pb, clock())
    _sql(pb, "UPDATE postburner_schedule_executions SET status = 'superseded'")
    clock.advance(minutes=3)
    report = tick(pb, now=clock())
    assert (report.created, report.missed) == (1, 0)
    with pb.session() as session:
        live = session.scalars(
            select(ScheduleExecution).where(
                ScheduleExecution.schedule_id == schedule_id,
                ScheduleExecution.status == "scheduled",
            )
        ).all()
    assert [e.run_at for e in live] == [first.run_at]
    assert _tube(pb)["ready"] == 1


# --- the queue audit ----------------------------------------------------------------------------


def test_beanstalkd_restarted_without_binlog_gets_every_job_back_once(
    database_url: str, make_postburner: MakePostburner, beanstalkd_factory: Any
) -> None:
    server = beanstalkd_factory(binlog=False)
    clock = _clock()
    pb = make_postburner(beanstalkd_url=server.url, clock=clock)
    _bulk_schedules(pb, 200)
    assert tick(pb, now=clock()).created == 200
    server.restart()
    report = tick(pb, now=clock())
    assert (report.missing, report.requeued, report.verified, report.created) == (200, 200, 0, 0)
    assert _tube(pb)["delayed"] == 200
    live = _future_live(pb, clock())
    assert len(live) == 200
    _assert_every_job_names_its_execution(pb, live)
    assert tick(pb, now=clock()).counts() == PassReport().counts()
    assert _tube(pb)["delayed"] == 200


def test_beanstalkd_restarted_with_binlog_puts_nothing_twice(
    database_url: str, make_postburner: MakePostburner, beanstalkd_factory: Any
) -> None:
    server = beanstalkd_factory(binlog=True)
    clock = _clock()
    pb = make_postburner(beanstalkd_url=server.url, clock=clock)
    _bulk_schedules(pb, 200)
    tick(pb, now=clock())
    server.restart()
    report = tick(pb, now=clock())
    assert (report.verified, report.missing, report.requeued) == (200, 0, 0)
    assert _server_counter(pb, "cmd-put") == 0
    assert _tube(pb)["delayed"] == 200
    _assert_every_job_names_its_execution(pb, _future_live(pb, clock()))
    assert tick(pb, now=clock()).verified == 0  # the new server id is recorded


def test_a_job_deleted_behind_our_back_is_put_back(
    database_url: str, make_postburner: MakePostburner
) -> None:
    clock = _clock()
    pb = make_postburner(clock=clock)
    _bulk_schedules(pb, 5)
    tick(pb, now=clock())
    victim = _future_live(pb, clock())[0]
    assert victim.beanstalk_job_id is not None
    assert pb.queue.delete(victim.beanstalk_job_id)
    report = tick(pb, now=clock())
    assert (report.missing, report.requeued, report.verified) == (1, 1, 4)
    assert _tube(pb)["delayed"] == 5
    _assert_every_job_names_its_execution(pb, _future_live(pb, clock()))


def test_a_due_job_lost_in_a_restart_runs_late_with_catch_up_and_is_missed_without(
    database_url: str, make_postburner: MakePostburner, beanstalkd_factory: Any
) -> None:
    server = beanstalkd_factory(binlog=False)
    clock = _clock()
    pb = make_postburner(beanstalkd_url=server.url, clock=clock, catch_up_window=1800)
    [eager] = _bulk_schedules(pb, 1, cron="* * * * *", catch_up=True, resumed_at=clock())
    [strict] = _bulk_schedules(pb, 1, cron="*/10 * * * *", catch_up=False, resumed_at=clock())
    tick(pb, now=clock())
    due = {e.schedule_id: e for e in _future_live(pb, clock())}
    server.restart()
    # Past the strict schedule's next occurrence: a worker would no longer run the lost one.
    clock.now = due[strict].run_at + timedelta(minutes=10, seconds=5)
    report = tick(pb, now=clock())
    with pb.session() as session:
        rows = session.execute(
            select(ScheduleExecution.id, ScheduleExecution.status).where(
                ScheduleExecution.id.in_([e.id for e in due.values()])
            )
        )
        statuses = {row[0]: row[1] for row in rows}
        missed = set(session.scalars(select(DispatchRecord.fire_time)))
    assert statuses[due[eager].id] == "scheduled"  # put back, ready at once
    assert statuses[due[strict].id] == "superseded"
    assert due[strict].run_at in missed
    assert report.missing == 2
    assert _tube(pb)["ready"] == 1


# --- one-off delayed jobs ------------------------------------------------------------------------


def _delayed_jobs(pb: Postburner) -> list[Any]:
    from postburner_py.schedules.one_off import DelayedJob

    with pb.session() as session:
        return list(session.scalars(select(DelayedJob).order_by(DelayedJob.id)))


def test_a_one_off_job_whose_put_failed_is_queued_by_the_next_pass(
    database_url: str, make_postburner: MakePostburner, beanstalkd_factory: Any
) -> None:
    server = beanstalkd_factory()
    clock = _clock()
    pb = make_postburner(beanstalkd_url=server.url, clock=clock)
    server.stop()
    pb.enqueue_at(clock() + timedelta(hours=1), "tests.jobs:record_run", job_id="report-1")
    assert tick(pb, now=clock()).queue_error is not None
    server.start()
    report = tick(pb, now=clock())
    assert report.requeued == 1
    [job] = _delayed_jobs(pb)
    assert job.beanstalk_job_id is not None and job.beanstalk_server_id == pb.queue.server_id()
    stored = pb.queue.peek(job.beanstalk_job_id)
    assert stored is not None and decode_body(stored.body, pb.secret()).key == "report-1"
    assert tick(pb, now=clock()).counts() == PassReport().counts()


@pytest.mark.parametrize("binlog", [False, True])
def test_one_off_jobs_survive_a_beanstalkd_restart(
    database_url: str, make_postburner: MakePostburner, beanstalkd_factory: Any, binlog: bool
) -> None:
    server = beanstalkd_factory(binlog=binlog)
    clock = _clock()
    pb = make_postburner(beanstalkd_url=server.url, clock=clock)
    for index in range(3):
        pb.enqueue_at(clock() + timedelta(hours=1), "tests.jobs:record_run", job_id=f"j{index}")
    server.restart()
    report = tick(pb, now=clock())
    assert (report.missing, report.verified) == ((0, 3) if binlog else (3, 0))
    assert report.requeued == (0 if binlog else 3)
    assert _tube(pb)["delayed"] == 3
    for job in _delayed_jobs(pb):
        assert job.beanstalk_server_id == pb.queue.server_id()
    assert tick(pb, now=clock()).counts() == PassReport().counts()


def test_a_cancelled_one_off_job_left_in_beanstalkd_is_deleted_by_the_next_pass(
    database_url: str, make_postburner: MakePostburner, beanstalkd_factory: Any
) -> None:
    server = beanstalkd_factory(binlog=True)
    clock = _clock()
    pb = make_postburner(beanstalkd_url=server.url, clock=clock)
    pb.enqueue_at(clock() + timedelta(hours=1), "tests.jobs:record_run", job_id="later")
    server.stop()
    assert pb.cancel("later") is True  # the job could not be deleted: Beanstalkd is down
    server.start()
    assert _tube(pb)["delayed"] == 1  # the binlog kept it
    report = tick(pb, now=clock())
    assert report.removed == 1
    assert _tube(pb)["delayed"] == 0
    [job] = _delayed_jobs(pb)
    assert (job.status, job.beanstalk_job_id) == ("cancelled", None)


# --- concurrency, crashes and outages -----------------------------------------------------------


def test_two_watchdogs_over_a_thousand_schedules_create_each_execution_once(
    postgres_url: str, make_postburner: MakePostburner
) -> None:
    now = _clock()()
    first = make_postburner(database_url=postgres_url)
    second = make_postburner(database_url=postgres_url)
    ids = _bulk_schedules(first, 1000)
    barrier = threading.Barrier(2)
    reports: list[PassReport] = []
    errors: list[BaseException] = []

    def run(pb: Postburner) -> None:
        try:
            barrier.wait()
            reports.append(tick(pb, now=now))
            reports.append(tick(pb, now=now))
        except BaseException as exc:  # pragma: no cover - surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(pb,)) for pb in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=SUBPROCESS_TIMEOUT)
    assert errors == []
    assert sum(report.created for report in reports) == 1000
    assert _live_per_schedule(first, now) == {schedule_id: 1 for schedule_id in ids}
    assert _tube(first) == {"delayed": 1000, "ready": 0, "reserved": 0, "buried": 0}
    _assert_every_job_names_its_execution(first, _future_live(first, now))


def test_puts_failing_while_beanstalkd_is_down_are_all_queued_once_it_is_back(
    database_url: str, make_postburner: MakePostburner, beanstalkd_factory: Any
) -> None:
    server = beanstalkd_factory()
    clock = _clock()
    pb = make_postburner(beanstalkd_url=server.url, clock=clock)
    server.stop()
    create_schedule(pb)  # the hook's put fails: scheduled without a job id
    _bulk_schedules(pb, 30)
    down = tick(pb, now=clock())
    assert down.queue_error is not None
    assert (down.created, down.unqueued) == (30, 31)
    server.start()
    back = tick(pb, now=clock())
    assert (back.requeued, back.queue_error) == (31, None)
    assert _tube(pb)["delayed"] == 31
    _assert_every_job_names_its_execution(pb, _future_live(pb, clock()))
    assert tick(pb, now=clock()).counts() == PassReport().counts()


_KILLED_PASS = """
import sys, time
from datetime import datetime
from postburner_py import Postburner
from postburner_py.schedules import chaining
from postburner_py.queue.beanstalk import BeanstalkQueue
from postburner_py.watchdog.process import tick

database_url, beanstalkd_url, namespace, now = sys.argv[1:5]
chaining.PUT_CHUNK = 100
put_many = BeanstalkQueue.put_many
calls = []

def stalling_put_many(self, items, connections=1):
    calls.append(len(items))
    if len(calls) == 3:  # two chunks are in Beanstalkd and recorded: hang here, mid-pass
        print("stalled", flush=True)
        time.sleep(600)
    return put_many(self, items, connections=connections)

BeanstalkQueue.put_many = stalling_put_many
pb = Postburner(database_url=database_url, beanstalkd_url=beanstalkd_url, namespace=namespace,
                secret="test-secret")
tick(pb, now=datetime.fromisoformat(now))
"""


def _python(*argv: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, *argv], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True
    )


def test_a_watchdog_killed_mid_pass_leaves_work_the_next_pass_finishes_without_duplicates(
    postgres_url: str, make_postburner: MakePostburner, namespace: str, beanstalkd_server: Any
) -> None:
    # The occurrences are half an hour away, whatever the wall clock says: advancing past
    # the enqueue grace never makes them due (the killed child puts on the real clock).
    clock = _clock()
    half_an_hour_on = (clock().minute + 30) % 60
    pb = make_postburner(database_url=postgres_url, clock=clock)
    ids = _bulk_schedules(pb, 500, cron=f"{half_an_hour_on} * * * *")
    child = _python(
        "-c", _KILLED_PASS, postgres_url, beanstalkd_server.url, namespace, clock().isoformat()
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "stalled"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(SUBPROCESS_TIMEOUT)
    assert _tube(pb)["delayed"] == 200
    clock.advance(seconds=ENQUEUE_GRACE.total_seconds() + 1)
    report = tick(pb, now=clock())
    assert (report.created, report.requeued) == (0, 300)
    assert _live_per_schedule(pb, clock()) == {schedule_id: 1 for schedule_id in ids}
    assert _tube(pb)["delayed"] == 500
    _assert_every_job_names_its_execution(pb, _future_live(pb, clock()))


def test_a_database_outage_is_logged_once_backed_off_and_converged_when_it_is_back(
    postgres_url: str,
    make_postburner: MakePostburner,
    pg_server: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = _clock()
    pb = make_postburner(database_url=postgres_url, clock=clock)
    ids = _bulk_schedules(pb, 3)
    ticks = [0.0]
    watchdog = Watchdog(pb, monotonic=lambda: ticks[0])
    pg_server.stop()
    with caplog.at_level(logging.INFO, logger="postburner_py.watchdog"):
        assert watchdog.reconcile() is None
        assert watchdog.reconcile() is None  # backing off: not even tried
        assert watchdog.database.failures == 1
        ticks[0] += 10
        assert watchdog.reconcile() is None
        assert watchdog.database.failures == 2
        pg_server.start()
        ticks[0] += 10
        report = watchdog.reconcile()
    assert report is not None and report.created == 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "unreachable" in warnings[0].getMessage()
    assert "reachable again" in caplog.text
    assert sorted(_live_per_schedule(pb, clock())) == sorted(ids)


def test_a_beanstalkd_outage_is_logged_once_and_the_audit_backs_off(
    database_url: str,
    make_postburner: MakePostburner,
    beanstalkd_factory: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = beanstalkd_factory()
    clock = _clock()
    pb = make_postburner(beanstalkd_url=server.url, clock=clock)
    _bulk_schedules(pb, 2)
    ticks = [0.0]
    watchdog = Watchdog(pb, monotonic=lambda: ticks[0])
    server.stop()
    with caplog.at_level(logging.INFO, logger="postburner_py.watchdog"):
        audit = watchdog.audit()
        assert audit is not None and audit.queue_error is not None
        assert watchdog.audit() is None  # backing off
        reconcile = watchdog.reconcile()  # the database half still runs
        assert reconcile is not None and reconcile.unqueued == 2
        server.start()
        ticks[0] += 10
        audit = watchdog.audit()
        reconcile = watchdog.reconcile()
    assert audit is not None and audit.queue_error is None
    assert reconcile is not None and reconcile.requeued == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [w.getMessage().split(" is ")[0] for w in warnings] == ["Beanstalkd"]
    assert _tube(pb)["delayed"] == 2


# --- health, retention and the process ---------------------------------------------------------


def test_each_pass_writes_a_heartbeat_that_goes_stale_when_passes_stop(
    database_url: str, make_postburner: MakePostburner
) -> None:
    clock = _clock()
    pb = make_postburner(clock=clock, node_id="watchdog-a")
    _bulk_schedules(pb, 2)
    watchdog = Watchdog(pb)
    assert watchdog.audit() is not None
    assert watchdog.reconcile() is not None
    [health] = watchdog_health(pb, now=clock(), stale_after=120)
    assert health["node"] == "watchdog-a" and health["stale"] is False
    assert health["last_pass_at"] == clock().isoformat()
    assert health["last_report"]["reconcile"]["created"] == 2
    assert set(health["last_report"]) == {"audit", "reconcile"}
    clock.advance(minutes=3)
    [health] = watchdog_health(pb, now=clock(), stale_after=timedelta(minutes=2))
    assert health["stale"] is True and health["seconds_since_pass"] == 180


def test_retention_deletes_expired_history_and_old_dispatch_rows(
    database_url: str, make_postburner: MakePostburner
) -> None:
    from postburner_py.store.dispatch_log import SqlDispatchRegistry
    from postburner_py.store.history import HistoryStore

    clock = _clock()
    pb = make_postburner(clock=clock)
    history = HistoryStore(pb.session_factory, retention=timedelta(hours=1), clock=clock)
    history.record_start(job_id="1", task_identifier="tests.jobs:record_run", worker_id="w")
    SqlDispatchRegistry(pb.session_factory).record_missed("old", [clock()], now=clock())
    clock.advance(days=2)
    watchdog = Watchdog(pb, retention=Retention(dispatch_window=timedelta(days=1)))
    assert watchdog.clean_up() == (1, 1)
    assert watchdog.clean_up() == (0, 0)


def test_a_dispatch_window_inside_the_look_back_is_refused() -> None:
    from postburner_py.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="look-back"):
        Retention(dispatch_window=timedelta(hours=1))


def test_the_report_describes_itself_on_one_line() -> None:
    report = PassReport(created=3, requeued=2, duration=0.0123)
    assert report.describe().startswith("created 3, superseded 0, repaired 0, missing 0")
    assert "\n" not in report.describe() and report.describe().endswith("in 0.012s")
    assert json.loads(json.dumps(report.as_dict()))["created"] == 3


_WATCHDOG_PROCESS = """
import sys
from postburner_py import Postburner
from postburner_py.watchdog.process import run_watchdog

database_url, beanstalkd_url, namespace, port = sys.argv[1:5]
pb = Postburner(database_url=database_url, beanstalkd_url=beanstalkd_url, namespace=namespace,
                secret="test-secret", node_id="sigterm-node")
sys.exit(run_watchdog(pb, interval=0.2, metrics_port=int(port)))
"""


def test_run_watchdog_serves_metrics_and_stops_cleanly_on_sigterm(
    postgres_url: str, make_postburner: MakePostburner, namespace: str, beanstalkd_server: Any
) -> None:
    pb = make_postburner(database_url=postgres_url)
    _bulk_schedules(pb, 3)
    port = free_port()
    child = _python(
        "-c", _WATCHDOG_PROCESS, postgres_url, beanstalkd_server.url, namespace, str(port)
    )
    try:
        wait_until(lambda: _passes_seen(pb) >= 1, SUBPROCESS_TIMEOUT, "a watchdog pass")
        wait_until(
            lambda: b"postburner_watchdog_created_total 3.0" in _metrics(port),
            SUBPROCESS_TIMEOUT,
            "the pass's counts in /metrics",
        )
        child.send_signal(signal.SIGTERM)
        assert child.wait(SUBPROCESS_TIMEOUT) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert _passes_seen(pb) == 0  # a clean stop removes the heartbeat
    assert len(_future_live(pb, datetime.now(UTC))) == 3


def _metrics(port: int) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body: bytes = response.read()
    return body


def _passes_seen(pb: Postburner) -> int:
    with pb.session() as session:
        statement = select(func.count()).where(WatchdogHeartbeat.last_pass_at.is_not(None))
        return int(session.scalar(statement) or 0)
