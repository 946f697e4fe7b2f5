"""The worker under faults: a server that goes away mid-job never starts an occurrence twice.

Each test reads the job's own start records (a line per start, written by the job), not only
the history the worker keeps: a duplicate start is what the promise is about.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from postburner_py import Postburner
from postburner_py.keys import one_off_key
from postburner_py.schedules import one_off as delayed_jobs
from postburner_py.schedules.one_off import DelayedJob
from postburner_py.store.dispatch_log import SqlDispatchRegistry
from postburner_py.store.history import HistoryStore
from postburner_py.worker.process import Worker
from tests import jobs
from tests.test_worker import _due_soon, _history, _wait_for, _worker_process

MakePostburner = Callable[..., Postburner]


@contextmanager
def running_worker(pb: Postburner, **options: Any) -> Iterator[Worker]:
    """A worker on its own thread for the duration of the block."""
    worker = Worker(pb, reserve_timeout=0.2, **options)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(timeout=60)
    assert not thread.is_alive(), "the worker did not stop"


def _starts(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _dispatch(pb: Postburner, key: str, run_at: Any) -> Any:
    return SqlDispatchRegistry(pb.session_factory).find_dispatch(key, run_at)


def test_a_postgresql_outage_while_the_outcome_is_recorded_does_not_run_the_job_again(
    make_postburner: MakePostburner, postgres_url: str, pg_server: Any, tmp_path: Path
) -> None:
    pb = make_postburner(database_url=postgres_url)
    starts = tmp_path / "starts.txt"
    execution = _due_soon(
        pb, job_class="tests.jobs:append_line_then_sleep", args=[str(starts), 1.0], ttr=3
    )
    key = execution.cached_schedule["name"]
    with running_worker(pb, concurrency=1):
        _wait_for(lambda: _starts(starts) == ["1"], timeout=20)
        began = time.monotonic()
        time.sleep(0.2)
        # Down from 0.2 s into the job until well after it returned (1 s): its outcome
        # cannot be committed while the database is away.
        pg_server.stop()
        time.sleep(2.0)
        pg_server.start()
        _wait_for(lambda: _history(pb, execution)[0].status == "completed", timeout=20)
        # Long enough for a TTR (3 s) to pass after the job's last touch: an untouched,
        # unrecorded job would have come back by now and started again.
        time.sleep(max(0.0, began + 7.0 - time.monotonic()))
    assert _starts(starts) == ["1"]
    records = _history(pb, execution)
    assert [(r.attempt, r.status) for r in records] == [(1, "completed")]
    entry = _dispatch(pb, key, execution.run_at)
    assert (entry.status, entry.attempt) == ("completed", 1)


@pytest.mark.usefixtures("database_url")
def test_a_beanstalkd_restart_mid_job_never_lets_its_restored_copy_start_a_second_attempt(
    make_postburner: MakePostburner, beanstalkd_factory: Any, tmp_path: Path
) -> None:
    server = beanstalkd_factory(binlog=True)
    pb = make_postburner(beanstalkd_url=server.url)
    starts = tmp_path / "starts.txt"
    execution = _due_soon(
        pb, job_class="tests.jobs:append_line_then_sleep", args=[str(starts), 6.0], ttr=3
    )
    with running_worker(pb, concurrency=2):
        _wait_for(lambda: _starts(starts) == ["1"], timeout=20)
        time.sleep(0.5)
        # The binlog brings the reserved job back as ready: the other threads reserve it
        # again and again while attempt 1 runs; its touches fail (the connection is gone),
        # its lease renewals must not.
        server.restart()
        _wait_for(lambda: _history(pb, execution)[0].status == "completed", timeout=30)
        time.sleep(1.0)
    assert _starts(starts) == ["1"]
    assert [(r.attempt, r.status) for r in _history(pb, execution)] == [(1, "completed")]


def test_a_taken_over_attempt_is_closed_in_history_as_failed_by_a_lost_worker(
    make_postburner: MakePostburner, database_url: str, tmp_path: Path
) -> None:
    pb = make_postburner()
    starts = tmp_path / "starts.txt"
    execution = _due_soon(
        pb, job_class="tests.jobs:append_line_then_sleep", args=[str(starts), 60], ttr=2
    )
    process = _worker_process(pb)
    try:
        _wait_for(lambda: _starts(starts) == ["1"], timeout=20)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        process.kill()
    with running_worker(pb, concurrency=1):
        _wait_for(lambda: _starts(starts) == ["1", "2"], timeout=30)
        _wait_for(lambda: _history(pb, execution)[0].status == "completed", timeout=20)
    lost, second = sorted(_history(pb, execution), key=lambda r: r.attempt)
    assert (lost.attempt, lost.status, second.attempt) == (1, "failed", 2)
    assert lost.error_message is not None
    assert lost.error_message.startswith("worker lost: attempt 1 on ")
    assert lost.worker_id in lost.error_message and "as attempt 2" in lost.error_message
    # Closed at the take-over, which is when attempt 2 was admitted.
    assert lost.finished_at is not None
    assert abs((second.started_at - lost.finished_at).total_seconds()) < 1.5


def test_a_one_off_job_that_kills_its_worker_fails_once_its_attempts_are_spent(
    make_postburner: MakePostburner, database_url: str, tmp_path: Path
) -> None:
    pb = make_postburner()
    starts = tmp_path / "starts.txt"
    job_id = "exits:1"
    at = datetime.now(UTC) + timedelta(seconds=1)
    pb.enqueue_at(
        at,
        "tests.jobs:append_line_then_exit",
        [str(starts)],
        job_id=job_id,
        ttr=1,
        max_attempts=2,
    )
    for _ in range(2):  # each attempt takes its worker process with it
        process = _worker_process(pb)
        try:
            assert process.wait(timeout=30) == 3
        finally:
            process.kill()
    assert _starts(starts) == ["1", "2"]
    # The next delivery finds the lease of attempt 2 expired and no attempt left.
    with running_worker(pb, concurrency=1):
        _wait_for(lambda: _delayed_status(pb, job_id) == ["failed"], timeout=30)
    records = sorted(
        HistoryStore(pb.session_factory).get_by_job_id(job_id), key=lambda r: r.attempt
    )
    assert [(r.attempt, r.status) for r in records] == [(1, "failed"), (2, "failed")]
    assert records[0].error_message is not None and "as attempt 2" in records[0].error_message
    assert (
        records[1].error_message is not None and "no attempt left of 2" in records[1].error_message
    )
    assert pb.cancel(job_id) is False
    assert delayed_jobs.job_state(pb, job_id) == "failed"
    # The job_id is free again.
    again = pb.enqueue_at(at + timedelta(hours=1), "tests.jobs:record_run", job_id=job_id)
    assert _delayed_status(pb, job_id) == ["failed", "pending"] and again.id is not None


def _delayed_status(pb: Postburner, job_id: str) -> list[str]:
    with pb.session() as session:
        rows = session.scalars(
            select(DelayedJob.status).where(DelayedJob.job_id == job_id).order_by(DelayedJob.id)
        )
        return list(rows)


KINDS = ["SystemExit", "KeyboardInterrupt", "GeneratorExit", "BaseException"]


def test_a_job_raising_a_base_exception_fails_its_attempt_and_the_thread_keeps_serving(
    make_postburner: MakePostburner, database_url: str
) -> None:
    pb = make_postburner()
    at = datetime.now(UTC) + timedelta(seconds=1)
    for n, kind in enumerate(KINDS):
        pb.enqueue_at(
            at + timedelta(milliseconds=n),
            "tests.jobs:raise_base_exception",
            [kind],
            job_id=f"base:{kind}",
            max_attempts=1,
        )
    marker = f"after-{uuid.uuid4().hex}"
    pb.enqueue_at(at + timedelta(seconds=1), "tests.jobs:record_run", [marker], job_id=marker)
    history = HistoryStore(pb.session_factory)
    # One thread only: the job after them runs on the thread each of them ran on.
    with running_worker(pb, concurrency=1, prefetch=0):
        _wait_for(lambda: jobs.runs_with(marker) == 1, timeout=30)
        _wait_for(lambda: all(_delayed_status(pb, f"base:{k}") == ["failed"] for k in KINDS))
    for kind in KINDS:
        [record] = history.get_by_job_id(f"base:{kind}")
        assert record.status == "failed" and record.attempt == 1
        assert record.error_message is not None
        assert record.error_message.split(":")[0] in (kind, "_Escape")


def test_sigterm_while_the_database_is_away_exits_non_zero_after_the_grace_and_attempt_two_runs(
    make_postburner: MakePostburner, postgres_url: str, pg_server: Any, tmp_path: Path
) -> None:
    from tests.test_job_failures import _cli_worker

    pb = make_postburner(database_url=postgres_url)
    starts = tmp_path / "starts.txt"
    execution = _due_soon(
        pb, job_class="tests.jobs:append_line_then_sleep", args=[str(starts), 1.0], ttr=3
    )
    process = _cli_worker(pb, environ={"POSTBURNER_SHUTDOWN_GRACE": "1"})
    try:
        _wait_for(lambda: _starts(starts) == ["1"], timeout=30)
        began = time.monotonic()
        time.sleep(0.2)
        pg_server.stop()
        time.sleep(max(0.0, began + 1.5 - time.monotonic()))  # the job returned meanwhile
        process.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        # Its outcome is retried for the grace, then given up: not a clean exit.
        assert process.wait(timeout=20) == 1
        assert time.monotonic() - stopped < 10
    finally:
        process.kill()
        pg_server.start()
    # The documented window: nothing recorded that attempt 1 finished, so after the TTR the
    # occurrence runs again as attempt 2 (jobs use idempotency_key for this).
    with running_worker(pb, concurrency=1):
        _wait_for(lambda: _starts(starts) == ["1", "2"], timeout=30)
        _wait_for(lambda: _history(pb, execution)[0].status == "completed", timeout=20)
    lost, second = sorted(_history(pb, execution), key=lambda r: r.attempt)
    assert (lost.status, second.status) == ("failed", "completed")
    assert lost.error_message is not None and lost.error_message.startswith("worker lost")


def test_an_attempt_whose_lease_was_taken_over_while_it_waited_for_a_slot_never_starts(
    make_postburner: MakePostburner, database_url: str, tmp_path: Path
) -> None:
    # A prefetched attempt waits for a slot while another job runs. If its lease lapses
    # meanwhile (a stalled machine) and another delivery takes the occurrence over, the
    # waiting attempt must find out before it starts, not run alongside the new owner.
    pb = make_postburner()
    busy, waiting = tmp_path / "busy.txt", tmp_path / "waiting.txt"
    now = datetime.now(UTC)
    pb.enqueue_at(now, "tests.jobs:append_line_then_sleep", [str(busy), 4.0], job_id="busy", ttr=3)
    job = pb.enqueue_at(  # due while "busy" holds the only slot
        now + timedelta(seconds=2),
        "tests.jobs:append_line_then_sleep",
        [str(waiting), 0],
        job_id="waiting",
        ttr=3,
    )
    registry = SqlDispatchRegistry(pb.session_factory, node_id="another-worker")
    key = one_off_key("waiting")
    with running_worker(pb, concurrency=1, prefetch=1):
        _wait_for(lambda: _starts(busy) == ["1"] and registry.dispatched(key, job.run_at))
        taken = registry.claim(
            key, job.run_at, lease_seconds=60, max_attempts=3, now=now + timedelta(hours=1)
        )
        assert taken.attempt == 2
        _wait_for(lambda: _dispatch(pb, one_off_key("busy"), now).status == "completed")
        time.sleep(1.5)  # the slot is free: the waiting attempt would have started by now
    assert _starts(waiting) == []
