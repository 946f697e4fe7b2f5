"""CLI commands as real subprocesses: worker, watchdog, tick, cancel, migrate."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, insert, select

from postburner_py import Postburner, ScheduleExecution
from postburner_py.store.history import HistoryStore
from postburner_py.store.models import Schedule
from tests.factories import schedule_attributes
from tests.test_cli import Cli, cli, pb

__all__ = ["cli", "pb"]  # fixtures shared with tests/test_cli.py


def test_worker_burst_runs_what_is_due_and_exits_zero(cli: Cli, pb: Postburner) -> None:
    pb.enqueue_at(datetime.now(UTC), "tests.jobs:record_run", ["cli"], job_id="cli:burst")
    result = cli("worker", "--burst", "--concurrency", "2", "--prefetch", "1")
    assert result.returncode == 0, result.stderr
    [record] = HistoryStore(pb.session_factory).get_by_job_id("cli:burst")
    assert record.status == "completed"


def test_tick_materialises_new_schedules_and_prints_its_counts(cli: Cli, pb: Postburner) -> None:
    with pb.session() as session:
        session.execute(insert(Schedule), [_row(f"bulk-{n}") for n in range(3)])
        session.commit()
    report = json.loads(cli("tick", "--json").stdout)
    assert report["created"] == 3
    with pb.session() as session:
        live = session.scalar(select(func.count()).select_from(ScheduleExecution))
    assert live == 3
    assert "created 0" in cli("tick").stdout


def _row(name: str) -> dict[str, object]:
    attributes = schedule_attributes(name=name)
    attributes.update(
        queue="default",
        priority=65536,
        ttr=60,
        max_attempts=3,
        timezone="UTC",
        catch_up=False,
        enabled=True,
        created_at=datetime.now(UTC),
        updated_at=datetime.now(UTC),
    )
    return attributes


def test_cancel_exits_zero_once_and_one_when_nothing_is_pending(cli: Cli, pb: Postburner) -> None:
    at = datetime.now(UTC) + timedelta(hours=1)
    pb.enqueue_at(at, "tests.jobs:record_run", job_id="cli:cancel")
    first, second = cli("cancel", "cli:cancel"), cli("cancel", "cli:cancel")
    assert (first.returncode, second.returncode) == (0, 1)
    assert "cancelled" in first.stdout and "not pending" in second.stdout


def test_watchdog_passes_then_stops_on_sigterm(cli: Cli, pb: Postburner, tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "postburner_py", "watchdog", "--interval", "1"],
        env=cli.env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not _heartbeats(pb) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _heartbeats(pb) == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        process.kill()
    assert _heartbeats(pb) == 0


def _heartbeats(pb: Postburner) -> int:
    from postburner_py.watchdog.process import WatchdogHeartbeat

    with pb.session() as session:
        return int(session.scalar(select(func.count()).select_from(WatchdogHeartbeat)) or 0)


def test_status_warns_when_no_watchdog_has_passed(cli: Cli) -> None:
    result = cli("status")
    assert result.returncode == 1
    assert "no watchdog has passed" in result.stdout


def test_migrate_creates_the_schema_of_a_new_database_and_is_idempotent(
    cli: Cli, tmp_path: Path
) -> None:
    import sqlite3

    path = tmp_path / "fresh.sqlite3"
    env = dict(cli.env, POSTBURNER_DATABASE_URL=f"sqlite:///{path}")
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, "-m", "postburner_py", "migrate"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
    with sqlite3.connect(path) as database:
        tables = {row[0] for row in database.execute("SELECT name FROM sqlite_master")}
    assert {"postburner_schedules", "postburner_delayed_jobs", "postburner_settings"} <= tables
