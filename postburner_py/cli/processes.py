"""The long-running processes: ``worker``, ``watchdog``, ``tick`` (one pass) and ``dev``."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

from postburner_py.cli.parser import (
    EXIT_FAILURE,
    EXIT_OK,
    add_interval,
    add_json,
    concurrency_count,
    env_list,
    from_env,
    not_negative,
    postburner,
    print_json,
    require_servers,
    tcp_port,
    watchdog_interval,
)

if TYPE_CHECKING:
    from postburner_py.health import HealthOptions


def add_worker(commands: Any) -> None:
    command = commands.add_parser("worker", help="run jobs from Beanstalkd until stopped")
    command.add_argument(
        "--queue",
        action="append",
        default=None,
        help="queue to work (repeatable; default: every queue that has schedules, and "
        "default, followed as schedules change); env POSTBURNER_QUEUES=a,b",
    )
    command.add_argument(
        "--concurrency",
        type=concurrency_count,
        default=None,
        help="jobs run at once (default 1); env POSTBURNER_CONCURRENCY",
    )
    command.add_argument(
        "--prefetch",
        type=not_negative,
        default=None,
        help="jobs held beyond the running ones, admitted ahead of their run_at "
        "(default: the concurrency; 0: none); env POSTBURNER_PREFETCH",
    )
    command.add_argument(
        "--burst", action="store_true", help="exit once no job is ready (scripts, tests)"
    )
    command.add_argument(
        "--shutdown-grace",
        type=_grace,
        default=None,
        metavar="SECONDS",
        help="after SIGTERM, wait at most this long for running jobs and their outcomes, then "
        "exit 1 (default 30); env POSTBURNER_SHUTDOWN_GRACE",
    )
    add_metrics_options(command)
    command.add_argument(
        "--per-schedule-metrics",
        action="store_true",
        default=None,
        help="label the run metrics with each schedule's name too (one series per schedule: "
        "for few schedules); env POSTBURNER_PER_SCHEDULE_METRICS=1",
    )
    add_log_format(command)
    add_health_options(command)
    command.set_defaults(handler=_run_worker)


def add_health_options(command: argparse.ArgumentParser) -> None:
    """``--health-port`` and ``--health-host``: the liveness and readiness probes."""
    command.add_argument(
        "--health-port",
        type=tcp_port,
        default=None,
        help="serve health probes on this port: /livez (the process loop is alive) and "
        "/readyz (database and Beanstalkd answer), 200 or 503; env POSTBURNER_HEALTH_PORT",
    )
    command.add_argument(
        "--health-host",
        default=None,
        help="address the probes listen on (default 127.0.0.1; 0.0.0.0 for a kubelet or "
        "another container); env POSTBURNER_HEALTH_HOST",
    )


def _health(args: argparse.Namespace) -> HealthOptions | None:
    from postburner_py.health import DEFAULT_HEALTH_HOST, HealthOptions

    port = args.health_port or from_env("POSTBURNER_HEALTH_PORT", tcp_port, None)
    if port is None:
        return None
    host = args.health_host or os.environ.get("POSTBURNER_HEALTH_HOST") or DEFAULT_HEALTH_HOST
    return HealthOptions(port=port, host=host)


def add_metrics_options(command: argparse.ArgumentParser) -> None:
    """``--metrics-port`` and ``--metrics-host``, for the worker and the watchdog."""
    command.add_argument(
        "--metrics-port",
        type=tcp_port,
        default=None,
        help="serve Prometheus metrics on this port; env POSTBURNER_METRICS_PORT",
    )
    command.add_argument(
        "--metrics-host",
        default=None,
        help="address the metrics server listens on (default 127.0.0.1; 0.0.0.0 for every "
        "interface, e.g. in a container); env POSTBURNER_METRICS_HOST",
    )


def _metrics_address(args: argparse.Namespace) -> tuple[int | None, str]:
    from postburner_py.metrics import DEFAULT_METRICS_HOST

    port = args.metrics_port or from_env("POSTBURNER_METRICS_PORT", tcp_port, None)
    host = args.metrics_host or os.environ.get("POSTBURNER_METRICS_HOST") or DEFAULT_METRICS_HOST
    return port, host


def add_log_format(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--log-format",
        type=_log_format,
        default=None,
        help="text (default) or json: one JSON object per line with a stable action key "
        "(docs/operations.md); env POSTBURNER_LOG_FORMAT",
    )
    command.add_argument(
        "--log-level",
        type=_log_level,
        default=None,
        help="DEBUG, INFO (default: a line per run start and finish), WARNING (no line "
        "per run: the most jobs per second) or ERROR; env POSTBURNER_LOG_LEVEL",
    )


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _log_level(text: str) -> int:
    import logging

    name = text.strip().upper()
    if name not in _LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"log level: give one of {', '.join(_LOG_LEVELS)}, not {text!r}"
        )
    level: int = logging.getLevelName(name)
    return level


def _log_format(text: str) -> str:
    from postburner_py.logs import parse_log_format

    try:
        return parse_log_format(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def apply_log_format(args: argparse.Namespace) -> None:
    """Write the process's log lines from a writer thread, as text or (``--log-format``, or
    the env) JSON."""
    from postburner_py.logs import configure_logging

    level = args.log_level or from_env("POSTBURNER_LOG_LEVEL", _log_level, None)
    if getattr(args, "debug", False):
        level = None  # --debug already set DEBUG
    log_format = args.log_format or from_env("POSTBURNER_LOG_FORMAT", _log_format, "text")
    configure_logging(log_format, level=level)


def _flag(variable: str) -> bool:
    return os.environ.get(variable, "").strip().lower() in ("1", "true", "yes", "on")


def _grace(text: str) -> float:
    from postburner_py.config import parse_shutdown_grace

    try:
        seconds = parse_shutdown_grace(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds is None:
        raise argparse.ArgumentTypeError("shutdown_grace: give a number of seconds >= 0")
    return seconds


def _run_worker(args: argparse.Namespace) -> int:
    from postburner_py.worker.process import run_worker

    apply_log_format(args)
    metrics_port, metrics_host = _metrics_address(args)
    per_schedule = args.per_schedule_metrics or _flag("POSTBURNER_PER_SCHEDULE_METRICS")
    # No --queue and no POSTBURNER_QUEUES: follow every queue that has schedules.
    queues = args.queue or env_list("POSTBURNER_QUEUES") or None
    concurrency = args.concurrency or from_env("POSTBURNER_CONCURRENCY", concurrency_count, 1)
    prefetch = _prefetch(args.prefetch)
    health = _health(args)
    with postburner(args) as pb:
        for queue in queues or ():
            pb.queue.tube(queue)  # a bad name (option or POSTBURNER_QUEUES) is a usage error
        require_servers(pb)
        return run_worker(
            pb,
            queues=queues,
            concurrency=concurrency,
            prefetch=prefetch,
            burst=args.burst,
            shutdown_grace=args.shutdown_grace,
            health=health,
            metrics_port=metrics_port,
            metrics_host=metrics_host,
            per_schedule_metrics=per_schedule,
        )


def _prefetch(given: int | None) -> int | None:
    if given is not None:
        return given
    value: int | None = from_env("POSTBURNER_PREFETCH", not_negative, None)
    return value


def add_watchdog(commands: Any) -> None:
    command = commands.add_parser("watchdog", help="converge the queue to the database, forever")
    add_interval(command)
    add_metrics_options(command)
    add_log_format(command)
    add_health_options(command)
    command.set_defaults(handler=_run_watchdog)


def _run_watchdog(args: argparse.Namespace) -> int:
    from postburner_py.watchdog.process import run_watchdog

    apply_log_format(args)
    interval = watchdog_interval(args)
    port, host = _metrics_address(args)
    health = _health(args)
    with postburner(args) as pb:
        require_servers(pb)
        return run_watchdog(
            pb, interval=interval, metrics_port=port, metrics_host=host, health=health
        )


def add_tick(commands: Any) -> None:
    command = commands.add_parser("tick", help="run one watchdog pass and print what it did")
    add_json(command)
    command.set_defaults(handler=_run_tick)


def _run_tick(args: argparse.Namespace) -> int:
    from postburner_py.watchdog.process import tick

    with postburner(args) as pb:
        report = tick(pb)
    if args.json:
        print_json(report.as_dict())
    else:
        print(report.describe())
    if report.queue_error is not None:
        print(
            f"postburner: error: {report.queue_error}; the database half of the pass ran, "
            "the queue half waits for Beanstalkd",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    return EXIT_OK


def add_dev(commands: Any) -> None:
    command = commands.add_parser(
        "dev", help="live demo: local beanstalkd, example schedules, watchdog and worker"
    )
    command.add_argument("--schedules", help="schedule file (default examples/schedules.yml)")
    command.add_argument("--env", default="development", help="section of the schedule file")
    add_interval(command, default=10.0)
    add_log_format(command)
    command.set_defaults(handler=_run_dev)


def _run_dev(args: argparse.Namespace) -> int:
    from pathlib import Path

    from postburner_py.cli.dev import run_dev

    apply_log_format(args)
    schedule_file = Path(args.schedules) if args.schedules else None
    interval = watchdog_interval(args)
    with postburner(args) as pb:
        return run_dev(pb, schedule_file=schedule_file, env=args.env, interval=interval)
