"""Runs an operator asks for: ``postburner trigger``, ``retry``, ``backfill`` and ``buried``."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from postburner_py.cli.parser import EXIT_OK, parse_instant, postburner
from postburner_py.errors import PostburnerError

if TYPE_CHECKING:
    from postburner_py.app import Postburner
    from postburner_py.store.models import Schedule


def add_trigger(commands: Any) -> None:
    command = commands.add_parser("trigger", help="run a schedule's job once, now")
    command.add_argument("name", help="schedule name")
    command.add_argument(
        "--overlap",
        choices=("skip", "buffer_one", "allow"),
        help="overlap policy for this run (default: the schedule's)",
    )
    command.set_defaults(handler=_run_trigger)


def _run_trigger(args: argparse.Namespace) -> int:
    with postburner(args) as pb, pb.session() as session:
        triggered = _named(session, args.name).trigger_now(overlap=args.overlap)
    state = "queued" if triggered.queued else "already queued for this second"
    print(f"{triggered.key} at {triggered.fire_time.isoformat()}: {state} (trigger manual)")
    return EXIT_OK


def add_retry(commands: Any) -> None:
    command = commands.add_parser("retry", help="run a failed occurrence again")
    command.add_argument("--schedule", required=True, help="schedule name")
    command.add_argument("--at", required=True, help="ISO-8601 instant of the occurrence")
    command.set_defaults(handler=_run_retry)


def _run_retry(args: argparse.Namespace) -> int:
    at = parse_instant(args.at, "--at")
    with postburner(args) as pb, pb.session() as session:
        retried = _named(session, args.schedule).retry(at)
    print(f"{retried.key} at {retried.fire_time.isoformat()}: queued as its next attempt")
    return EXIT_OK


def add_backfill(commands: Any) -> None:
    command = commands.add_parser("backfill", help="run the past occurrences that never ran")
    command.add_argument("name", help="schedule name")
    command.add_argument("--from", dest="start", required=True, help="ISO-8601 window start")
    command.add_argument("--to", dest="end", required=True, help="ISO-8601 window end")
    command.add_argument("--dry-run", action="store_true", help="count, queue nothing")
    command.set_defaults(handler=_run_backfill)


def _run_backfill(args: argparse.Namespace) -> int:
    start, end = parse_instant(args.start, "--from"), parse_instant(args.end, "--to")
    with postburner(args) as pb, pb.session() as session:
        done = _named(session, args.name).backfill(start, end, dry_run=args.dry_run)
    if args.dry_run:
        print(f"{args.name}: {len(done.points)} occurrence(s) would run (dry run)")
    else:
        print(f"{args.name}: {done.queued} occurrence(s) queued of {len(done.points)} never run")
    return EXIT_OK


def add_buried(commands: Any) -> None:
    command = commands.add_parser("buried", help="list buried jobs and why")
    command.add_argument("--limit", type=int, default=100, help="most rows (default 100)")
    command.add_argument("--json", action="store_true", help="one JSON document")
    command.set_defaults(handler=_run_buried)


def _run_buried(args: argparse.Namespace) -> int:
    with postburner(args) as pb:
        rows = buried_jobs(pb, limit=args.limit)
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("no buried job")
    for row in [] if args.json else rows:
        print(f"{row['tube']}  job {row['job_id']}  {row['key']}  {row['run_at']}  {row['reason']}")
    return EXIT_OK


def buried_jobs(pb: Postburner, *, limit: int = 100) -> list[dict[str, Any]]:
    """The buried jobs of failed occurrences, newest first: tube, job id, key (a schedule's
    name or ``job:<job_id>``), run_at and the reason (the last attempt's error). A job is
    listed only when Beanstalkd says it is buried; a job buried without a row (a forged
    body) is not: ``peek-buried`` on its tube shows it."""
    from postburner_py.store.dispatch_log import SqlDispatchRegistry
    from postburner_py.store.dispatch_records import DispatchStatus
    from postburner_py.store.history_records import HistoryRecord
    from postburner_py.store.models import DelayedJob, ScheduleExecution

    found: list[dict[str, Any]] = []
    with pb.session() as session:
        registry = SqlDispatchRegistry(pb.session_factory)
        failed = registry.find_by_status(DispatchStatus.FAILED, limit=limit)
        for entry in failed:
            model: Any = DelayedJob if entry.key.startswith("job:") else ScheduleExecution
            rows = session.scalars(select(model).where(model.run_at == entry.fire_time)).all()
            job_ids = [row.beanstalk_job_id for row in rows if _key_of(row) == entry.key]
            reason = session.scalars(
                select(HistoryRecord.error_message)
                .where(
                    HistoryRecord.schedule_name == entry.key,
                    HistoryRecord.run_at == entry.fire_time,
                )
                .order_by(HistoryRecord.id.desc())
            ).first()
            for job_id in job_ids:
                stats = pb.queue.stats_job(job_id) if job_id is not None else None
                if stats is None or stats.get("state") != "buried":
                    continue
                found.append(
                    {
                        "tube": stats.get("tube"),
                        "job_id": job_id,
                        "key": entry.key,
                        "run_at": entry.fire_time.isoformat(),
                        "attempt": entry.attempt,
                        "reason": reason or "failed",
                    }
                )
    return found


def _key_of(row: Any) -> str:
    return str(
        row.occurrence_key if hasattr(row, "occurrence_key") else row.cached_schedule["name"]
    )


def _named(session: Any, name: str) -> Schedule:
    from postburner_py.store.models import Schedule

    schedule = session.scalars(select(Schedule).where(Schedule.name == name)).first()
    if schedule is None:
        raise PostburnerError(f"no schedule named {name!r}")
    return schedule  # type: ignore[no-any-return]
