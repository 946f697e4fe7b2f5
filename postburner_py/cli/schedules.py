"""``postburner sync`` and ``postburner schedules list | enable | disable | delete``."""

from __future__ import annotations

import argparse
from typing import Any

from postburner_py.cli.parser import EXIT_OK, add_json, postburner, print_json


def add_sync(commands: Any) -> None:
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
    command.add_argument(
        "--label",
        default=None,
        help="owner of the file's schedules: only they are touched (default: the file name "
        "without extension)",
    )
    command.add_argument(
        "--adopt",
        action="store_true",
        help="take over schedules created from code that the file declares (e.g. once after "
        "upgrading: schedules synced before labels existed)",
    )
    add_json(command)
    command.set_defaults(handler=_run_sync)


def _run_sync(args: argparse.Namespace) -> int:
    from postburner_py.schedules.schedule_file import default_env, sync

    with postburner(args) as pb:
        plan = sync(
            pb,
            args.file,
            env=args.env or default_env(),
            prune=args.prune,
            dry_run=args.dry_run,
            label=args.label,
            adopt=args.adopt,
        )
    if args.json:
        print_json(plan.to_dict())
    else:
        print(plan.describe())
    return EXIT_OK


def add_schedules(commands: Any) -> None:
    command = commands.add_parser("schedules", help="list, enable, disable or delete schedules")
    actions = command.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="every schedule, next run and last outcome")
    add_json(listing)
    listing.set_defaults(handler=_run_schedules_list)
    for action, text in (("enable", "enable and queue"), ("disable", "disable and unqueue")):
        one = actions.add_parser(action, help=f"{text} one schedule")
        one.add_argument("name", help="schedule name")
        one.set_defaults(handler=_run_schedules_toggle)
    delete = actions.add_parser("delete", help="delete one schedule and its queued job")
    delete.add_argument("name", help="schedule name")
    delete.set_defaults(handler=_run_schedules_delete)


def _run_schedules_list(args: argparse.Namespace) -> int:
    from postburner_py.cli.status import schedule_rows

    with postburner(args) as pb:
        rows = schedule_rows(pb)
    if args.json:
        print_json(rows)
        return EXIT_OK
    for row in rows:
        print(_listing_line(row))
    return EXIT_OK


def _listing_line(row: dict[str, Any]) -> str:
    state = "paused" if row["paused"] else "enabled" if row["enabled"] else "disabled"
    last = row["last_dispatch"]
    outcome = f"{last['fire_time']} {row['last_outcome']}" if last else "-"
    invalid = f"  INVALID: {row['invalid']}" if row["invalid"] else ""
    paused = ""
    if row["paused"]:
        paused = f"  PAUSED since {row['paused_at']}: {row['pause_reason'] or 'no reason given'}"
    return (
        f"{row['name']:<30} {state:<8} {row['spec']:<20} {row['timezone']:<16} "
        f"{row['job_class']:<36} next {row['next_run_at'] or '-'}  last {outcome}"
        f"{paused}{invalid}"
    )


def _run_schedules_delete(args: argparse.Namespace) -> int:
    from postburner_py.cli.admin import delete_schedule

    with postburner(args) as pb:
        retired = delete_schedule(pb, args.name)
    print(f"schedule {args.name} deleted; {retired} queued occurrence(s) removed, history kept")
    return EXIT_OK


def _run_schedules_toggle(args: argparse.Namespace) -> int:
    from postburner_py.cli.admin import set_enabled

    with postburner(args) as pb:
        result = set_enabled(pb, args.name, args.action == "enable")
    print(result.describe())
    return EXIT_OK
