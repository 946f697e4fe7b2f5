"""The operator's switch on one schedule: ``postburner pause NAME --reason ...`` and
``postburner resume NAME``."""

from __future__ import annotations

import argparse
from typing import Any

from postburner_py.cli.parser import EXIT_OK, postburner


def add_pause(commands: Any) -> None:
    command = commands.add_parser(
        "pause", help="pause a schedule: no job, its occurrences recorded paused"
    )
    command.add_argument("name", help="schedule name")
    command.add_argument("--reason", default=None, help="why (shown by schedules list)")
    command.set_defaults(handler=_run_pause)


def add_resume(commands: Any) -> None:
    command = commands.add_parser(
        "resume", help="resume a paused schedule at its next grid point after now"
    )
    command.add_argument("name", help="schedule name")
    command.set_defaults(handler=_run_resume)


def _run_pause(args: argparse.Namespace) -> int:
    from postburner_py.cli.admin import set_paused

    with postburner(args) as pb:
        result = set_paused(pb, args.name, True, reason=args.reason)
    print(result.describe())
    return EXIT_OK


def _run_resume(args: argparse.Namespace) -> int:
    from postburner_py.cli.admin import set_paused

    with postburner(args) as pb:
        result = set_paused(pb, args.name, False)
    print(result.describe())
    return EXIT_OK
