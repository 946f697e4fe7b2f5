"""The read-only commands: ``status``, ``next``, ``explain``, ``history``, ``dispatches``."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from postburner_py.cli.parser import (
    EXIT_FAILURE,
    EXIT_OK,
    UsageError,
    add_json,
    parse_instant,
    positive,
    postburner,
    print_json,
)
from postburner_py.errors import PostburnerError


def add_status(commands: Any) -> None:
    command = commands.add_parser(
        "status", help="settings, server health, queues, schedules and their last outcome"
    )
    add_json(command)
    command.set_defaults(handler=_run_status)


def _run_status(args: argparse.Namespace) -> int:
    from postburner_py.cli.status import collect_status, render_status, warnings

    with postburner(args) as pb:
        report = collect_status(pb)
    if args.json:
        print_json(report)
        for line in warnings(report):
            print(f"postburner: {line}", file=sys.stderr)
    else:
        print(render_status(report))
    return EXIT_OK if report["healthy"] else EXIT_FAILURE


def add_next(commands: Any) -> None:
    command = commands.add_parser(
        "next", help="print upcoming fire times of a cron expression or a schedule"
    )
    command.add_argument("cron", nargs="?", help="cron expression, e.g. '0 9 * * 1'")
    command.add_argument("--schedule", help="a schedule name instead of a cron expression")
    command.add_argument("--count", type=positive, default=5, help="how many (default 5)")
    command.add_argument(
        "--tz",
        default=os.environ.get("POSTBURNER_TZ") or None,
        help="IANA timezone of the cron and of the output (default UTC, or the schedule's); "
        "env POSTBURNER_TZ",
    )
    add_dst_policy(command)
    add_json(command)
    command.set_defaults(handler=_run_next)


def add_dst_policy(command: Any) -> None:
    """``--dst-gap`` and ``--dst-fold``: the DST policy a cron expression is shown with."""
    from postburner_py.timegrid.dst import DST_FOLD_CHOICES, DST_GAP_CHOICES

    command.add_argument(
        "--dst-gap",
        choices=DST_GAP_CHOICES,
        help="a fixed-hour time a spring gap skips: shift (run at the gap's end, default) or skip",
    )
    command.add_argument(
        "--dst-fold",
        choices=DST_FOLD_CHOICES,
        help="a fixed-hour time an autumn fold repeats: first (default), last or both",
    )


def _run_next(args: argparse.Namespace) -> int:
    from postburner_py.timegrid import grid as timegrid

    if bool(args.cron) == bool(args.schedule):
        raise UsageError("give a cron expression or --schedule NAME (one of them)")
    if args.schedule and (args.dst_gap or args.dst_fold):
        raise UsageError(
            "--dst-gap and --dst-fold go with a cron expression; a schedule has its own"
        )
    if args.tz:
        timegrid.validate_timezone(args.tz)
    now = datetime.now(UTC)
    if args.schedule:
        points, zone, policy = _schedule_upcoming(args, now)
    else:
        zone = args.tz or "UTC"
        grid = timegrid.CronGrid(args.cron, zone, **_policy_options(args))
        points, policy = grid.upcoming(args.count, now), _policy_line(grid)
    shown = [point.astimezone(ZoneInfo(zone)).isoformat() for point in points]
    if args.json:
        print_json(shown)
    else:
        print("\n".join([*shown, policy]))
    return EXIT_OK


def _policy_options(args: argparse.Namespace) -> dict[str, str]:
    options = {"dst_gap": args.dst_gap, "dst_fold": args.dst_fold}
    return {name: value for name, value in options.items() if value is not None}


def _policy_line(grid: Any) -> str:
    """What ``grid`` does on DST changes (interval grids of elapsed units follow elapsed time)."""
    return str(grid.policy.describe(hourly_or_faster=grid.hourly_or_faster))


def _schedule_upcoming(args: argparse.Namespace, now: datetime) -> tuple[list[datetime], str, str]:
    from postburner_py.schedules.planning import planning

    with postburner(args) as pb, pb.session() as session:
        schedule = pb.store.schedule_by_name(session, args.schedule)
        if schedule is None:
            raise PostburnerError(f"no schedule named {args.schedule!r}")
        if schedule.paused_at is not None:
            print(
                f"postburner: schedule {schedule.name} is paused since "
                f"{schedule.paused_at.isoformat()} ({schedule.pause_reason or 'no reason given'})"
                f"; these points run only after `postburner resume {schedule.name}`",
                file=sys.stderr,
            )
        with planning(schedule.name):  # a row written behind the API's back: exit 1
            grid = schedule.grid()
            points = grid.upcoming(args.count, now)
            return points, args.tz or schedule.timezone, _policy_line(grid)


def add_explain(commands: Any) -> None:
    command = commands.add_parser(
        "explain", help="describe a cron expression in words, and what it does on DST changes"
    )
    command.add_argument("cron", help="cron expression, e.g. '*/15 * * * *' or '@daily'")
    add_dst_policy(command)
    command.set_defaults(handler=_run_explain)


def _run_explain(args: argparse.Namespace) -> int:
    from postburner_py.cli.explain import explain_cron

    print(explain_cron(args.cron, **_policy_options(args)))
    return EXIT_OK


def add_history(commands: Any) -> None:
    command = commands.add_parser("history", help="job runs recorded by the workers")
    command.add_argument("--from", dest="from_", help="runs started at or after (ISO-8601)")
    command.add_argument("--to", help="runs started before (ISO-8601)")
    command.add_argument("--task", help="job class (task identifier), e.g. myapp.jobs:report")
    command.add_argument("--schedule", help="one schedule's runs, by name")
    command.add_argument("--status", choices=("started", "completed", "failed", "partial_success"))
    command.add_argument("--limit", type=positive, default=50, help="at most (default 50)")
    add_json(command)
    command.set_defaults(handler=_run_history)


def _run_history(args: argparse.Namespace) -> int:
    from postburner_py.store.history import HistoryStore

    start = parse_instant(args.from_, "--from") if args.from_ else None
    end = parse_instant(args.to, "--to") if args.to else None
    with postburner(args) as pb:
        entries = HistoryStore(pb.session_factory).query(
            start,
            end,
            task_identifier=args.task,
            status=args.status,
            limit=args.limit,
            schedule_name=args.schedule,
        )
    if args.json:
        print_json(entries)
        return EXIT_OK
    if not entries:
        print("no runs match", file=sys.stderr)
    for entry in entries:
        took = f"{entry.execution_time_ms:.1f} ms" if entry.execution_time_ms is not None else "-"
        error = f"  error: {entry.error_message.splitlines()[0]}" if entry.error_message else ""
        print(
            f"{entry.started_at.isoformat()}  {entry.status:<15} {took:>10}  "
            f"{entry.schedule_name or '-':<24} {entry.trigger:<8} {entry.task_identifier}  "
            f"attempt {entry.attempt} on {entry.worker_id}{error}"
        )
    return EXIT_OK


#: ``DispatchStatus``'s values (spelled out: the parser is built without importing the store).
_DISPATCH_STATUSES = (
    "dispatched",
    "completed",
    "failed",
    "missed",
    "skipped_overlap",
    "paused",
    "skipped",
)


def add_dispatches(commands: Any) -> None:
    command = commands.add_parser("dispatches", help="the dispatch log: which occurrence ran where")
    command.add_argument("--key", help="one schedule name")
    command.add_argument("--node", help="one node id (worker host:pid)")
    command.add_argument("--status", choices=_DISPATCH_STATUSES)
    command.add_argument("--since", help="fire times at or after (ISO-8601)")
    command.add_argument("--until", help="fire times before (ISO-8601)")
    command.add_argument("--limit", type=positive, default=50, help="at most (default 50)")
    add_json(command)
    command.set_defaults(handler=_run_dispatches)


def _run_dispatches(args: argparse.Namespace) -> int:
    from postburner_py.cli.admin import list_dispatches

    if args.key and args.node:
        raise UsageError("give --key or --node, not both")
    since = parse_instant(args.since, "--since") if args.since else None
    until = parse_instant(args.until, "--until") if args.until else None
    with postburner(args) as pb:
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
        print_json(entries)
        return EXIT_OK
    if not entries:
        print("no dispatches match", file=sys.stderr)
    for entry in entries:
        print(
            f"{entry.fire_time.isoformat()}  {entry.status:<15} {entry.key:<30} "
            f"{entry.trigger:<8} attempt {entry.attempt} on {entry.node_id}"
        )
    return EXIT_OK
