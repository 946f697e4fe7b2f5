"""The ``postburner`` command line, run as a real subprocess against real servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from postburner_py import Postburner, Schedule, ScheduleExecution
from postburner_py.cli.admin import STARTER_SCHEDULES
from postburner_py.store.dispatch_log import SqlDispatchRegistry
from postburner_py.store.history import HistoryStore
from tests.servers import free_port

MakePostburner = Callable[..., Postburner]
REPO = Path(__file__).resolve().parent.parent


@dataclass
class Cli:
    """Runs ``python -m postburner_py`` with the test's servers in its environment."""

    env: dict[str, str]
    cwd: Path

    def __call__(self, *argv: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "postburner_py", *argv],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "Traceback" not in result.stderr, result.stderr
        return result

    def json(self, *argv: str) -> Any:
        result = self(*argv, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


def _cli(tmp_path: Path, database_url: str, beanstalkd_url: str, namespace: str) -> Cli:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTBURNER_")}
    env.update(
        POSTBURNER_DATABASE_URL=database_url,
        POSTBURNER_BEANSTALKD_URL=beanstalkd_url,
        POSTBURNER_NAMESPACE=namespace,
        POSTBURNER_SECRET="test-secret",
        POSTBURNER_ALLOWED_JOB_PREFIXES="tests.jobs:,m:,app:",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    return Cli(env, tmp_path)


@pytest.fixture
def cli(postgres_url: str, beanstalkd_server: Any, namespace: str, tmp_path: Path) -> Cli:
    return _cli(tmp_path, postgres_url, str(beanstalkd_server.url), namespace)


@pytest.fixture
def pb(make_postburner: MakePostburner, postgres_url: str) -> Postburner:
    """The test's own view of the database the CLI writes to."""
    return make_postburner(database_url=postgres_url)


def _schedule_file(tmp_path: Path, *names: str, cron: str = "0 * * * *") -> Path:
    jobs = [{"key": name, "job_class": "tests.jobs:record_run", "cron": cron} for name in names]
    path = tmp_path / "schedules.yml"
    path.write_text(yaml.safe_dump({"defaults": {"jobs": jobs}}), encoding="utf-8")
    return path


def _live_execution(pb: Postburner, name: str) -> ScheduleExecution:
    with pb.session() as session:
        execution = session.scalar(
            select(ScheduleExecution)
            .join(Schedule, Schedule.id == ScheduleExecution.schedule_id)
            .where(Schedule.name == name, ScheduleExecution.status == "scheduled")
        )
    assert execution is not None
    return execution


# --- commands without servers -----------------------------------------------------------------


def test_help_lists_every_command_and_the_variables(tmp_path: Path) -> None:
    run = _cli(tmp_path, "sqlite:///unused.sqlite3", "beanstalk://127.0.0.1:1", "t")
    result = run("--help")
    assert result.returncode == 0
    for command in ("init", "migrate", "status", "sync", "schedules", "next", "explain", "skip"):
        assert command in result.stdout
    for variable in ("POSTBURNER_DATABASE_URL", "POSTBURNER_BEANSTALKD_URL", "POSTBURNER_SECRET"):
        assert variable in result.stdout
    assert "POSTBURNER_ENV" in run("sync", "--help").stdout


def test_init_writes_the_starter_files_and_never_overwrites(tmp_path: Path) -> None:
    run = _cli(tmp_path, "sqlite:///unused.sqlite3", "beanstalk://127.0.0.1:1", "t")
    first = run("init", "--dir", "project")
    assert first.returncode == 0, first.stderr
    assert "POSTBURNER_DATABASE_URL=" in (tmp_path / "project" / "postburner.env").read_text()
    assert (tmp_path / "project" / "schedules.yml").read_text() == STARTER_SCHEDULES
    (tmp_path / "project" / "schedules.yml").write_text("# mine\n")
    second = run("init", "--dir", "project")
    assert second.returncode == 1
    assert "postburner.env already exists" in second.stderr
    assert (tmp_path / "project" / "schedules.yml").read_text() == "# mine\n"


def test_explain_describes_macros_and_fields(tmp_path: Path) -> None:
    run = _cli(tmp_path, "sqlite:///unused.sqlite3", "beanstalk://127.0.0.1:1", "t")
    daily = run("explain", "@daily")
    sentence, policy = daily.stdout.strip().splitlines()
    assert (daily.returncode, sentence) == (0, "At 00:00 (@daily = 0 0 * * *)")
    assert "dst_gap=shift" in policy and "dst_fold=first" in policy
    sentence, policy = run("explain", "*/15 * * * *").stdout.strip().splitlines()
    assert (sentence, policy.startswith("DST: hourly or faster")) == ("Every 15 minutes", True)


def test_next_prints_fire_times_in_the_given_timezone(tmp_path: Path) -> None:
    run = _cli(tmp_path, "sqlite:///unused.sqlite3", "beanstalk://127.0.0.1:1", "t")
    times = run.json("next", "0 9 * * *", "--count", "3", "--tz", "Europe/Prague")
    parsed = [datetime.fromisoformat(text) for text in times]
    assert len(parsed) == 3
    assert all(point.hour == 9 and point.minute == 0 for point in parsed)
    assert parsed[1] - parsed[0] in (timedelta(hours=23), timedelta(hours=24), timedelta(hours=25))


def test_next_and_explain_show_the_dst_policy_they_were_given(tmp_path: Path) -> None:
    run = _cli(tmp_path, "sqlite:///unused.sqlite3", "beanstalk://127.0.0.1:1", "t")
    shown = run("next", "30 2 * * *", "--tz", "Europe/Prague", "--count", "1", "--dst-fold", "both")
    explained = run("explain", "0 18 * * FRIL", "--dst-gap", "skip")

    assert shown.returncode == explained.returncode == 0
    assert "dst_fold=both" in shown.stdout.splitlines()[-1]
    assert explained.stdout.splitlines() == [
        "At 18:00, on the last Friday of the month",
        "DST: a skipped time does not run that day (dst_gap=skip), a repeated time runs at "
        "its first occurrence (dst_fold=first)",
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("next",), "give a cron expression or --schedule NAME"),
        (("next", "61 * * * *"), "cron: '61 * * * *' is not a valid cron expression"),
        (("next", "@daily", "--count", "0"), "--count: must be >= 1"),
        (("next", "--schedule", "x", "--dst-gap", "skip"), "a schedule has its own"),
        (("next", "@daily", "--dst-fold", "twice"), "invalid choice: 'twice'"),
        (("explain", "0 9 * * 1 30"), "write '30 0 9 * * 1'"),
        (("skip",), "give EXECUTION_ID, or --schedule NAME --at ISO"),
        (("skip", "--schedule", "x", "--at", "tomorrow"), "--at 'tomorrow' is not ISO-8601"),
        (("history", "--from", "2025-01-01T00:00:00"), "has no UTC offset"),
        (("dispatches", "--key", "a", "--node", "b"), "give --key or --node, not both"),
        (("frobnicate",), "invalid choice: 'frobnicate'"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    tmp_path: Path, argv: tuple[str, ...], message: str
) -> None:
    run = _cli(tmp_path, "sqlite:///unused.sqlite3", "beanstalk://127.0.0.1:1", "t")
    result = run(*argv)
    assert result.returncode == 2
    assert message in result.stderr


# --- status -----------------------------------------------------------------------------------


def test_status_reports_schedules_with_their_last_outcome(
    cli: Cli, pb: Postburner, tmp_path: Path
) -> None:
    assert cli("sync", str(_schedule_file(tmp_path, "report", "quiet"))).returncode == 0
    fire_time = datetime(2025, 1, 31, 10, tzinfo=UTC)
    registry = SqlDispatchRegistry(pb.session_factory, node_id="worker-1")
    claim = registry.claim("report", fire_time, lease_seconds=60, max_attempts=3, now=fire_time)
    registry.fail("report", fire_time, attempt=claim.attempt, now=fire_time)
    history = HistoryStore(pb.session_factory)
    started = history.record_start(
        job_id="1", task_identifier="tests.jobs:record_run", worker_id="worker-1",
        schedule_name="report", run_at=fire_time,
    )  # fmt: skip
    history.record_failure(started, worker_id="worker-1", execution_time_ms=5, error="boom")

    result = cli("status", "--json")
    report = json.loads(result.stdout)
    # No worker, no watchdog and a failed last occurrence: unhealthy, each named.
    assert (result.returncode, report["healthy"]) == (1, False)
    assert any(problem.startswith("schedule 'report'") for problem in report["problems"])
    rows = {row["name"]: row for row in report["schedules"]}
    assert rows["report"]["last_dispatch"]["status"] == "failed"
    assert rows["report"]["last_dispatch"]["fire_time"] == fire_time.isoformat()
    assert rows["report"]["last_run"]["error"] == "boom"
    assert rows["quiet"]["last_dispatch"] is None
    assert rows["quiet"]["next_run_at"] is not None
    assert report["queues"]["default"]["delayed"] == 2
    text = cli("status")
    assert text.returncode == 1
    assert "2025-01-31T10:00:00+00:00 failed (error: boom)" in text.stdout


def test_status_with_beanstalkd_down_warns_and_exits_1(
    postgres_url: str, beanstalkd_factory: Callable[..., Any], namespace: str, tmp_path: Path
) -> None:
    server = beanstalkd_factory()
    server.stop()
    run = _cli(tmp_path, postgres_url, str(server.url), namespace)
    result = run("status")
    assert result.returncode == 1
    assert "WARNING: Beanstalkd does not answer" in result.stdout
    as_json = run("status", "--json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["beanstalkd"] == "unreachable"
    assert "WARNING: Beanstalkd does not answer" in as_json.stderr


def test_status_with_the_database_down_warns_and_exits_1(
    beanstalkd_server: Any, namespace: str, tmp_path: Path
) -> None:
    dead = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/nothing"
    result = _cli(tmp_path, dead, str(beanstalkd_server.url), namespace)("status")
    assert result.returncode == 1
    assert "WARNING: database: unreachable" in result.stdout


# --- sync and schedules -----------------------------------------------------------------------


def test_sync_dry_run_sync_and_schedules_list(cli: Cli, tmp_path: Path) -> None:
    path = str(_schedule_file(tmp_path, "a", "b"))
    preview = cli("sync", path, "--dry-run")
    assert preview.returncode == 0, preview.stderr
    assert "2 to create" in preview.stdout
    assert "nothing written" in preview.stdout
    assert cli.json("schedules", "list") == []

    plan = cli.json("sync", path)
    assert [(c["action"], c["name"]) for c in plan["changes"]] == [("create", "a"), ("create", "b")]
    rows = cli.json("schedules", "list")
    assert [(row["name"], row["enabled"]) for row in rows] == [("a", True), ("b", True)]
    assert all(row["next_run_at"] for row in rows)

    again = cli.json("sync", str(_schedule_file(tmp_path, "a")))
    assert [(c["action"], c["name"]) for c in again["changes"]] == [("disable", "b")]
    assert again["changes"][0]["queued"]["new"] is None


def test_sync_of_an_invalid_file_exits_2_naming_the_entry(cli: Cli, tmp_path: Path) -> None:
    path = _schedule_file(tmp_path, "good", "reports:daily", cron="0 25 * * *")
    result = cli("sync", str(path))
    assert result.returncode == 2
    assert "defaults.jobs[0] (key 'good'): cron: '0 25 * * *'" in result.stderr
    assert cli.json("schedules", "list") == []


def test_schedules_disable_and_enable_by_name(cli: Cli, pb: Postburner) -> None:
    from tests.factories import create_schedule

    create_schedule(pb, name="report")  # from code: a file's schedules are the file's to switch
    disabled = cli("schedules", "disable", "report")
    assert disabled.returncode == 0
    assert disabled.stdout.strip() == "schedule report disabled; next queued: nothing"
    enabled = cli("schedules", "enable", "report")
    assert enabled.returncode == 0
    run_at = _live_execution(pb, "report").run_at
    assert enabled.stdout.strip() == f"schedule report enabled; next queued: {run_at.isoformat()}"
    missing = cli("schedules", "enable", "nope")
    assert (missing.returncode, missing.stderr.strip()) == (
        1,
        "postburner: error: no schedule named 'nope'",
    )


def test_next_of_a_schedule_uses_its_timezone(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "s.yml"
    job = {"key": "r", "job_class": "m:f", "cron": "0 9 * * *", "timezone": "Asia/Tokyo"}
    path.write_text(yaml.safe_dump({"defaults": {"jobs": [job]}}))
    assert cli("sync", str(path)).returncode == 0
    [first] = cli.json("next", "--schedule", "r", "--count", "1")
    assert first.endswith("T09:00:00+09:00")


# --- skip -------------------------------------------------------------------------------------


def test_skip_by_id_and_by_time_prints_what_is_queued_next(
    cli: Cli, pb: Postburner, tmp_path: Path
) -> None:
    assert cli("sync", str(_schedule_file(tmp_path, "report"))).returncode == 0
    first = _live_execution(pb, "report")
    by_id = cli("skip", str(first.id))
    assert by_id.returncode == 0, by_id.stderr
    second = _live_execution(pb, "report")
    assert second.run_at == first.run_at + timedelta(hours=1)
    assert f"execution {first.id} at {first.run_at.isoformat()} skipped" in by_id.stdout
    assert f"next queued: {second.run_at.isoformat()}" in by_id.stdout

    by_time = cli("skip", "--schedule", "report", "--at", second.run_at.isoformat())
    assert by_time.returncode == 0, by_time.stderr
    assert f"execution {second.id} at {second.run_at.isoformat()} skipped" in by_time.stdout
    again = cli("skip", str(first.id))
    assert again.returncode == 1
    assert "not skipped" in again.stdout


# --- history and dispatches -------------------------------------------------------------------


def test_history_and_dispatches_filter_and_print_json(cli: Cli, pb: Postburner) -> None:
    base = datetime(2025, 3, 1, 12, tzinfo=UTC)
    history = HistoryStore(pb.session_factory)
    registry = SqlDispatchRegistry(pb.session_factory, node_id="node-a")
    for minute, task in enumerate(("app:a", "app:b", "app:a")):
        at = base + timedelta(minutes=minute)
        started = history.record_start(
            job_id=str(minute), task_identifier=task, worker_id="w", started_at=at
        )
        history.record_completion(started, worker_id="w", execution_time_ms=1, finished_at=at)
        claim = registry.claim(task, at, lease_seconds=60, max_attempts=1, now=at)
        registry.complete(task, at, attempt=claim.attempt, now=at)

    runs = cli.json("history", "--task", "app:a", "--status", "completed")
    assert [run["job_id"] for run in runs] == ["2", "0"]
    window = cli.json(
        "history", "--from", (base + timedelta(minutes=1)).isoformat(), "--limit", "1"
    )
    assert [run["job_id"] for run in window] == ["2"]
    assert len(cli("history").stdout.splitlines()) == 3

    by_key = cli.json("dispatches", "--key", "app:b")
    assert [(d["key"], d["status"], d["node_id"]) for d in by_key] == [
        ("app:b", "completed", "node-a")
    ]
    everything = cli.json("dispatches", "--until", (base + timedelta(minutes=2)).isoformat())
    assert [d["fire_time"] for d in everything] == [
        (base + timedelta(minutes=1)).isoformat(),
        base.isoformat(),
    ]
    assert cli.json("dispatches", "--node", "node-b") == []
