"""Log lines: one per run at start and at finish, failures with their traceback, JSON lines with
the documented ``action`` keys, and one line per Beanstalkd outage for a whole worker.

Against real PostgreSQL and Beanstalkd (a real worker process for the JSON lines).
"""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from postburner_py import Postburner
from postburner_py.logs import ACTIONS, JsonFormatter, configure_logging
from postburner_py.queue.beanstalk import QueueOutage
from postburner_py.worker.process import Worker
from postburner_py.worker.runner import Outcome
from tests.test_worker import _wait_for, worker_environ

MakePostburner = Callable[..., Postburner]
REPO = Path(__file__).resolve().parent.parent
#: The keys every run line carries (docs/operations.md).
RUN_KEYS = {"action", "schedule", "run_at", "attempt", "lateness", "queue", "job_id"}
FINISH_KEYS = RUN_KEYS | {"duration", "outcome"}


def _now() -> datetime:
    return datetime.now(UTC)


def _worker_lines(pb: Postburner, *options: str) -> list[str]:
    """The standard error lines of a ``postburner worker --burst`` process on ``pb``."""
    done = subprocess.run(
        [sys.executable, "-m", "postburner_py", "worker", "--burst", *options],
        env=worker_environ(pb, {"POSTBURNER_ALLOWED_JOB_PREFIXES": "tests"}),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr.splitlines()


def test_json_lines_of_a_worker_parse_and_carry_the_documented_keys(
    make_postburner: MakePostburner, postgres_url: str
) -> None:
    pb = make_postburner(database_url=postgres_url)
    pb.enqueue_at(_now(), "tests.jobs:record_run", ["ok"], job_id="fine")
    pb.enqueue_at(_now(), "tests.jobs:always_fail", job_id="broken", max_attempts=1)
    lines = [json.loads(line) for line in _worker_lines(pb, "--log-format", "json")]
    for line in lines:
        assert {"time", "level", "logger", "message"} <= line.keys()
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    by_action: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        by_action.setdefault(line.get("action", ""), []).append(line)
    assert set(by_action) - {""} <= set(ACTIONS)
    [started_line] = by_action["worker.started"]
    assert started_line["queues"] == ["default"] and started_line["concurrency"] == 1
    starts = {line["schedule"]: line for line in by_action["run.started"]}
    assert set(starts) == {"job:fine", "job:broken"}
    for line in starts.values():
        assert line.keys() >= RUN_KEYS and line["level"] == "INFO"
        assert line["attempt"] == 1 and 0 <= line["lateness"] < 30
        datetime.fromisoformat(line["run_at"])
    [finished] = by_action["run.finished"]
    assert finished.keys() >= FINISH_KEYS and finished["schedule"] == "job:fine"
    assert finished["outcome"] == "completed" and finished["duration"] >= 0
    [failed] = by_action["run.failed"]
    assert failed.keys() >= FINISH_KEYS and failed["level"] == "ERROR"
    assert (failed["schedule"], failed["outcome"], failed["retry_in"]) == (
        "job:broken",
        "failed",
        None,
    )
    assert (
        "Traceback" in failed["exc_info"]
        and "the downstream service said no" in (failed["exc_info"])
    )
    assert by_action["worker.stopped"][0]["outcomes"] == {"completed": 1, "failed": 1}


def test_log_level_warning_keeps_a_worker_from_writing_a_line_per_run(
    make_postburner: MakePostburner, postgres_url: str
) -> None:
    pb = make_postburner(database_url=postgres_url)
    pb.enqueue_at(_now(), "tests.jobs:record_run", ["ok"], job_id="quiet")
    lines = _worker_lines(pb, "--log-format", "json", "--log-level", "WARNING")
    assert not [line for line in lines if '"action": "run.' in line]
    assert not [line for line in lines if '"level": "INFO"' in line]


def test_a_run_logs_one_info_line_at_start_and_at_finish_and_a_retry_its_traceback(
    make_postburner: MakePostburner, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    pb = make_postburner(database_url=sqlite_url)
    pb.enqueue_at(_now(), "tests.jobs:record_run", ["ok"], job_id="fine")
    pb.enqueue_at(_now(), "tests.jobs:always_fail", job_id="flaky", max_attempts=2)
    worker = Worker(pb, burst=True, backoff=lambda _attempt: 30)
    with caplog.at_level(logging.INFO, logger="postburner_py"):
        worker.run()
    records = [r for r in caplog.records if getattr(r, "action", "").startswith("run.")]
    summary = sorted((r.action, r.schedule, r.levelname) for r in records)  # type: ignore[attr-defined]
    assert summary == [
        ("run.failed", "job:flaky", "ERROR"),
        ("run.finished", "job:fine", "INFO"),
        ("run.started", "job:fine", "INFO"),
        ("run.started", "job:flaky", "INFO"),
    ]
    [failed] = [r for r in records if r.action == "run.failed"]  # type: ignore[attr-defined]
    assert failed.exc_info is not None and failed.outcome == "retrying"  # type: ignore[attr-defined]
    assert failed.retry_in == 30  # type: ignore[attr-defined]
    assert "retry in 30 s" in failed.getMessage()
    text = logging.Formatter("%(message)s").format(failed)
    assert "Traceback" in text and "RuntimeError: the downstream service said no" in text


def test_a_level_that_is_off_builds_no_run_line(
    make_postburner: MakePostburner, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    pb = make_postburner(database_url=sqlite_url)
    pb.enqueue_at(_now(), "tests.jobs:record_run", ["ok"], job_id="quiet")
    with caplog.at_level(logging.WARNING, logger="postburner_py"):
        Worker(pb, burst=True).run()
    assert not [r for r in caplog.records if hasattr(r, "action")]


def test_a_beanstalkd_outage_is_logged_once_for_every_thread_and_its_end_once(
    make_postburner: MakePostburner,
    sqlite_url: str,
    beanstalkd_factory: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = beanstalkd_factory()
    pb = make_postburner(database_url=sqlite_url, beanstalkd_url=server.url)
    worker = Worker(pb, concurrency=4, reserve_timeout=0.2)  # 8 reserving threads
    thread = threading.Thread(target=worker.run)
    with caplog.at_level(logging.INFO, logger="postburner_py"):
        thread.start()
        try:
            time.sleep(0.5)  # every thread is in reserve
            server.stop()
            _wait_for(lambda: worker.queue_outage.failures >= 8, timeout=20)
            server.start()
            _wait_for(lambda: not worker.queue_outage.down, timeout=20)
            time.sleep(1.0)  # the other threads reconnect too
        finally:
            worker.stop()
            thread.join(timeout=30)
    lost = [r for r in caplog.records if r.levelno >= logging.WARNING and "nreachable" in r.msg]
    back = [r for r in caplog.records if "reachable again" in r.getMessage()]
    assert [getattr(r, "action", None) for r in lost] == ["beanstalkd.lost"]
    assert [getattr(r, "action", None) for r in back] == ["beanstalkd.recovered"]
    assert worker.outcomes[Outcome.FORGED] == 0


def test_an_outage_seen_by_many_threads_at_once_is_one_line() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("tests.outage")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    outage = QueueOutage(logger, "beanstalk://127.0.0.1:1")
    try:
        barrier = threading.Barrier(16)

        def fail_then_recover() -> None:
            barrier.wait()
            outage.unreachable(ConnectionRefusedError("refused"))
            barrier.wait()
            outage.reachable()

        threads = [threading.Thread(target=fail_then_recover) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["action"] for line in lines] == ["beanstalkd.lost", "beanstalkd.recovered"]
    assert lines[1]["failures"] == 16 and outage.outages == 1


def test_configure_logging_replaces_the_plain_handler_and_keeps_the_others() -> None:
    root = logging.getLogger()
    kept = [*root.handlers]
    plain = logging.StreamHandler(sys.stderr)
    root.addHandler(plain)
    stream = io.StringIO()
    try:
        # caller_info: leave the test process's records as they are
        ours = configure_logging("json", stream=stream, caller_info=True)
        again = configure_logging("json", stream=stream, caller_info=True)
        assert plain not in root.handlers and ours not in root.handlers
        assert again in root.handlers and all(h in root.handlers for h in kept)
        for n in range(100):
            logging.getLogger("postburner_py.tests").warning("line %d", n, extra={"action": "x.y"})
    finally:
        root.removeHandler(plain)
        root.removeHandler(again)
        again.close()  # the writer thread writes what is queued, then stops
    lines = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert [line["message"] for line in lines] == [f"line {n}" for n in range(100)]
    assert (lines[0]["action"], lines[0]["level"]) == ("x.y", "WARNING")
    with pytest.raises(ValueError, match="text, json"):
        configure_logging("yaml", caller_info=True)


def test_every_action_is_documented_in_operations() -> None:
    operations = (REPO / "docs" / "operations.md").read_text()
    missing = [action for action in ACTIONS if f"`{action}`" not in operations]
    assert not missing, missing
