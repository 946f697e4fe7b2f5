"""``postburner status`` tells the truth, on both databases and a real Beanstalkd: each
schedule's last occurrence, paired with that same occurrence's newest attempt in the job
history; and whether anything is wrong (no live worker, an unserved queue, buried jobs, a
failed last occurrence, an invalid schedule, no watchdog), exit 1 naming it, exit 0 when not."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, text

from postburner_py import Postburner
from postburner_py.cli.commands import main
from postburner_py.cli.status import collect_status, render_status, schedule_rows
from postburner_py.store.dispatch_log import DispatchRecord, SqlDispatchRegistry
from postburner_py.store.history import HistoryStore
from postburner_py.worker.heartbeat import Heartbeat
from tests.factories import create_schedule

MakePostburner = Callable[..., Postburner]
#: The reading itself runs on both databases; the health rules once, on PostgreSQL.
both_databases = pytest.mark.usefixtures("database_url")
MINUTE_31 = datetime(2025, 1, 31, 11, 31, tzinfo=UTC)
MINUTE_32 = MINUTE_31 + timedelta(minutes=1)


def _attempt(
    history: HistoryStore,
    name: str,
    fire_time: datetime,
    *,
    attempt: int = 1,
    error: str | None = None,
) -> None:
    started = history.record_start(
        job_id=f"{name}-{fire_time.isoformat()}",
        task_identifier="tests.jobs:record_run",
        worker_id="worker-1",
        schedule_name=name,
        run_at=fire_time,
        attempt=attempt,
        started_at=fire_time + timedelta(seconds=10 * attempt),
    )
    if error is None:
        history.record_completion(started, worker_id="worker-1", execution_time_ms=5)
    else:
        history.record_failure(started, worker_id="worker-1", execution_time_ms=5, error=error)


def _dispatch(pb: Postburner, name: str, fire_time: datetime, *, failed: bool) -> None:
    registry = SqlDispatchRegistry(pb.session_factory, node_id="worker-1")
    claim = registry.claim(name, fire_time, lease_seconds=60, max_attempts=3, now=fire_time)
    settle = registry.fail if failed else registry.complete
    settle(name, fire_time, attempt=claim.attempt, now=fire_time)


@both_databases
def test_a_late_retry_of_an_earlier_occurrence_is_not_shown_under_the_later_one(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner()
    create_schedule(pb, name="report")
    history = HistoryStore(pb.session_factory)
    _dispatch(pb, "report", MINUTE_31, failed=True)
    _attempt(history, "report", MINUTE_31, error="first try failed")
    _dispatch(pb, "report", MINUTE_32, failed=False)
    _attempt(history, "report", MINUTE_32)
    # 11:31's retry runs after 11:32 completed: the newest history row by id.
    _attempt(history, "report", MINUTE_31, attempt=2, error="late retry of 11:31 failed")

    [row] = schedule_rows(pb, now=MINUTE_32)
    assert row["last_dispatch"]["fire_time"] == MINUTE_32.isoformat()
    assert row["last_dispatch"]["status"] == "completed"
    assert row["last_run"]["status"] == "completed"
    assert row["last_run"]["error"] is None
    assert row["last_run"]["started_at"] == (MINUTE_32 + timedelta(seconds=10)).isoformat()
    text = render_status(_report(row))
    assert f"last {MINUTE_32.isoformat()} completed" in text
    assert "late retry" not in text


@both_databases
def test_the_newest_attempt_of_the_last_occurrence_carries_its_error(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner()
    create_schedule(pb, name="report")
    history = HistoryStore(pb.session_factory)
    _dispatch(pb, "report", MINUTE_32, failed=True)
    _attempt(history, "report", MINUTE_32, error="attempt 1")
    _attempt(history, "report", MINUTE_32, attempt=2, error="attempt 2")
    _attempt(history, "report", MINUTE_31, error="an older occurrence")
    [row] = schedule_rows(pb, now=MINUTE_32)
    assert (row["last_run"]["status"], row["last_run"]["error"]) == ("failed", "attempt 2")
    assert f"{MINUTE_32.isoformat()} failed (error: attempt 2)" in render_status(_report(row))


@both_databases
def test_a_schedule_whose_dispatch_rows_are_gone_shows_its_newest_run(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner()
    create_schedule(pb, name="old")
    history = HistoryStore(pb.session_factory)
    _attempt(history, "old", MINUTE_31, error="kept longer than the dispatch log")
    [row] = schedule_rows(pb, now=MINUTE_32)
    assert row["last_dispatch"] is None
    assert row["last_run"]["error"] == "kept longer than the dispatch log"


@both_databases
def test_status_reads_a_page_of_schedules_with_the_same_queries_whatever_their_number(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner()
    history = HistoryStore(pb.session_factory)

    def queries_for(names: list[str]) -> int:
        for name in names:
            create_schedule(pb, name=name)
            _dispatch(pb, name, MINUTE_31, failed=False)
            _attempt(history, name, MINUTE_31)
        seen = [0]

        def count(*_args: Any) -> None:
            seen[0] += 1

        event.listen(pb.engine, "before_cursor_execute", count)
        try:
            rows = schedule_rows(pb, now=MINUTE_32)
        finally:
            event.remove(pb.engine, "before_cursor_execute", count)
        assert all(row["last_run"] is not None for row in rows)
        return seen[0]

    assert queries_for(["a"]) == queries_for([f"s{index}" for index in range(20)])


# --- healthy or not: one scene, broken one way at a time ---------------------------------------


def _worker_beat(pb: Postburner, queues: list[str] | None, seen: datetime) -> Heartbeat:
    """A worker heartbeat row written by the worker's own heartbeat, last seen at ``seen``."""
    heartbeat = Heartbeat(pb, queues=queues, concurrency=2, jobs_run=lambda: 7, clock=lambda: seen)
    assert heartbeat.beat()
    return heartbeat


def _watchdog_beat(pb: Postburner, passed: datetime) -> None:
    row = {"node": "watchdog-1", "started_at": passed, "last_pass_at": passed}
    with pb.session() as session:
        pb.store.beat(session, row, {"last_pass_at": passed})
        session.commit()


def _healthy_scene(pb: Postburner, now: datetime) -> None:
    """A live watchdog, a live worker on ``default`` and a schedule there that completed."""
    create_schedule(pb, name="report")
    _dispatch(pb, "report", now - timedelta(minutes=5), failed=False)
    _worker_beat(pb, ["default"], now - timedelta(seconds=5))
    _watchdog_beat(pb, now - timedelta(seconds=20))


def _status(pb: Postburner, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    settings = pb.settings
    code = main(
        [
            "--database-url",
            settings.database_url,
            "--beanstalkd-url",
            settings.beanstalkd_url,
            "--namespace",
            settings.namespace,
            "--secret",
            str(settings.secret),
            "status",
            *extra,
        ]
    )
    return code, capsys.readouterr().out


def _stop_the_worker(pb: Postburner, now: datetime) -> str:
    with pb.session() as session:
        session.execute(text("DELETE FROM postburner_worker_heartbeats"))
        session.commit()
    _worker_beat(pb, ["default"], now - timedelta(seconds=110))
    return "no live worker (the last heartbeat is 1"  # 110 s old, or a little more here


def _ready_jobs_nobody_serves(pb: Postburner, now: datetime) -> str:
    for _ in range(2):
        pb.queue.put(b"{}", queue="reports", priority=0, delay=0, ttr=60)
    return (
        "queue `reports` has 2 ready jobs and no worker serves it; "
        "start `postburner worker --queue reports`"
    )


def _due_occurrence_nobody_serves(pb: Postburner, now: datetime) -> str:
    create_schedule(pb, name="monthly", queue="reports")
    with pb.session() as session:  # its job was lost: the database alone knows it is due
        session.execute(
            text("UPDATE postburner_schedule_executions SET run_at = :due"),
            {"due": now - timedelta(minutes=1)},
        )
        session.commit()
    return "queue `reports` has 1 due occurrence and no worker serves it"


def _bury_a_job(pb: Postburner, now: datetime) -> str:
    pb.queue.put(b"{}", queue="default", priority=0, delay=0, ttr=60)
    job = pb.queue.reserve(["default"], 0)
    assert job is not None
    pb.queue.bury(job.id, priority=0)
    return "queue `default` has 1 buried job"


def _fail_the_last_occurrence(pb: Postburner, now: datetime) -> str:
    _dispatch(pb, "report", now - timedelta(minutes=1), failed=True)
    return "schedule 'report': its last occurrence"


def _corrupt_a_schedule(pb: Postburner, now: datetime) -> str:
    create_schedule(pb, name="broken")
    with pb.session() as session:
        session.execute(
            text("UPDATE postburner_schedules SET timezone = 'Mars/Olympus' WHERE name = 'broken'")
        )
        session.commit()
    return "schedule 'broken' cannot be planned"


def _stop_the_watchdog(pb: Postburner, now: datetime) -> str:
    _watchdog_beat(pb, now - timedelta(minutes=10))
    return "no watchdog has passed in the last 300 s"


UNHEALTHY: dict[str, Callable[[Postburner, datetime], str]] = {
    "worker down": _stop_the_worker,
    "queue unserved, ready jobs": _ready_jobs_nobody_serves,
    "queue unserved, due occurrences": _due_occurrence_nobody_serves,
    "buried": _bury_a_job,
    "failed": _fail_the_last_occurrence,
    "invalid": _corrupt_a_schedule,
    "no watchdog": _stop_the_watchdog,
}


def test_status_exits_0_when_workers_and_a_watchdog_serve_every_queue(
    make_postburner: MakePostburner, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pb = make_postburner(database_url=postgres_url)
    _healthy_scene(pb, datetime.now(UTC))
    code, out = _status(pb, capsys)
    assert code == 0, out
    assert "WARNING" not in out
    assert "queues default (" not in out  # the worker line lists its queues plainly
    assert "worker     " in out and ": ok, queues default, concurrency 2, 7 jobs run" in out
    assert "last hour  completed 1" in out


@pytest.mark.parametrize("case", UNHEALTHY, ids=str)
def test_status_exits_1_naming_what_is_wrong_and_what_to_do(
    make_postburner: MakePostburner,
    postgres_url: str,
    capsys: pytest.CaptureFixture[str],
    case: str,
) -> None:
    pb = make_postburner(database_url=postgres_url)
    now = datetime.now(UTC)
    _healthy_scene(pb, now)
    expected = UNHEALTHY[case](pb, now)
    code, out = _status(pb, capsys)
    assert code == 1, out
    [line] = [line for line in out.splitlines() if expected in line]
    assert line.startswith("WARNING: ")
    assert "`postburner " in line  # what to do, on the same line
    code, out = _status(pb, capsys, "--json")
    report = json.loads(out)
    assert code == 1 and report["healthy"] is False
    assert any(expected in problem for problem in report["problems"])


def test_a_worker_that_follows_the_queues_in_use_serves_a_new_queue(
    make_postburner: MakePostburner, postgres_url: str
) -> None:
    pb = make_postburner(database_url=postgres_url)
    now = datetime.now(UTC)
    _healthy_scene(pb, now)
    create_schedule(pb, name="monthly", queue="reports")
    problems = collect_status(pb, now=now)["problems"]
    assert problems == [
        "queue `reports` has 1 enabled schedule and no worker serves it; "
        "start `postburner worker --queue reports`"
    ]
    heartbeat = _worker_beat(pb, None, now)
    assert heartbeat.queues == ("default", "reports")
    assert collect_status(pb, now=now)["problems"] == []


@both_databases
def test_status_counts_the_last_hours_dispatches_by_whatever_status_they_have(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner()
    now = datetime.now(UTC)
    _healthy_scene(pb, now)
    _dispatch(pb, "report", now - timedelta(minutes=2), failed=False)
    _dispatch(pb, "old", now - timedelta(hours=2), failed=True)
    at = now - timedelta(minutes=3)
    with pb.session() as session:  # counted by the stored text: any status appears as it is
        session.add(
            DispatchRecord(
                key="report",
                fire_time=at,
                dispatched_at=at,
                node_id="n",
                status="missed",
                attempt=1,
                updated_at=at,
            )
        )
        session.commit()
    report = collect_status(pb, now=now)
    assert report["dispatches_last_hour"] == {"completed": 2, "missed": 1}
    assert "last hour  completed 2, missed 1" in render_status(report)


@both_databases
def test_status_reads_the_same_number_of_queries_whatever_the_number_of_schedules(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner()
    now = datetime.now(UTC)
    _healthy_scene(pb, now)

    def queries_for(names: list[str]) -> int:
        for name in names:
            create_schedule(pb, name=name)
            _dispatch(pb, name, now - timedelta(minutes=1), failed=False)
            _worker_beat(pb, ["default"], now)
        seen = [0]

        def count(*_args: Any) -> None:
            seen[0] += 1

        event.listen(pb.engine, "before_cursor_execute", count)
        try:
            assert collect_status(pb, now=now)["healthy"]
        finally:
            event.remove(pb.engine, "before_cursor_execute", count)
        return seen[0]

    assert queries_for(["a"]) == queries_for([f"s{index}" for index in range(20)])


def _report(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "settings": {"database_url": "db", "beanstalkd_url": "bs", "namespace": "n"},
        "database": "ok",
        "beanstalkd": "ok",
        "queues": {},
        "watchdogs": [],
        "schedules": [row],
    }
