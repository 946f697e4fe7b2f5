"""``postburner status`` tells the truth about each schedule: its last occurrence, paired with
that same occurrence's newest attempt in the job history, on both databases."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event

from postburner_py import Postburner
from postburner_py.cli.status import render_status, schedule_rows
from postburner_py.store.dispatch_log import SqlDispatchRegistry
from postburner_py.store.history import HistoryStore
from tests.factories import create_schedule

MakePostburner = Callable[..., Postburner]
pytestmark = pytest.mark.usefixtures("database_url")
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


def _report(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "settings": {"database_url": "db", "beanstalkd_url": "bs", "namespace": "n"},
        "database": "ok",
        "beanstalkd": "ok",
        "queues": {},
        "watchdogs": [],
        "schedules": [row],
    }
