"""Worker heartbeats: one row per running worker, written once per interval (not per job),
deleted on a clean stop, expired when a worker crashed; a worker without ``--queue`` follows
every queue that has schedules. Real PostgreSQL/SQLite and Beanstalkd."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event

from postburner_py import Postburner
from postburner_py.store.history import HistoryStore
from postburner_py.store.models import WorkerHeartbeat
from postburner_py.watchdog.process import Watchdog
from postburner_py.worker import Worker
from postburner_py.worker.heartbeat import HEARTBEAT_EXPIRY, Heartbeat
from tests.test_cli import Cli, cli, pb

MakePostburner = Callable[..., Postburner]
__all__ = ["cli", "pb"]  # fixtures shared with tests/test_cli.py
JOBS = 30


def _rows(pb: Postburner) -> list[WorkerHeartbeat]:
    with pb.session() as session:
        return pb.store.worker_heartbeats(session)


@contextmanager
def _heartbeat_writes(pb: Postburner) -> Iterator[list[str]]:
    """The statements that write the heartbeat table, as they run."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "postburner_worker_heartbeats" in statement and "SELECT" not in statement[:12]:
            seen.append(statement)

    event.listen(pb.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(pb.engine, "before_cursor_execute", record)


@contextmanager
def _running(worker: Worker) -> Iterator[Worker]:
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(timeout=30)


def _wait_for(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert condition(), f"not reached in {timeout} s"


@pytest.mark.usefixtures("database_url")
def test_a_worker_beats_once_per_interval_whatever_it_runs_and_its_row_goes_when_it_stops(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner()
    now = datetime.now(UTC)
    for index in range(JOBS):
        pb.enqueue_at(now, "tests.jobs:record_run", [index], job_id=f"beat-{index}")
    worker = Worker(pb, concurrency=2, reserve_timeout=0.2, heartbeat_interval=0.5)
    started = time.monotonic()
    with _heartbeat_writes(pb) as writes, _running(worker):
        _wait_for(lambda: worker.jobs_run() == JOBS)
        _wait_for(lambda: [row.jobs_run for row in _rows(pb)] == [JOBS])
        [row] = _rows(pb)
        assert (row.queues, row.concurrency, row.node) == (["default"], 2, pb.settings.node_id)
        assert row.id == worker.heartbeat.id and row.version
        beats_while_running = len(writes)
        time.sleep(1.2)  # no job runs now: the row still moves, once per interval
        assert 1 <= len(writes) - beats_while_running <= 4
        assert _rows(pb)[0].last_seen_at > row.last_seen_at
    # One expiry and one first beat at the start, then one upsert per interval: far fewer
    # writes than jobs, and none per job (a write per job would be 30 or more).
    elapsed = time.monotonic() - started
    assert len(writes) < JOBS and len(writes) <= 3 + elapsed / 0.5, (len(writes), elapsed)
    assert _rows(pb) == []  # a clean stop is not a dead worker


@pytest.mark.usefixtures("database_url")
def test_a_crashed_workers_row_expires_and_a_live_ones_stays(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner()
    now = datetime.now(UTC)
    crashed = Heartbeat(
        pb,
        queues=["default"],
        concurrency=1,
        jobs_run=lambda: 3,
        clock=lambda: now - HEARTBEAT_EXPIRY - timedelta(minutes=1),
    )
    alive = Heartbeat(pb, queues=["default"], concurrency=1, jobs_run=lambda: 0, clock=lambda: now)
    assert crashed.beat() and alive.beat()
    assert len(_rows(pb)) == 2
    assert Watchdog(pb).clean_up() is not None  # retention expires it, like a starting worker
    assert [row.id for row in _rows(pb)] == [alive.id]
    assert alive.expire_old_rows() == 0


@pytest.mark.usefixtures("database_url")
def test_a_worker_without_queues_serves_every_queue_that_has_schedules(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner()
    pb.enqueue_at(
        datetime.now(UTC), "tests.jobs:record_run", ["r"], job_id="on-reports", queue="reports"
    )
    worker = Worker(pb, queues=None, burst=True)
    worker.run()
    assert worker.queues == ("default", "reports")
    [record] = HistoryStore(pb.session_factory).get_by_job_id("on-reports")
    assert record.status == "completed"


def test_the_worker_says_which_queues_it_serves_and_which_it_does_not(
    cli: Cli, pb: Postburner
) -> None:
    pb.enqueue_at(
        datetime.now(UTC) + timedelta(hours=1),
        "tests.jobs:record_run",
        job_id="later",
        queue="reports",
    )
    following = cli("worker", "--burst")
    assert following.returncode == 0, following.stderr
    assert "queues default,reports (following the queues in use" in following.stderr
    fixed = cli("worker", "--burst", "--queue", "default")
    assert "queues default (as configured)" in fixed.stderr
    assert "NOT serving queues with schedules: reports" in fixed.stderr
