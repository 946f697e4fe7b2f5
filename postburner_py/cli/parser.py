"""What every command shares: the parsers, the connection options, the exit codes, the
argument types, and the Postburner a command works with.

Every command's parser gets the connection options (``--database-url`` ...) through
:class:`CommandParser`, so they work before or after the command name; each also reads a
``POSTBURNER_*`` variable. Exit codes: 0 success, 1 operational failure (a server does not
answer, a schedule is not found, an action was refused), 2 usage error (bad options, a bad
cron expression, an invalid schedule file).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn

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
        add_connection_options(self, suppress=True)


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The sub-command parsers of ``parser`` by name (``{}`` when it has none)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def add_connection_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    group = parser.add_argument_group("connection (before or after the command)")
    for flag, variable, text in _CONNECTION_OPTIONS:
        default: Any = argparse.SUPPRESS if suppress else None
        group.add_argument(flag, default=default, help=f"{text}; env {variable}")
    group.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS if suppress else env_flag("POSTBURNER_DEBUG"),
        help="debug logs and tracebacks; env POSTBURNER_DEBUG=1",
    )


def env_flag(variable: str) -> bool:
    return os.environ.get(variable, "").strip().lower() in _TRUE


def add_json(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--json",
        action="store_true",
        default=env_flag("POSTBURNER_JSON"),
        help="print JSON; env POSTBURNER_JSON=1",
    )


@contextmanager
def postburner(args: argparse.Namespace) -> Iterator[Postburner]:
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


def require_servers(pb: Postburner) -> None:
    """Fail at once, with one line, when the database or Beanstalkd does not answer: a
    long-running process started against a server that is not there exits 1 (its supervisor
    restarts it) instead of waiting forever. Outages after the start are ridden out."""
    with pb.engine.connect() as connection:
        pb.store.ping(connection)
    if not pb.queue.ping():
        raise QueueUnavailableError(
            f"Beanstalkd at {pb.settings.beanstalkd_url} does not answer; start it, or fix "
            "--beanstalkd-url / POSTBURNER_BEANSTALKD_URL"
        )


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return str(value)


def parse_instant(text: str, option: str) -> datetime:
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


def at_least(minimum: int, maximum: int = 2**63 - 1) -> Callable[[str], int]:
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
positive = at_least(1, 100_000)

#: ``--concurrency``: threads of one worker process.
concurrency_count = at_least(1, 1024)

#: ``--prefetch``: an integer >= 0.
not_negative = at_least(0, 10_000)

#: An execution id (a 64-bit key).
row_id = at_least(1)

#: ``--metrics-port``: a TCP port.
tcp_port = at_least(1, 65535)

#: The longest watchdog interval (a day): APScheduler cannot schedule an unbounded one.
MAX_INTERVAL = 86_400.0


def interval_seconds(text: str) -> float:
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


def from_env(variable: str, parse: Callable[[str], Any], fallback: Any) -> Any:
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


def env_list(variable: str) -> list[str]:
    return [item.strip() for item in os.environ.get(variable, "").split(",") if item.strip()]


def add_interval(command: argparse.ArgumentParser, default: float = 60.0) -> None:
    command.add_argument(
        "--interval",
        type=interval_seconds,
        default=None,
        help=f"seconds between passes (default {default:g}); env POSTBURNER_WATCHDOG_INTERVAL",
    )
    command.set_defaults(interval_default=default)


def watchdog_interval(args: argparse.Namespace) -> float:
    given: float | None = args.interval
    if given is not None:
        return given
    value: float = from_env("POSTBURNER_WATCHDOG_INTERVAL", interval_seconds, args.interval_default)
    return value
