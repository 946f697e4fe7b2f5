"""The worker against real PostgreSQL/SQLite and Beanstalkd: each occurrence runs at most once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from postburner_py import Postburner, Schedule, ScheduleExecution
from postburner_py.queue.operations import execution_body
from postburner_py.store.dispatch_log import SqlDispatchRegistry
from postburner_py.store.history import HistoryStore
from postburner_py.worker.process import Worker
from postburner_py.worker.runner import Outcome
from tests import jobs
from tests.factories import make_schedule

MakePostburner = Callable[..., Postburner]
pytestmark = pytest.mark.usefixtures("database_url")


def _due_soon(pb: Postburner, *, seconds_ahead: float = 1.0, **overrides: Any) -> ScheduleExecution:
    """Create a daily interval schedule whose first occurrence is ``seconds_ahead`` away."""
    anchor = (datetime.now(UTC) + timedelta(seconds=seconds_ahead)).replace(microsecond=0)
    anchor += timedelta(seconds=1)
    attributes: dict[str, Any] = {
        "cron": None,
        "anchor": anchor,
        "interval": 1,
        "interval_unit": "days",
        "args": [uuid.uuid4().hex],
        "kwargs": {},
    }
    attributes.update(overrides)
    with pb.session() as session:
        schedule = make_schedule(**attributes)
        session.add(schedule)
        session.commit()
        [execution] = schedule.future_live()
        return execution


def _run_until(
    pb: Postburner, done: Callable[[], bool], *, timeout: float = 20, **options: Any
) -> Worker:
    worker = Worker(pb, reserve_timeout=0.2, **options)
    thread = threading.Thread(target=worker.run)
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while not done() and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        worker.stop()
        thread.join(timeout=30)
    assert done(), f"condition not reached in {timeout} s; outcomes {dict(worker.outcomes)}"
    return worker


def _history(pb: Postburner, execution: ScheduleExecution) -> list[Any]:
    return HistoryStore(pb.session_factory).get_by_job_id(str(execution.id))


def test_a_due_execution_runs_once_on_time_and_is_recorded(make_postburner: MakePostburner) -> None:
    pb = make_postburner()
    execution = _due_soon(pb)
    marker = execution.cached_schedule["args"][0]
    _run_until(pb, lambda: jobs.runs_with(marker) == 1)
    [record] = _history(pb, execution)
    assert record.status == "completed"
    assert record.attempt == 1
    assert record.queue_time_ms is not None and 0 <= record.queue_time_ms < 200
    assert record.started_at >= execution.run_at
    entry = SqlDispatchRegistry(pb.session_factory).find_dispatch(
        execution.cached_schedule["name"], execution.run_at
    )
    assert entry is not None and entry.status == "completed"


def test_running_an_execution_chains_the_next_one(make_postburner: MakePostburner) -> None:
    pb = make_postburner()
    execution = _due_soon(pb)
    marker = execution.cached_schedule["args"][0]
    _run_until(pb, lambda: jobs.runs_with(marker) == 1)
    with pb.session() as session:
        schedule = session.get_one(Schedule, execution.schedule_id)
        [following] = schedule.future_live(datetime.now(UTC))
    assert following.run_at == execution.run_at + timedelta(days=1)
    assert execution.validate_next_execution(following) is True


def test_the_same_body_put_three_times_runs_once(make_postburner: MakePostburner) -> None:
    pb = make_postburner()
    execution = _due_soon(pb)
    for _ in range(2):
        pb.queue.put(execution_body(pb, execution), queue="default", priority=1, delay=0, ttr=60)
    marker = execution.cached_schedule["args"][0]
    worker = _run_until(
        pb,
        lambda: (
            jobs.runs_with(marker) == 1
            and (pb.queue.stats_tube("default") or {}).get("current-jobs-ready", 1) == 0
        ),
    )
    time.sleep(0.2)
    assert jobs.runs_with(marker) == 1
    assert worker.outcomes[Outcome.COMPLETED] == 1
    registry = SqlDispatchRegistry(pb.session_factory)
    assert len(registry.find_by_key(execution.cached_schedule["name"])) == 1


def test_a_superseded_executions_job_is_not_run(make_postburner: MakePostburner) -> None:
    pb = make_postburner()
    execution = _due_soon(pb)
    body = execution_body(pb, execution)
    with pb.session() as session:
        assert session.get_one(ScheduleExecution, execution.id).supersede() is True
    pb.queue.put(body, queue="default", priority=1, delay=0, ttr=60)
    worker = _run_until(
        pb, lambda: (pb.queue.stats_tube("default") or {}).get("current-jobs-ready", 1) == 0
    )
    assert worker.outcomes[Outcome.FENCED] >= 1
    assert jobs.runs_with(execution.cached_schedule["args"][0]) == 0


def test_a_forged_body_is_buried_and_its_module_never_imported(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner()
    execution = _due_soon(pb, seconds_ahead=30, job_class="tests.never_imported:run")
    forged = execution_body(pb, execution).replace(b'"sig":"', b'"sig":"00')
    job_id = pb.queue.put(forged, queue="default", priority=1, delay=0, ttr=60)
    worker = _run_until(pb, lambda: worker_outcome(pb, job_id) == "buried")
    assert worker.outcomes[Outcome.FORGED] == 1
    assert "tests.never_imported" not in sys.modules


def worker_outcome(pb: Postburner, job_id: int) -> str | None:
    stats = pb.queue.stats_job(job_id)
    return None if stats is None else str(stats["state"])


def test_a_job_class_outside_the_allow_list_is_buried_without_import(
    make_postburner: MakePostburner, database_url: str
) -> None:
    pb = make_postburner()
    execution = _due_soon(pb, job_class="tests.never_imported:run")
    strict = make_postburner(allowed_job_prefixes=["myapp."])
    worker = _run_until(
        strict, lambda: worker_outcome(pb, execution.beanstalk_job_id or 0) == "buried"
    )
    assert worker.outcomes[Outcome.REFUSED] == 1
    assert "tests.never_imported" not in sys.modules


def test_a_failing_job_is_retried_then_buried_with_every_attempt_recorded(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner()
    execution = _due_soon(pb, job_class="tests.jobs:always_fail", max_attempts=2)
    worker = _run_until(
        pb,
        lambda: worker_outcome(pb, execution.beanstalk_job_id or 0) == "buried",
        backoff=lambda attempt: 0,
    )
    assert (worker.outcomes[Outcome.RETRYING], worker.outcomes[Outcome.FAILED]) == (1, 1)
    records = _history(pb, execution)
    assert sorted((r.attempt, r.status) for r in records) == [(1, "failed"), (2, "failed")]
    assert all("downstream service said no" in (r.error_message or "") for r in records)
    assert all("Traceback" in (r.error_stack or "") for r in records)
    entry = SqlDispatchRegistry(pb.session_factory).find_dispatch(
        execution.cached_schedule["name"], execution.run_at
    )
    assert entry is not None and (entry.status, entry.attempt) == ("failed", 2)


def test_a_partial_success_is_recorded_with_its_results(make_postburner: MakePostburner) -> None:
    pb = make_postburner()
    marker = uuid.uuid4().hex
    execution = _due_soon(pb, job_class="tests.jobs:half_done", args=[marker])
    _run_until(
        pb, lambda: bool(_history(pb, execution)) and _history(pb, execution)[0].status != "started"
    )
    [record] = _history(pb, execution)
    assert record.status == "partial_success"
    assert record.results == {"sent": 3, "failed": 1, "marker": marker}


def test_current_execution_and_placeholders_reach_the_job(make_postburner: MakePostburner) -> None:
    pb = make_postburner()
    marker = uuid.uuid4().hex
    execution = _due_soon(
        pb,
        job_class="tests.jobs:SendReport",
        args=[marker],
        kwargs={"at": "{{fire_time.unix}}", "label": "run {{key}}"},
    )
    _run_until(pb, lambda: jobs.runs_with(marker) == 1)
    [(_args, kwargs)] = [run for run in jobs.RUNS if run[0] and run[0][0] == marker]
    assert kwargs == {
        "at": int(execution.run_at.timestamp()),
        "label": f"run {execution.cached_schedule['name']}",
    }
    [context] = [c for c in jobs.CONTEXTS if c.key == execution.cached_schedule["name"]]
    assert (context.attempt, context.run_at) == (1, execution.run_at)
    assert len(context.idempotency_key) == 32


def worker_environ(pb: Postburner, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a worker process on ``pb``'s database, queue and namespace."""
    env = dict(os.environ, **(extra or {}))
    env.update(
        POSTBURNER_DATABASE_URL=pb.engine.url.render_as_string(hide_password=False),
        POSTBURNER_BEANSTALKD_URL=pb.settings.beanstalkd_url,
        POSTBURNER_NAMESPACE=pb.settings.namespace,
        POSTBURNER_SECRET=pb.secret().decode(),
        PYTHONPATH=str(Path(__file__).resolve().parent.parent),
    )
    return env


def _worker_process(pb: Postburner, *extra: str) -> subprocess.Popen[bytes]:
    """A real worker process on ``pb``'s database, queue and namespace."""
    env = worker_environ(pb)
    code = textwrap.dedent(
        """
        import logging, sys
        from postburner_py import Postburner
        from postburner_py.worker.process import run_worker
        logging.basicConfig(level=logging.INFO)
        sys.exit(run_worker(Postburner(), concurrency=1))
        """
    )
    return subprocess.Popen([sys.executable, "-c", code, *extra], env=env)


def _wait_for(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_a_worker_killed_mid_job_hands_the_occurrence_to_attempt_two_after_the_ttr(
    make_postburner: MakePostburner, tmp_path: Path
) -> None:
    pb = make_postburner()
    attempts = tmp_path / "attempts.txt"
    execution = _due_soon(
        pb, job_class="tests.jobs:append_line_then_sleep", args=[str(attempts), 60], ttr=2
    )
    process = _worker_process(pb)
    try:
        _wait_for(lambda: attempts.exists() and attempts.read_text() == "1\n")
        killed_at = datetime.now(UTC)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        process.kill()
    _run_until(pb, lambda: attempts.read_text() == "1\n2\n", timeout=30)
    records = sorted(_history(pb, execution), key=lambda r: r.attempt)
    assert [(r.attempt, r.status) for r in records] == [(1, "failed"), (2, "completed")]
    assert records[1].started_at - records[0].started_at >= timedelta(seconds=2)
    assert records[1].started_at > killed_at


def test_a_job_running_past_its_ttr_is_kept_alive_and_runs_once(
    make_postburner: MakePostburner, tmp_path: Path
) -> None:
    pb = make_postburner()
    attempts = tmp_path / "attempts.txt"
    execution = _due_soon(
        pb, job_class="tests.jobs:append_line_then_sleep", args=[str(attempts), 2.5], ttr=1
    )
    # A second thread would reserve the job again the moment its TTR ran out untouched.
    _run_until(
        pb,
        lambda: bool(_history(pb, execution)) and _history(pb, execution)[0].status == "completed",
        timeout=20,
        concurrency=2,
        prefetch=0,
    )
    assert attempts.read_text() == "1\n"
    [record] = _history(pb, execution)
    assert record.attempt == 1 and record.execution_time_ms >= 2500


def test_a_terminated_worker_finishes_its_running_job_and_exits_zero(
    make_postburner: MakePostburner, tmp_path: Path
) -> None:
    pb = make_postburner()
    attempts = tmp_path / "attempts.txt"
    execution = _due_soon(
        pb, job_class="tests.jobs:append_line_then_sleep", args=[str(attempts), 1.5], ttr=30
    )
    process = _worker_process(pb)
    try:
        _wait_for(lambda: attempts.exists())
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        process.kill()
    [record] = _history(pb, execution)
    assert record.status == "completed"


def test_the_worker_reconnects_after_beanstalkd_restarts(
    make_postburner: MakePostburner, beanstalkd_factory: Any
) -> None:
    server = beanstalkd_factory(binlog=True)
    pb = make_postburner(beanstalkd_url=server.url)
    worker = Worker(pb, reserve_timeout=0.2)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        time.sleep(0.3)
        server.restart()
        execution = _due_soon(pb)
        _wait_for(lambda: jobs.runs_with(execution.cached_schedule["args"][0]) == 1)
    finally:
        worker.stop()
        thread.join(timeout=30)


def test_an_occurrence_later_than_the_catch_up_window_is_recorded_missed(
    make_postburner: MakePostburner,
) -> None:
    from tests.factories import ManualClock

    pb = make_postburner(catch_up_window=60)
    execution = _due_soon(pb)
    key = execution.cached_schedule["name"]
    registry = SqlDispatchRegistry(pb.session_factory)
    late_clock = ManualClock(execution.run_at + timedelta(minutes=5))
    worker = _run_until(
        pb, lambda: registry.find_dispatch(key, execution.run_at) is not None, clock=late_clock
    )
    entry = registry.find_dispatch(key, execution.run_at)
    assert entry is not None and entry.status == "missed"
    assert worker.outcomes[Outcome.MISSED] == 1
    assert jobs.runs_with(execution.cached_schedule["args"][0]) == 0
