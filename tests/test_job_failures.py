"""Jobs that misbehave: not importable, failing for good, running too long, never returning.

Against real PostgreSQL, SQLite and Beanstalkd; the shutdown tests run real worker processes.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from postburner_py import Postburner
from postburner_py.errors import ScheduleValidationError
from postburner_py.schedules.schedule_file import sync
from postburner_py.store.history import HistoryStore
from postburner_py.worker.runner import Outcome
from tests import jobs
from tests.factories import make_schedule
from tests.test_worker import _due_soon, _history, _wait_for, worker_environ
from tests.test_worker_faults import _delayed_status, _starts, running_worker

MakePostburner = Callable[..., Postburner]
pytestmark = pytest.mark.usefixtures("database_url")


def _soon(seconds: float = 1.0) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def _attempts(pb: Postburner, job_id: str) -> list[Any]:
    records = HistoryStore(pb.session_factory).get_by_job_id(job_id)
    return sorted(records, key=lambda record: record.attempt)


def _quick_retries(_attempt: int) -> int:
    return 1


# --- import errors and no_retry_on -------------------------------------------------------------


@pytest.mark.parametrize("job_class", ["tests.no_such_module:run", "tests.jobs:no_such_function"])
def test_a_job_class_the_worker_cannot_import_fails_at_once_saying_how_to_fix_it(
    make_postburner: MakePostburner, job_class: str
) -> None:
    pb = make_postburner()
    pb.enqueue_at(_soon(), job_class, job_id="unimportable", max_attempts=3)
    control = pb.enqueue_at(_soon(), "tests.jobs:always_fail", job_id="control", max_attempts=2)
    with running_worker(pb, backoff=_quick_retries) as worker:
        _wait_for(lambda: worker.outcomes[Outcome.FAILED] == 2, timeout=30)
    [record] = _attempts(pb, "unimportable")
    assert record.status == "failed" and record.error_message is not None
    assert record.error_message.startswith("JobImportError: " + job_class)
    for advice in ("working directory", "PYTHONPATH", "pip install"):
        assert advice in record.error_message
    # An ordinary failure is still retried.
    assert [r.attempt for r in _attempts(pb, control.job_id)] == [1, 2]
    assert _delayed_status(pb, "unimportable") == ["failed"]


def test_exceptions_listed_in_no_retry_on_fail_the_occurrence_at_once(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner()
    # always_fail raises RuntimeError: named as a built-in, and through its MRO.
    pb.enqueue_at(_soon(), "tests.jobs:always_fail", job_id="by-name", no_retry_on=["RuntimeError"])
    execution = _due_soon(
        pb, job_class="tests.jobs:always_fail", no_retry_on=["builtins.Exception"]
    )
    pb.enqueue_at(
        _soon(),
        "tests.jobs:always_fail",
        job_id="other",
        max_attempts=2,
        no_retry_on=["tests.jobs._Escape"],
    )
    with running_worker(pb, backoff=_quick_retries) as worker:
        _wait_for(lambda: worker.outcomes[Outcome.FAILED] == 3, timeout=30)
    assert [r.status for r in _attempts(pb, "by-name")] == ["failed"]
    assert [r.status for r in _history(pb, execution)] == ["failed"]
    assert [r.attempt for r in _attempts(pb, "other")] == [1, 2]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("no_retry_on", "ValueError"),
        ("no_retry_on", ["not a class"]),
        ("no_retry_on", [3]),
        ("timeout", 0),
        ("timeout", -1.5),
        ("timeout", "5"),
        ("timeout", True),
        ("timeout", float("inf")),
    ],
)
def test_bad_run_limits_are_refused_naming_the_field(
    make_postburner: MakePostburner, field: str, value: Any
) -> None:
    pb = make_postburner()
    with pytest.raises(ScheduleValidationError) as raised:
        make_schedule(**{field: value})
    assert raised.value.field == field
    with pytest.raises(ScheduleValidationError) as raised:
        pb.enqueue_at(_soon(60), "tests.jobs:record_run", job_id="refused", **{field: value})
    assert raised.value.field == field
    assert _delayed_status(pb, "refused") == []


def test_a_schedule_file_sets_timeout_and_no_retry_on(
    make_postburner: MakePostburner, tmp_path: Path
) -> None:
    pb = make_postburner()
    path = tmp_path / "schedules.yml"
    path.write_text(
        "defaults:\n"
        "  jobs:\n"
        "    - key: limited\n"
        "      cron: '0 * * * *'\n"
        "      job_class: tests.jobs:record_run\n"
        "      timeout: 90\n"
        "      no_retry_on: [myapp.errors.Permanent, ValueError]\n"
    )
    sync(pb, path, env="production")
    from sqlalchemy import select

    from postburner_py import Schedule

    with pb.session() as session:
        schedule = session.scalars(select(Schedule).where(Schedule.name == "limited")).one()
        assert (schedule.timeout, schedule.no_retry_on) == (
            90.0,
            ["myapp.errors.Permanent", "ValueError"],
        )


# --- timeout --------------------------------------------------------------------------------


def test_an_attempt_past_its_timeout_is_failed_and_another_thread_serves_meanwhile(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner()
    slow, quick = f"slow-{uuid.uuid4().hex}", f"quick-{uuid.uuid4().hex}"
    pb.enqueue_at(
        _soon(), "tests.jobs:hold_for", [slow, 4.0], job_id=slow, timeout=0.5, max_attempts=1
    )
    pb.enqueue_at(_soon(1.5), "tests.jobs:record_run", [quick], job_id=quick)
    # One slot, one thread: the quick job can only run on the thread that replaces it.
    with running_worker(pb, concurrency=1, prefetch=0) as worker:
        _wait_for(lambda: jobs.runs_with(quick) == 1, timeout=20)
        assert jobs.RUNNING.get(slow) == 1, "the slow job still runs, abandoned"
        [record] = _attempts(pb, slow)
        assert record.status == "failed" and record.error_message is not None
        assert record.error_message.startswith("JobTimeoutError: ran longer than its timeout")
        assert worker.abandoned_threads == 1
        # Its late return changes nothing.
        _wait_for(lambda: jobs.runs_with(slow) == 1, timeout=20)
        time.sleep(0.3)
    assert [(r.attempt, r.status) for r in _attempts(pb, slow)] == [(1, "failed")]
    assert _delayed_status(pb, slow) == ["failed"]


# --- shutdown ---------------------------------------------------------------------------------


def _cli_worker(
    pb: Postburner, *arguments: str, environ: dict[str, str] | None = None, **popen: Any
) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "postburner_py", "worker", *arguments]
    return subprocess.Popen(command, env=worker_environ(pb, environ), **popen)


def test_sigterm_with_a_job_that_never_returns_exits_non_zero_after_the_grace(
    make_postburner: MakePostburner, tmp_path: Path
) -> None:
    pb = make_postburner()
    starts = tmp_path / "starts.txt"
    execution = _due_soon(
        pb, job_class="tests.jobs:append_line_then_sleep", args=[str(starts), 3600], ttr=3
    )
    process = _cli_worker(pb, environ={"POSTBURNER_SHUTDOWN_GRACE": "1"})
    try:
        _wait_for(lambda: _starts(starts) == ["1"], timeout=30)
        process.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        assert process.wait(timeout=20) == 1
        assert time.monotonic() - stopped < 10
    finally:
        process.kill()
    # Left to the TTR take-over: still started, its lease no longer renewed.
    [record] = _history(pb, execution)
    assert record.status == "started"


def test_the_shutdown_grace_is_checked_on_the_command_line(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner()
    for value in ("soon", "-1", "inf"):
        process = _cli_worker(pb, "--shutdown-grace", value, stderr=subprocess.PIPE)
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 2
        [line] = [text for text in stderr.decode().splitlines() if "error:" in text]
        assert "shutdown_grace" in line and "not a number of seconds >= 0" in line
