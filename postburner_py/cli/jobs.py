"""Operator actions on one occurrence or job: ``postburner skip`` and ``postburner cancel``."""

from __future__ import annotations

import argparse
from typing import Any

from postburner_py.cli.parser import (
    EXIT_FAILURE,
    EXIT_OK,
    UsageError,
    parse_instant,
    postburner,
    row_id,
)


def add_skip(commands: Any) -> None:
    command = commands.add_parser("skip", help="skip one occurrence, keep the schedule running")
    command.add_argument("execution_id", nargs="?", type=row_id, help="execution id to skip")
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
    at = parse_instant(args.at, "--at") if args.at else None
    with postburner(args) as pb:
        result = skip_occurrence(pb, execution_id=args.execution_id, schedule=args.schedule, at=at)
    print(result.describe())
    return EXIT_OK if result.skipped else EXIT_FAILURE


def add_cancel(commands: Any) -> None:
    command = commands.add_parser("cancel", help="cancel a pending one-off job by its job_id")
    command.add_argument("job_id", help="the job_id given to enqueue_at")
    command.set_defaults(handler=_run_cancel)


def _run_cancel(args: argparse.Namespace) -> int:
    from postburner_py.schedules.one_off import job_state

    with postburner(args) as pb:
        cancelled = pb.cancel(args.job_id)
        state = None if cancelled else job_state(pb, args.job_id)
    if cancelled:
        print(f"{args.job_id}: cancelled")
    else:
        told = {None: "no such job", "pending": "already started"}.get(state, f"already {state}")
        print(f"{args.job_id}: not pending ({told})")
    return EXIT_OK if cancelled else EXIT_FAILURE
