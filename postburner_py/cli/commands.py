"""The ``postburner`` command line: parsing and printing only, the work is in the library.

Each command is one ``_add_<command>`` function (its options) and one ``_run_<command>``
handler. Every command's parser gets the connection options (``--database-url`` ...) through
:class:`CommandParser`, so they work before or after the command name; each also reads a
``POSTBURNER_*`` variable. Exit codes: 0 success, 1 operational failure (a server does not
answer, a schedule is not found, an action was refused), 2 usage error (bad options, a bad
cron expression, an invalid schedule file). Errors print one line; ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn
from zoneinfo import ZoneInfo

from postburner_py.config import MAX_CATCH_UP_WINDOW, parse_number
from postburner_py.errors import PostburnerError, QueueUnavailableError

if TYPE_CHECKING:
    from postburner_py.app import Postburner

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
Handler = Callable[[argparse.Namespace], int]
_TRUE = frozenset({"1", "true", "yes", "on"})

#: The connection options: (flag, variable, help). ``None`` as default lets Postburner
#: read the variable itself, so the library and the CLI agree on every setting.
_CONNECTION_OPTIONS = (
    ("--database-url", "POSTBURNER_DATABASE_URL", "SQLAlchemy URL (default SQLite file)"),
    ("--beanstalkd-url", "POSTBURNER_BEANSTALKD_URL", "beanstalk://host:port (127.0.0.1:11300)"),
    ("--namespace", "POSTBURNER_NAMESPACE", "Beanstalkd tube prefix (default postburner)"),
    ("--allowed-job-prefixes", "POSTBURNER_ALLOWED_JOB_PREFIXES", "comma-separated prefixes"),
    ("--secret", "POSTBURNER_SECRET", "HMAC key of job bodies (prefer the variable)"),
    ("--catch-up-window", "POSTBURNER_CATCH_UP_WINDOW", "seconds (default 3600)"),
    ("--node-id", "POSTBURNER_NODE_ID", "name in the dispatch log (default host:pid)"),
)


class UsageError(PostburnerError):
    """The command line itself is wrong (exit 2)."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr and exit 2."""

    def error(self, message: str) -> NoReturn:
        print(f"postburner: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


class CommandParser(Parser):
    """A sub-command parser that also accepts the connection options after the command.

    Its options default to "not given" so they never override what the main parser read.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _add_connection_options(self, suppress=True)


# --- entry point -----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``postburner`` command; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.debug:
        for chatty in ("alembic", "apscheduler"):
            logging.getLogger(chatty).setLevel(logging.WARNING)
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.debug:
            raise
        return _fail(exc, args)


def _fail(exc: Exception, args: argparse.Namespace) -> int:
    """Print one line for ``exc`` (secrets masked); usage errors (bad input) exit 2,
    anything else 1."""
    from postburner_py.config import redact

    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if not isinstance(exc, PostburnerError | OSError | ValueError) and not _is_database_error(exc):
        message = f"{type(exc).__name__}: {message} (run with --debug for the traceback)"
    database_url = args.database_url or os.environ.get("POSTBURNER_DATABASE_URL")
    secret = args.secret or os.environ.get("POSTBURNER_SECRET")
    message = redact(message, database_url=database_url, secret=secret)
    print(f"postburner: error: {message}", file=sys.stderr)
    return EXIT_USAGE if isinstance(exc, UsageError | ValueError) else EXIT_FAILURE


def _is_database_error(exc: Exception) -> bool:
    from sqlalchemy.exc import SQLAlchemyError

    return isinstance(exc, SQLAlchemyError)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    parser = Parser(
        prog="postburner",
        description="Pre-enqueue delay-queue scheduler on Beanstalkd and PostgreSQL.",
        epilog="Options whose help names a POSTBURNER_* variable also read it from the "
        "environment; the command line wins.",
    )
    _add_connection_options(parser, suppress=False)
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=CommandParser
    )
    for add in (
        _add_init,
        _add_migrate,
        _add_status,
        _add_sync,
        _add_schedules,
        _add_next,
        _add_explain,
        _add_skip,
        _add_history,
        _add_dispatches,
        _add_cancel,
        _add_worker,
        _add_watchdog,
        _add_tick,
        _add_dev,
    ):
        add(commands)
    return parser


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The sub-command parsers of ``parser`` by name (``{}`` when it has none)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _add_connection_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    group = parser.add_argument_group("connection (before or after the command)")
    for flag, variable, text in _CONNECTION_OPTIONS:
        default: Any = argparse.SUPPRESS if suppress else None
        group.add_argument(flag, default=default, help=f"{text}; env {variable}")
    group.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS if suppress else _env_flag("POSTBURNER_DEBUG"),
        help="debug logs and tracebacks; env POSTBURNER_DEBUG=1",
    )


def _env_flag(variable: str) -> bool:
    return os.environ.get(variable, "").strip().lower() in _TRUE


def _add_json(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--json",
        action="store_true",
        default=_env_flag("POSTBURNER_JSON"),
        help="print JSON; env POSTBURNER_JSON=1",
    )


@contextmanager
def _postburner(args: argparse.Namespace) -> Iterator[Postburner]:
    """A Postburner configured from the options (and ``POSTBURNER_*``), disposed after use."""
    from postburner_py.app import Postburner

    pb = Postburner(
        database_url=args.database_url,
        beanstalkd_url=args.beanstalkd_url,
        namespace=args.namespace,
        allowed_job_prefixes=args.allowed_job_prefixes,
        secret=args.secret,
        catch_up_window=_catch_up_window(args.catch_up_window),
        node_id=args.node_id,
    )
    try:
        yield pb
    finally:
        pb.dispose()


def _catch_up_window(text: str | None) -> float | None:
    if text is None:
        return None
    limit = MAX_CATCH_UP_WINDOW.total_seconds()
    return parse_number(text, "--catch-up-window", float, 0.0, limit, example="3600")


def _require_servers(pb: Postburner) -> None:
    """Fail at once, with one line, when the database or Beanstalkd does not answer: a
    long-running process started against a server that is not there exits 1 (its supervisor
    restarts it) instead of waiting forever. Outages after the start are ridden out."""
    from sqlalchemy import text

    with pb.engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    if not pb.queue.ping():
        raise QueueUnavailableError(
            f"Beanstalkd at {pb.settings.beanstalkd_url} does not answer; start it, or fix "
            "--beanstalkd-url / POSTBURNER_BEANSTALKD_URL"
        )


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return str(value)


def _parse_instant(text: str, option: str) -> datetime:
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"{option} {text!r} is not ISO-8601, e.g. 2025-01-31T10:00:00+00:00"
        ) from None
    if instant.tzinfo is None:
        raise UsageError(f"{option} {text!r} has no UTC offset; add one, e.g. +00:00")
    try:
        return instant.astimezone(UTC)
    except OverflowError:
        raise UsageError(
            f"{option} {text!r} is outside the years 1-9999 in UTC; give a later (or earlier) "
            "instant, e.g. 2025-01-31T10:00:00+00:00"
        ) from None


def _at_least(minimum: int, maximum: int = 2**63 - 1) -> Callable[[str], int]:
    """An argparse type: a whole number in ``minimum..maximum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        if value > maximum:
            raise argparse.ArgumentTypeError(f"must be <= {maximum}, got {value}")
        return value

    return parse


#: ``--count``, ``--limit``: an integer >= 1 (bounded: each is held in memory).
_positive = _at_least(1, 100_000)
#: ``--concurrency``: threads of one worker process.
_concurrency = _at_least(1, 1024)
#: ``--prefetch``: an integer >= 0.
_not_negative = _at_least(0, 10_000)
#: An execution id (a 64-bit key).
_row_id = _at_least(1)
#: ``--metrics-port``: a TCP port.
_port = _at_least(1, 65535)
#: The longest watchdog interval (a day): APScheduler cannot schedule an unbounded one.
MAX_INTERVAL = 86_400.0


def _interval(text: str) -> float:
    """An argparse type: seconds between watchdog passes, > 0 and at most a day."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= MAX_INTERVAL):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds > 0 and <= {MAX_INTERVAL:.0f}, e.g. 60"
        )
    return value


def _from_env(variable: str, parse: Callable[[str], Any], fallback: Any) -> Any:
    """The value of ``variable`` parsed like its option, or ``fallback`` when unset.

    Read when a command runs (never while the parser is built, so a bad variable cannot
    break unrelated commands); a bad value is a usage error naming the variable.
    """
    text = os.environ.get(variable, "").strip()
    if not text:
        return fallback
    try:
        return parse(text)
    except argparse.ArgumentTypeError as exc:
        raise UsageError(
            f"{variable}={text!r}: {exc}; fix it, or unset it for the default"
        ) from None


# --- init ------------------------------------------------------------------------------------


def _add_init(commands: Any) -> None:
    command = commands.add_parser(
        "init", help="write postburner.env and an example schedules.yml (never overwrites)"
    )
    command.add_argument("--dir", default=".", help="where to write them (default: here)")
    command.set_defaults(handler=_run_init)


def _run_init(args: argparse.Namespace) -> int:
    from postburner_py.cli.admin import write_starter_files

    for path in write_starter_files(args.dir):
        print(f"wrote {path}")
    print("next: edit them, then `postburner migrate` and `postburner sync schedules.yml`")
    return EXIT_OK


# --- migrate ---------------------------------------------------------------------------------


def _add_migrate(commands: Any) -> None:
    command = commands.add_parser("migrate", help="upgrade the database schema to the latest")
    command.set_defaults(handler=_run_migrate)


def _run_migrate(args: argparse.Namespace) -> int:
    with _postburner(args) as pb:
        pb.migrate()
        print(f"migrated {pb.engine.url.render_as_string(hide_password=True)} to head")
    return EXIT_OK


# --- status ----------------------------------------------------------------------------------


def _add_status(commands: Any) -> None:
    command = commands.add_parser(
        "status", help="settings, server health, queues, schedules and their last outcome"
    )
    _add_json(command)
    command.set_defaults(handler=_run_status)


def _run_status(args: argparse.Namespace) -> int:
    from postburner_py.cli.status import collect_status, render_status, warnings

    with _postburner(args) as pb:
        report = collect_status(pb)
    if args.json:
        _print_json(report)
        for line in warnings(report):
            print(f"postburner: {line}", file=sys.stderr)
    else:
        print(render_status(report))
    return EXIT_OK if report["healthy"] else EXIT_FAILURE


# --- sync ------------------------------------------------------------------------------------


def _add_sync(commands: Any) -> None:
    command = commands.add_parser(
        "sync", help="make the database's schedules match a schedule file (YAML)"
    )
    command.add_argument("file", help="the schedule file, e.g. schedules.yml")
    command.add_argument(
        "--env",
        default=None,
        help="section merged over 'defaults'; env POSTBURNER_ENV (default production)",
    )
    command.add_argument(
        "--prune", action="store_true", help="delete schedules the file omits (else disable)"
    )
    command.add_argument(
        "--dry-run", action="store_true", help="print what would change, write nothing"
    )
    _add_json(command)
    command.set_defaults(handler=_run_sync)


def _run_sync(args: argparse.Namespace) -> int:
    from postburner_py.schedules.schedule_file import default_env, sync

    with _postburner(args) as pb:
        plan = sync(
            pb, args.file, env=args.env or default_env(), prune=args.prune, dry_run=args.dry_run
        )
    if args.json:
        _print_json(plan.to_dict())
    else:
        print(plan.describe())
    return EXIT_OK


# --- schedules list | enable | disable --------------------------------------------------------


def _add_schedules(commands: Any) -> None:
    command = commands.add_parser("schedules", help="list, enable or disable schedules")
    actions = command.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="every schedule, next run and last outcome")
    _add_json(listing)
    listing.set_defaults(handler=_run_schedules_list)
    for action, text in (("enable", "enable and queue"), ("disable", "disable and unqueue")):
        one = actions.add_parser(action, help=f"{text} one schedule")
        one.add_argument("name", help="schedule name")
        one.set_defaults(handler=_run_schedules_toggle)


def _run_schedules_list(args: argparse.Namespace) -> int:
    from postburner_py.cli.status import schedule_rows

    with _postburner(args) as pb:
        rows = schedule_rows(pb)
    if args.json:
        _print_json(rows)
        return EXIT_OK
    for row in rows:
        state = "enabled" if row["enabled"] else "disabled"
        last = row["last_dispatch"]
        outcome = f"{last['fire_time']} {last['status']}" if last else "-"
        invalid = f"  INVALID: {row['invalid']}" if row["invalid"] else ""
        print(
            f"{row['name']:<30} {state:<8} {row['spec']:<20} {row['timezone']:<16} "
            f"{row['job_class']:<36} next {row['next_run_at'] or '-'}  last {outcome}{invalid}"
        )
    return EXIT_OK


def _run_schedules_toggle(args: argparse.Namespace) -> int:
    from postburner_py.cli.admin import set_enabled

    with _postburner(args) as pb:
        result = set_enabled(pb, args.name, args.action == "enable")
    print(result.describe())
    return EXIT_OK


# --- next ------------------------------------------------------------------------------------


def _add_next(commands: Any) -> None:
    command = commands.add_parser(
        "next", help="print upcoming fire times of a cron expression or a schedule"
    )
    command.add_argument("cron", nargs="?", help="cron expression, e.g. '0 9 * * 1'")
    command.add_argument("--schedule", help="a schedule name instead of a cron expression")
    command.add_argument("--count", type=_positive, default=5, help="how many (default 5)")
    command.add_argument(
        "--tz",
        default=os.environ.get("POSTBURNER_TZ") or None,
        help="IANA timezone of the cron and of the output (default UTC, or the schedule's); "
        "env POSTBURNER_TZ",
    )
    _add_json(command)
    command.set_defaults(handler=_run_next)


def _run_next(args: argparse.Namespace) -> int:
    from postburner_py.timegrid import grid as timegrid

    if bool(args.cron) == bool(args.schedule):
        raise UsageError("give a cron expression or --schedule NAME (one of them)")
    if args.tz:
        timegrid.validate_timezone(args.tz)
    now = datetime.now(UTC)
    if args.schedule:
        points, zone = _schedule_upcoming(args, now)
    else:
        zone = args.tz or "UTC"
        points = timegrid.CronGrid(args.cron, zone).upcoming(args.count, now)
    shown = [point.astimezone(ZoneInfo(zone)).isoformat() for point in points]
    if args.json:
        _print_json(shown)
    else:
        print("\n".join(shown))
    return EXIT_OK


def _schedule_upcoming(args: argparse.Namespace, now: datetime) -> tuple[list[datetime], str]:
    from sqlalchemy import select

    from postburner_py.schedules.planning import planning
    from postburner_py.store.models import Schedule

    with _postburner(args) as pb, pb.session() as session:
        schedule = session.scalar(select(Schedule).where(Schedule.name == args.schedule))
        if schedule is None:
            raise PostburnerError(f"no schedule named {args.schedule!r}")
        with planning(schedule.name):  # a row written behind the API's back: exit 1
            return schedule.upcoming(args.count, now), args.tz or schedule.timezone


# --- explain ---------------------------------------------------------------------------------


def _add_explain(commands: Any) -> None:
    command = commands.add_parser("explain", help="describe a cron expression in words")
    command.add_argument("cron", help="cron expression, e.g. '*/15 * * * *' or '@daily'")
    command.set_defaults(handler=_run_explain)


def _run_explain(args: argparse.Namespace) -> int:
    from postburner_py.cli.explain import explain_cron

    print(explain_cron(args.cron))
    return EXIT_OK


# --- skip ------------------------------------------------------------------------------------


def _add_skip(commands: Any) -> None:
    command = commands.add_parser("skip", help="skip one occurrence, keep the schedule running")
    command.add_argument("execution_id", nargs="?", type=_row_id, help="execution id to skip")
    command.add_argument("--schedule", help="schedule name (with --at)")
    command.add_argument("--at", help="ISO-8601 instant of the occurrence (with --schedule)")
    command.set_defaults(handler=_run_skip)


def _run_skip(args: argparse.Namespace) -> int:
    from postburner_py.cli.admin import skip_occurrence

    by_id = args.execution_id is not None
    by_time = args.schedule is not None and args.at is not None
    half_a_time = (args.schedule is None) != (args.at is None)
    if by_id == by_time or half_a_time:
        raise UsageError("give EXECUTION_ID, or --schedule NAME --at ISO")
    at = _parse_instant(args.at, "--at") if args.at else None
    with _postburner(args) as pb:
        result = skip_occurrence(pb, execution_id=args.execution_id, schedule=args.schedule, at=at)
    print(result.describe())
    return EXIT_OK if result.skipped else EXIT_FAILURE


# --- history ---------------------------------------------------------------------------------


def _add_history(commands: Any) -> None:
    command = commands.add_parser("history", help="job runs recorded by the workers")
    command.add_argument("--from", dest="from_", help="runs started at or after (ISO-8601)")
    command.add_argument("--to", help="runs started before (ISO-8601)")
    command.add_argument("--task", help="job class (task identifier), e.g. myapp.jobs:report")
    command.add_argument("--status", choices=("started", "completed", "failed", "partial_success"))
    command.add_argument("--limit", type=_positive, default=50, help="at most (default 50)")
    _add_json(command)
    command.set_defaults(handler=_run_history)


def _run_history(args: argparse.Namespace) -> int:
    from postburner_py.store.history import HistoryStore

    start = _parse_instant(args.from_, "--from") if args.from_ else None
    end = _parse_instant(args.to, "--to") if args.to else None
    with _postburner(args) as pb:
        entries = HistoryStore(pb.session_factory).query(
            start, end, task_identifier=args.task, status=args.status, limit=args.limit
        )
    if args.json:
        _print_json(entries)
        return EXIT_OK
    if not entries:
        print("no runs match", file=sys.stderr)
    for entry in entries:
        took = f"{entry.execution_time_ms:.1f} ms" if entry.execution_time_ms is not None else "-"
        error = f"  error: {entry.error_message.splitlines()[0]}" if entry.error_message else ""
        print(
            f"{entry.started_at.isoformat()}  {entry.status:<15} {took:>10}  "
            f"{entry.schedule_name or '-':<24} {entry.task_identifier}  "
            f"attempt {entry.attempt} on {entry.worker_id}{error}"
        )
    return EXIT_OK


# --- dispatches ------------------------------------------------------------------------------


def _add_dispatches(commands: Any) -> None:
    command = commands.add_parser("dispatches", help="the dispatch log: which occurrence ran where")
    command.add_argument("--key", help="one schedule name")
    command.add_argument("--node", help="one node id (worker host:pid)")
    command.add_argument("--status", choices=("dispatched", "completed", "failed", "missed"))
    command.add_argument("--since", help="fire times at or after (ISO-8601)")
    command.add_argument("--until", help="fire times before (ISO-8601)")
    command.add_argument("--limit", type=_positive, default=50, help="at most (default 50)")
    _add_json(command)
    command.set_defaults(handler=_run_dispatches)


def _run_dispatches(args: argparse.Namespace) -> int:
    from postburner_py.cli.admin import list_dispatches

    if args.key and args.node:
        raise UsageError("give --key or --node, not both")
    since = _parse_instant(args.since, "--since") if args.since else None
    until = _parse_instant(args.until, "--until") if args.until else None
    with _postburner(args) as pb:
        entries = list_dispatches(
            pb,
            key=args.key,
            node=args.node,
            status=args.status,
            since=since,
            until=until,
            limit=args.limit,
        )
    if args.json:
        _print_json(entries)
        return EXIT_OK
    if not entries:
        print("no dispatches match", file=sys.stderr)
    for entry in entries:
        print(
            f"{entry.fire_time.isoformat()}  {entry.status:<10} {entry.key:<30} "
            f"attempt {entry.attempt} on {entry.node_id}"
        )
    return EXIT_OK


# --- one-off jobs ----------------------------------------------------------------------------


def _add_cancel(commands: Any) -> None:
    command = commands.add_parser("cancel", help="cancel a pending one-off job by its job_id")
    command.add_argument("job_id", help="the job_id given to enqueue_at")
    command.set_defaults(handler=_run_cancel)


def _run_cancel(args: argparse.Namespace) -> int:
    from postburner_py.schedules.one_off import job_state

    with _postburner(args) as pb:
        cancelled = pb.cancel(args.job_id)
        state = None if cancelled else job_state(pb, args.job_id)
    if cancelled:
        print(f"{args.job_id}: cancelled")
    else:
        told = {None: "no such job", "pending": "already started"}.get(state, f"already {state}")
        print(f"{args.job_id}: not pending ({told})")
    return EXIT_OK if cancelled else EXIT_FAILURE


# --- processes -------------------------------------------------------------------------------


def _add_worker(commands: Any) -> None:
    command = commands.add_parser("worker", help="run jobs from Beanstalkd until stopped")
    command.add_argument(
        "--queue",
        action="append",
        default=None,
        help="queue to work (repeatable; default: default); env POSTBURNER_QUEUES=a,b",
    )
    command.add_argument(
        "--concurrency",
        type=_concurrency,
        default=None,
        help="jobs run at once (default 1); env POSTBURNER_CONCURRENCY",
    )
    command.add_argument(
        "--prefetch",
        type=_not_negative,
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
    command.set_defaults(handler=_run_worker)


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

    queues = args.queue or _env_list("POSTBURNER_QUEUES") or ["default"]
    concurrency = args.concurrency or _from_env("POSTBURNER_CONCURRENCY", _concurrency, 1)
    prefetch = _prefetch(args.prefetch)
    with _postburner(args) as pb:
        for queue in queues:
            pb.queue.tube(queue)  # a bad name (option or POSTBURNER_QUEUES) is a usage error
        _require_servers(pb)
        return run_worker(
            pb,
            queues=queues,
            concurrency=concurrency,
            prefetch=prefetch,
            burst=args.burst,
            shutdown_grace=args.shutdown_grace,
        )


def _prefetch(given: int | None) -> int | None:
    if given is not None:
        return given
    value: int | None = _from_env("POSTBURNER_PREFETCH", _not_negative, None)
    return value


def _env_list(variable: str) -> list[str]:
    return [item.strip() for item in os.environ.get(variable, "").split(",") if item.strip()]


def _add_watchdog(commands: Any) -> None:
    command = commands.add_parser("watchdog", help="converge the queue to the database, forever")
    _add_interval(command)
    command.add_argument(
        "--metrics-port",
        type=_port,
        default=None,
        help="serve Prometheus metrics on this port; env POSTBURNER_METRICS_PORT",
    )
    command.add_argument(
        "--metrics-host",
        default=None,
        help="address the metrics server listens on (default 127.0.0.1; 0.0.0.0 for every "
        "interface, e.g. in a container); env POSTBURNER_METRICS_HOST",
    )
    command.set_defaults(handler=_run_watchdog)


def _add_interval(command: argparse.ArgumentParser, default: float = 60.0) -> None:
    command.add_argument(
        "--interval",
        type=_interval,
        default=None,
        help=f"seconds between passes (default {default:g}); env POSTBURNER_WATCHDOG_INTERVAL",
    )
    command.set_defaults(interval_default=default)


def _watchdog_interval(args: argparse.Namespace) -> float:
    given: float | None = args.interval
    if given is not None:
        return given
    value: float = _from_env("POSTBURNER_WATCHDOG_INTERVAL", _interval, args.interval_default)
    return value


def _run_watchdog(args: argparse.Namespace) -> int:
    from postburner_py.watchdog.process import DEFAULT_METRICS_HOST, run_watchdog

    interval = _watchdog_interval(args)
    port = args.metrics_port or _from_env("POSTBURNER_METRICS_PORT", _port, None)
    host = args.metrics_host or os.environ.get("POSTBURNER_METRICS_HOST") or DEFAULT_METRICS_HOST
    with _postburner(args) as pb:
        _require_servers(pb)
        return run_watchdog(pb, interval=interval, metrics_port=port, metrics_host=host)


def _add_tick(commands: Any) -> None:
    command = commands.add_parser("tick", help="run one watchdog pass and print what it did")
    _add_json(command)
    command.set_defaults(handler=_run_tick)


def _run_tick(args: argparse.Namespace) -> int:
    from postburner_py.watchdog.process import tick

    with _postburner(args) as pb:
        report = tick(pb)
    if args.json:
        _print_json(report.as_dict())
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


def _add_dev(commands: Any) -> None:
    command = commands.add_parser(
        "dev", help="live demo: local beanstalkd, example schedules, watchdog and worker"
    )
    command.add_argument("--schedules", help="schedule file (default examples/schedules.yml)")
    command.add_argument("--env", default="development", help="section of the schedule file")
    _add_interval(command, default=10.0)
    command.set_defaults(handler=_run_dev)


def _run_dev(args: argparse.Namespace) -> int:
    from pathlib import Path

    from postburner_py.cli.dev import run_dev

    schedule_file = Path(args.schedules) if args.schedules else None
    interval = _watchdog_interval(args)
    with _postburner(args) as pb:
        return run_dev(pb, schedule_file=schedule_file, env=args.env, interval=interval)
