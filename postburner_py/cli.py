"""The ``postburner`` command line: parsing and printing only, the work is in the library."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from postburner_py.errors import PostburnerError

if TYPE_CHECKING:
    from postburner_py.app import Postburner

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
Handler = Callable[[argparse.Namespace], int]


class UsageError(PostburnerError):
    """The command line itself is wrong (exit 2)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``postburner`` command; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler: Handler = args.handler
    try:
        return handler(args)
    except (UsageError, ValueError) as exc:
        return _fail(args, exc, EXIT_USAGE)
    except (PostburnerError, OSError, ConnectionError) as exc:
        return _fail(args, exc, EXIT_FAILURE)
    except Exception as exc:
        if _is_database_error(exc):
            return _fail(args, exc, EXIT_FAILURE)
        raise


def _is_database_error(exc: Exception) -> bool:
    from sqlalchemy.exc import SQLAlchemyError

    return isinstance(exc, SQLAlchemyError)


def _fail(args: argparse.Namespace, exc: BaseException, code: int) -> int:
    if args.debug:
        raise exc
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    print(f"postburner: error: {message}", file=sys.stderr)
    return code


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="postburner",
        description="Pre-enqueue delay-queue scheduler on Beanstalkd and PostgreSQL.",
    )
    _add_common(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_migrate(commands)
    _add_status(commands)
    _add_next(commands)
    _add_explain(commands)
    _add_skip(commands)
    return parser


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url", help="SQLAlchemy URL (env POSTBURNER_DATABASE_URL; default SQLite file)"
    )
    parser.add_argument(
        "--beanstalkd-url",
        help="beanstalk://host:port (env POSTBURNER_BEANSTALKD_URL; default 127.0.0.1:11300)",
    )
    parser.add_argument("--namespace", help="tube prefix (env POSTBURNER_NAMESPACE)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")


def _postburner(args: argparse.Namespace) -> Postburner:
    from postburner_py.app import Postburner

    return Postburner(
        database_url=args.database_url,
        beanstalkd_url=args.beanstalkd_url,
        namespace=args.namespace,
    )


def _add_migrate(commands: Any) -> None:
    command = commands.add_parser("migrate", help="upgrade the database schema to the latest")
    command.set_defaults(handler=_run_migrate)


def _run_migrate(args: argparse.Namespace) -> int:
    pb = _postburner(args)
    try:
        pb.migrate()
        print(f"migrated {pb.engine.url.render_as_string(hide_password=True)} to head")
    finally:
        pb.dispose()
    return EXIT_OK


def _add_status(commands: Any) -> None:
    command = commands.add_parser("status", help="settings, server health and schedules")
    command.add_argument("--json", action="store_true", help="print JSON")
    command.set_defaults(handler=_run_status)


def _run_status(args: argparse.Namespace) -> int:
    from postburner_py.status import collect_status, render_status

    pb = _postburner(args)
    try:
        report = collect_status(pb)
    finally:
        pb.dispose()
    print(json.dumps(report, indent=2, default=str) if args.json else render_status(report))
    return EXIT_OK if report["healthy"] else EXIT_FAILURE


def _add_next(commands: Any) -> None:
    command = commands.add_parser("next", help="print upcoming fire times, one ISO-8601 a line")
    command.add_argument("cron", nargs="?", help="cron expression, e.g. '0 9 * * 1'")
    command.add_argument("--schedule", help="a schedule name instead of a cron expression")
    command.add_argument("--count", type=int, default=5, help="how many (default 5)")
    command.add_argument("--tz", default="UTC", help="IANA timezone for a cron (default UTC)")
    command.set_defaults(handler=_run_next)


def _run_next(args: argparse.Namespace) -> int:
    from postburner_py import timegrid

    if args.count < 1:
        raise UsageError("--count must be >= 1")
    now = datetime.now(UTC)
    if args.schedule:
        points = _schedule_upcoming(args, args.schedule, args.count, now)
    elif args.cron:
        grid = timegrid.CronGrid(args.cron, args.tz)
        points = grid.upcoming(args.count, now)
    else:
        raise UsageError("give a cron expression or --schedule NAME")
    for point in points:
        print(point.isoformat())
    return EXIT_OK


def _schedule_upcoming(
    args: argparse.Namespace, name: str, count: int, now: datetime
) -> list[datetime]:
    from sqlalchemy import select

    from postburner_py.models import Schedule

    pb = _postburner(args)
    try:
        with pb.session() as session:
            schedule = session.scalar(select(Schedule).where(Schedule.name == name))
            if schedule is None:
                raise PostburnerError(f"no schedule named {name!r}")
            return schedule.upcoming(count, now)
    finally:
        pb.dispose()


def _add_explain(commands: Any) -> None:
    command = commands.add_parser("explain", help="describe a cron expression in words")
    command.add_argument("cron", help="cron expression, e.g. '*/15 * * * *'")
    command.set_defaults(handler=_run_explain)


def _run_explain(args: argparse.Namespace) -> int:
    from postburner_py.explain import explain_cron

    print(explain_cron(args.cron))
    return EXIT_OK


def _add_skip(commands: Any) -> None:
    command = commands.add_parser("skip", help="skip one occurrence, keep the schedule running")
    command.add_argument("execution_id", nargs="?", type=int, help="execution id to skip")
    command.add_argument("--schedule", help="schedule name (with --at)")
    command.add_argument("--at", help="ISO-8601 instant of the occurrence (with --schedule)")
    command.set_defaults(handler=_run_skip)


def _run_skip(args: argparse.Namespace) -> int:
    from postburner_py.admin import skip_occurrence

    if args.execution_id is None and not (args.schedule and args.at):
        raise UsageError("give EXECUTION_ID, or --schedule NAME --at ISO")
    at = _parse_instant(args.at) if args.at else None
    pb = _postburner(args)
    try:
        result = skip_occurrence(pb, execution_id=args.execution_id, schedule=args.schedule, at=at)
    finally:
        pb.dispose()
    print(result.describe())
    return EXIT_OK if result.skipped else EXIT_FAILURE


def _parse_instant(text: str) -> datetime:
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--at {text!r} is not ISO-8601, e.g. 2025-01-31T10:00:00+00:00") from None
    if instant.tzinfo is None:
        raise UsageError(f"--at {text!r} has no UTC offset; add one, e.g. +00:00")
    return instant.astimezone(UTC)
