"""The worker under faults: a server that goes away mid-job never starts an occurrence twice.

Each test reads the job's own start records (a line per start, written by the job), not only
the history the worker keeps: a duplicate start is what the promise is about.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from postburner_py import Postburner
from postburner_py.dispatch_log import SqlDispatchRegistry
from postburner_py.worker import Worker
from tests.test_worker import _due_soon, _history, _wait_for

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
