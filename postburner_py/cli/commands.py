"""The ``postburner`` command line: parsing and printing only, the work is in the library.

Each command is one ``add_<command>`` function (its options, and its ``_run_<command>``
handler set as the parser's default) in the module of its group: :mod:`.database` (init,
migrate), :mod:`.inspect` (status, next, explain, history, dispatches), :mod:`.schedules`
(sync, schedules), :mod:`.control` (pause, resume), :mod:`.jobs` (skip, cancel),
:mod:`.run_control` (trigger, retry, backfill, buried), :mod:`.processes` (worker, watchdog,
tick, dev). :data:`COMMANDS` lists them all, in the order ``--help`` shows them. What they share
(the connection options, exit codes, argument types) is in :mod:`.parser`. Exit codes: 0
success, 1 operational failure (a server does not answer, a schedule is not found, an action
was refused), 2 usage error (bad options, a bad cron expression, an invalid schedule file).
Errors print one line; ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from postburner_py.cli.control import add_pause, add_resume
from postburner_py.cli.database import add_init, add_migrate
from postburner_py.cli.inspect import (
    add_dispatches,
    add_explain,
    add_history,
    add_next,
    add_status,
)
from postburner_py.cli.jobs import add_cancel, add_skip
from postburner_py.cli.parser import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    CommandParser,
    Handler,
    Parser,
    UsageError,
    add_connection_options,
    subcommands,
)
from postburner_py.cli.processes import add_dev, add_tick, add_watchdog, add_worker
from postburner_py.cli.run_control import add_backfill, add_buried, add_retry, add_trigger
from postburner_py.cli.schedules import add_schedules, add_sync
from postburner_py.errors import PostburnerError

__all__ = [
    "COMMANDS",
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "UsageError",
    "build_parser",
    "main",
    "subcommands",
]

#: Every command, in the order of ``postburner --help``: each adds its parser and handler.
COMMANDS: tuple[Callable[[Any], None], ...] = (
    add_init,
    add_migrate,
    add_status,
    add_sync,
    add_schedules,
    add_next,
    add_explain,
    add_pause,
    add_resume,
    add_skip,
    add_history,
    add_dispatches,
    add_cancel,
    add_trigger,
    add_retry,
    add_backfill,
    add_buried,
    add_worker,
    add_watchdog,
    add_tick,
    add_dev,
)


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
    add_connection_options(parser, suppress=False)
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=CommandParser
    )
    for add in COMMANDS:
        add(commands)
    return parser
