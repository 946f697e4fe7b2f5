"""Retry of a failed occurrence, ``postburner buried``, and a buried job kicked by hand."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from postburner_py import Postburner, Schedule
from postburner_py.cli.commands import main
from postburner_py.cli.run_control import buried_jobs
from postburner_py.errors import PostburnerError
from postburner_py.store.dispatch_log import SqlDispatchRegistry
from postburner_py.store.history import HistoryStore
from postburner_py.store.models import ScheduleExecution
from tests.test_worker import _due_soon, _wait_for
from tests.test_worker_faults import running_worker

MakePostburner = Callable[..., Postburner]
pytestmark = pytest.mark.usefixtures("database_url")


def _cli(pb: Postburner, *argv: str) -> int:
    return main(
        [
            *argv,
            "--database-url",
            pb.engine.url.render_as_string(hide_password=False),
            "--beanstalkd-url",
            pb.settings.beanstalkd_url,
            "--namespace",
            pb.settings.namespace,
            "--secret",
            pb.secret().decode(),
        ]
    )


def _attempts(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _failed_occurrence(pb: Postburner, path: Path) -> ScheduleExecution:
    """A schedule whose only attempt (max_attempts 1) failed: its job is buried."""
    execution = _due_soon(
        pb,
        job_class="tests.jobs:fail_before_attempt",
        args=[str(path), 2],
        max_attempts=1,
    )
    key = execution.cached_schedule["name"]
    registry = SqlDispatchRegistry(pb.session_factory)

    def buried() -> bool:
        entry = registry.find_dispatch(key, execution.run_at)
        stats = pb.queue.stats_job(execution.beanstalk_job_id)
        return entry is not None and entry.status == "failed" and _state(stats) == "buried"

    with running_worker(pb, concurrency=1):
        _wait_for(buried, timeout=20)
    return execution


def _state(stats: dict[str, Any] | None) -> str | None:
    return None if stats is None else str(stats.get("state"))


def _history(pb: Postburner, execution: ScheduleExecution) -> list[Any]:
    records = HistoryStore(pb.session_factory).get_by_job_id(str(execution.id))
    return sorted(records, key=lambda record: record.attempt)


def test_a_buried_job_is_listed_with_its_reason_and_kicked_by_hand_is_buried_again(
    make_postburner: MakePostburner, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pb = make_postburner()
    attempts = tmp_path / "attempts.txt"
    execution = _failed_occurrence(pb, attempts)
    key = execution.cached_schedule["name"]

    [row] = buried_jobs(pb)
    assert (row["job_id"], row["key"]) == (execution.beanstalk_job_id, key)
    assert row["run_at"] == execution.run_at.isoformat()
    assert "the downstream service said no" in row["reason"]
    capsys.readouterr()
    assert _cli(pb, "buried", "--json") == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed == row and listed["tube"] == pb.queue.tube("default")
    assert _cli(pb, "buried") == 0
    assert f"job {execution.beanstalk_job_id}  {key}" in capsys.readouterr().out

    # Kicked by hand (not a retry): the worker buries it again and runs nothing.
    assert pb.queue.kick_job(execution.beanstalk_job_id)
    with running_worker(pb, concurrency=1) as worker:
        _wait_for(lambda: worker.outcomes.get("duplicate", 0) >= 1, timeout=20)
    assert _state(pb.queue.stats_job(execution.beanstalk_job_id)) == "buried"
    assert _attempts(attempts) == ["1"]
    assert [(r.attempt, r.status) for r in _history(pb, execution)] == [(1, "failed")]


def test_retry_runs_a_failed_occurrence_again_as_its_next_attempt_marked_retry(
    make_postburner: MakePostburner, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pb = make_postburner()
    attempts = tmp_path / "attempts.txt"
    execution = _failed_occurrence(pb, attempts)
    key = execution.cached_schedule["name"]

    assert _cli(pb, "retry", "--schedule", key, "--at", execution.run_at.isoformat()) == 0
    assert "queued as its next attempt" in capsys.readouterr().out
    with running_worker(pb, concurrency=1):
        _wait_for(lambda: _history(pb, execution)[-1].status == "completed", timeout=20)
        time.sleep(0.3)  # a third run, were there one, would have started by now
    assert _attempts(attempts) == ["1", "2"]
    records = _history(pb, execution)
    assert [(r.attempt, r.status, r.trigger) for r in records] == [
        (1, "failed", "schedule"),
        (2, "completed", "retry"),
    ]
    entry = SqlDispatchRegistry(pb.session_factory).find_dispatch(key, execution.run_at)
    assert entry is not None
    assert (entry.status, entry.attempt, entry.trigger) == ("completed", 2, "retry")
    assert buried_jobs(pb) == []


def test_retry_of_an_occurrence_that_did_not_fail_is_refused_and_writes_nothing(
    make_postburner: MakePostburner, capsys: pytest.CaptureFixture[str]
) -> None:
    pb = make_postburner()
    execution = _due_soon(pb, seconds_ahead=3600)
    key = execution.cached_schedule["name"]
    registry = SqlDispatchRegistry(pb.session_factory)
    missed = datetime(2025, 1, 1, tzinfo=UTC)
    registry.record_missed(key, [missed], now=datetime.now(UTC))
    with pb.session() as session:
        schedule = session.get_one(Schedule, execution.schedule_id)
        with pytest.raises(PostburnerError, match="no dispatch-log row"):
            schedule.retry(execution.run_at)
        with pytest.raises(PostburnerError, match="status missed"):
            schedule.retry(missed)
    entry = registry.find_dispatch(key, missed)
    assert entry is not None and (entry.status, entry.trigger) == ("missed", "schedule")
    assert registry.find_dispatch(key, execution.run_at) is None

    capsys.readouterr()
    assert _cli(pb, "retry", "--schedule", key, "--at", missed.isoformat()) == 1
    assert "only a failed occurrence is retried" in capsys.readouterr().err
    unknown = f"no-{uuid.uuid4().hex[:6]}"
    assert _cli(pb, "retry", "--schedule", unknown, "--at", missed.isoformat()) == 1
    assert _cli(pb, "retry", "--schedule", key, "--at", "soon") == 2
