"""The CLI's errors: one line on stderr, no traceback, exit 2 for usage and 1 for operations;
secrets masked wherever settings are shown; the metrics listener's address."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from postburner_py import Postburner
from postburner_py.errors import QueueUnavailableError
from postburner_py.worker.process import run_worker
from tests.factories import create_schedule
from tests.servers import free_port
from tests.test_cli import Cli, _cli

MakePostburner = Callable[..., Postburner]
DEAD_BEANSTALKD = "beanstalk://127.0.0.1:1"
#: A process started against a server that is down must give up within this (seconds).
BOUNDED = 30.0


def _offline(tmp_path: Path) -> Cli:
    """A CLI pointed at servers that are not there (commands that fail before using them)."""
    return _cli(tmp_path, f"sqlite:///{tmp_path / 'unused.sqlite3'}", DEAD_BEANSTALKD, "t")


def _assert_one_line(result: Any, code: int, *words: str) -> str:
    lines = result.stderr.splitlines()
    assert result.returncode == code, result.stderr
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return str(lines[0])


# --- variables --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "argv"),
    [
        ("POSTBURNER_CONCURRENCY", ("worker", "--burst")),
        ("POSTBURNER_PREFETCH", ("worker", "--burst")),
        ("POSTBURNER_METRICS_PORT", ("watchdog",)),
        ("POSTBURNER_WATCHDOG_INTERVAL", ("watchdog",)),
        ("POSTBURNER_WATCHDOG_INTERVAL", ("dev",)),
        ("POSTBURNER_CATCH_UP_WINDOW", ("status",)),
    ],
)
@pytest.mark.parametrize("value", ["abc", "nan", "-1", "1e400", "1e12"])
def test_a_bad_numeric_variable_is_one_line_naming_it_and_exits_2(
    tmp_path: Path, variable: str, argv: tuple[str, ...], value: str
) -> None:
    run = _offline(tmp_path)
    run.env[variable] = value
    _assert_one_line(run(*argv), 2, variable, repr(value))


def test_a_bad_variable_does_not_break_commands_that_do_not_use_it(tmp_path: Path) -> None:
    run = _offline(tmp_path)
    for variable in ("POSTBURNER_CONCURRENCY", "POSTBURNER_METRICS_PORT", "POSTBURNER_PREFETCH"):
        run.env[variable] = "abc"
    run.env["POSTBURNER_WATCHDOG_INTERVAL"] = "abc"
    result = run("explain", "@daily")
    assert (result.returncode, result.stderr) == (0, "")


# --- options ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (("--catch-up-window", "inf", "status"), ("--catch-up-window", "'inf'")),
        (("--catch-up-window", "1e20", "status"), ("--catch-up-window", "'1e20'")),
        (("--catch-up-window", "nan", "status"), ("--catch-up-window", "'nan'")),
        (("--catch-up-window", "-1", "status"), ("--catch-up-window", "'-1'")),
        (("--database-url", "nonsense://", "status"), ("database_url", "nonsense://")),
        (("--database-url", "not a url", "status"), ("database_url",)),
        (("--beanstalkd-url", "nonsense", "status"), ("beanstalkd_url",)),
        (("--namespace", "-bad", "status"), ("namespace",)),
        (("--node-id", "n" * 300, "status"), ("node_id", "300 characters")),
        (("watchdog", "--metrics-port", "70000"), ("--metrics-port", "65535")),
        (("watchdog", "--metrics-port", "0"), ("--metrics-port",)),
        (("watchdog", "--interval", "nan"), ("--interval",)),
        (("watchdog", "--interval", "inf"), ("--interval",)),
        (("watchdog", "--interval", "0"), ("--interval",)),
        (("watchdog", "--interval", "1e20"), ("--interval",)),
        (("worker", "--concurrency", "100000"), ("--concurrency",)),
        (("worker", "--prefetch", "-1"), ("--prefetch",)),
        (("worker", "--queue", "no spaces allowed"), ("queue", "no spaces allowed")),
        (("history", "--from", "0001-01-01T00:00:00+01:00"), ("--from", "years 1-9999")),
        (("history", "--to", "9999-12-31T23:59:59-01:00"), ("--to", "years 1-9999")),
        (("dispatches", "--since", "0001-01-01T00:30:00+01:00"), ("--since",)),
        (("skip", "--schedule", "x", "--at", "0001-01-01T00:00:00+05:00"), ("--at",)),
        (("history", "--limit", "1" + "0" * 30), ("--limit",)),
        (("next", "@daily", "--count", "1000000000"), ("--count",)),
        (("skip", "1" + "0" * 30), ("execution_id",)),
        (("next", "@daily", "--tz", "Mars/Olympus"), ("timezone", "Mars/Olympus")),
        (("frobnicate",), ("invalid choice",)),
    ],
)
def test_a_usage_error_is_one_line_and_exits_2(
    tmp_path: Path, argv: tuple[str, ...], words: tuple[str, ...]
) -> None:
    _assert_one_line(_offline(tmp_path)(*argv), 2, *words)


# --- servers down -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv", [("worker", "--burst"), ("worker",), ("watchdog", "--interval", "1"), ("tick",)]
)
def test_a_process_started_with_beanstalkd_down_exits_1_with_one_line(
    tmp_path: Path, sqlite_url: str, argv: tuple[str, ...]
) -> None:
    run = _cli(tmp_path, sqlite_url, DEAD_BEANSTALKD, "t")
    started = time.monotonic()
    result = run(*argv)
    assert time.monotonic() - started < BOUNDED
    _assert_one_line(result, 1, "Beanstalkd", "127.0.0.1:1")


@pytest.mark.parametrize(
    "argv", [("worker", "--burst"), ("worker",), ("watchdog", "--interval", "1"), ("tick",)]
)
def test_a_process_started_with_the_database_down_exits_1_with_one_line(
    tmp_path: Path, beanstalkd_server: Any, argv: tuple[str, ...]
) -> None:
    dead = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/nothing"
    run = _cli(tmp_path, dead, str(beanstalkd_server.url), "t")
    started = time.monotonic()
    result = run(*argv)
    assert time.monotonic() - started < BOUNDED
    _assert_one_line(result, 1, "connection")


def test_a_burst_worker_whose_beanstalkd_is_gone_raises_instead_of_waiting(
    make_postburner: MakePostburner, sqlite_url: str, beanstalkd_factory: Callable[..., Any]
) -> None:
    server = beanstalkd_factory()
    pb = make_postburner(database_url=sqlite_url, beanstalkd_url=str(server.url))
    server.stop()
    started = time.monotonic()
    with pytest.raises(QueueUnavailableError):
        run_worker(pb, burst=True)
    assert time.monotonic() - started < BOUNDED


# --- secrets ----------------------------------------------------------------------------------


def test_settings_never_show_the_secret_or_the_database_password() -> None:
    pb = Postburner(
        database_url="postgresql+psycopg://app:hunter22@127.0.0.1:1/app",
        beanstalkd_url=DEAD_BEANSTALKD,
        secret="the-signing-secret",
        allowed_job_prefixes="tests.jobs:",
    )
    try:
        for shown in (repr(pb.settings), str(pb.settings), f"{pb.settings}", repr(pb)):
            assert "hunter22" not in shown and "the-signing-secret" not in shown, shown
        assert "app:***@127.0.0.1" in repr(pb.settings) and "secret='***'" in repr(pb.settings)
        assert pb.settings.secret == "the-signing-secret"  # masked when shown, not changed
    finally:
        pb.dispose()


def test_an_error_quoting_the_database_url_masks_its_password(tmp_path: Path) -> None:
    run = _offline(tmp_path)
    result = run("--database-url", "postgresql://app:hunter22@db:notaport/app", "status")
    line = _assert_one_line(result, 2, "database_url", "app:***@db")
    assert "hunter22" not in result.stderr + result.stdout, line


def test_status_json_masks_the_database_password(
    postgres_url: str, beanstalkd_server: Any, namespace: str, tmp_path: Path
) -> None:
    # The test server trusts every connection, so any password gets in.
    with_password = make_url(postgres_url).set(password="hunter22").render_as_string(False)
    run = _cli(tmp_path, with_password, str(beanstalkd_server.url), namespace)
    result = run("status", "--json")
    assert "hunter22" not in result.stdout + result.stderr
    assert "test-secret" not in result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["database"] == "ok"
    assert ":***@" in report["settings"]["database_url"]
    text = run("status")
    assert "hunter22" not in text.stdout + text.stderr


# --- the metrics listener ---------------------------------------------------------------------


def test_the_metrics_server_listens_on_loopback_unless_told_otherwise() -> None:
    from postburner_py.watchdog.process import WatchdogMetrics

    servers = [
        WatchdogMetrics().serve(free_port()),
        WatchdogMetrics().serve(free_port(), "0.0.0.0"),
    ]
    try:
        assert [server.server_address[0] for server in servers] == ["127.0.0.1", "0.0.0.0"]
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def test_the_watchdog_command_passes_metrics_host_to_the_listener(
    tmp_path: Path, sqlite_url: str
) -> None:
    run = _cli(tmp_path, sqlite_url, DEAD_BEANSTALKD, "t")
    result = run("watchdog", "--metrics-port", "9", "--metrics-host", "203.0.113.7")
    # Beanstalkd is down, so it stops before listening; the option itself is accepted.
    _assert_one_line(result, 1, "Beanstalkd")
    assert "--metrics-host" in run("watchdog", "--help").stdout


def test_status_of_a_row_that_cannot_be_planned_exits_1_naming_it(
    make_postburner: MakePostburner,
    postgres_url: str,
    beanstalkd_server: Any,
    namespace: str,
    tmp_path: Path,
) -> None:
    from sqlalchemy import text

    pb = make_postburner(database_url=postgres_url)
    create_schedule(pb, name="fine")
    create_schedule(pb, name="broken")
    with pb.session() as session:
        session.execute(
            text("UPDATE postburner_schedules SET timezone = 'Mars/Olympus' WHERE name = 'broken'")
        )
        session.commit()
    run = _cli(tmp_path, postgres_url, str(beanstalkd_server.url), namespace)
    status = run("status")
    assert status.returncode == 1
    [warning] = [
        line for line in status.stdout.splitlines() if "broken" in line and "WARNING" in line
    ]
    assert "cannot be planned" in warning and "Mars/Olympus" in warning
    _assert_one_line(run("next", "--schedule", "broken"), 1, "'broken'", "Mars/Olympus")
    listing = run("schedules", "list")
    assert listing.returncode == 0, listing.stderr
    [row] = [line for line in listing.stdout.splitlines() if line.startswith("broken")]
    assert "INVALID" in row and "Mars/Olympus" in row
    assert run("next", "--schedule", "fine").returncode == 0
