"""What ``postburner status`` reports: settings, server health, queues, workers, watchdogs,
the last hour's dispatches and every schedule, and whether all of it is healthy.

Each schedule comes with its next queued run and its last outcome: the newest occurrence in
the dispatch log (``dispatched``, ``completed``, ``failed``, ``missed``, or whatever status
the log holds) and, when a worker recorded it, the newest attempt *of that occurrence* in the
job history (with its error, if it failed): a late retry of an earlier occurrence never shows
under a later one. ``problems`` (:mod:`postburner_py.cli.status_checks`) lists what is wrong,
one line each with what to do; the report is healthy when it is empty. Every part is read
with a fixed number of queries (and one ``stats-tube`` per queue), whatever the number of
schedules.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import inspect
from sqlalchemy.exc import SQLAlchemyError

from postburner_py.cli.status_checks import WATCHDOG_STALE_AFTER, find_problems
from postburner_py.config import mask_url
from postburner_py.errors import QueueUnavailableError
from postburner_py.schedules.planning import PlanChecker, unloadable_schedules
from postburner_py.store.dispatch_log import DispatchRecord
from postburner_py.store.history import HistoryRecord, HistoryStatus
from postburner_py.store.models import Schedule, WorkerHeartbeat
from postburner_py.worker.heartbeat import WORKER_STALE_AFTER

if TYPE_CHECKING:
    from postburner_py.app import Postburner

OK = "ok"
_TUBE_COUNTS = ("ready", "delayed", "reserved", "buried")
#: How far back the dispatch-log counts by status go.
RECENT = timedelta(hours=1)


def collect_status(pb: Postburner, *, now: datetime | None = None) -> dict[str, Any]:
    """A JSON-ready report; ``healthy`` is False when ``problems`` names anything (a server
    that does not answer, no live worker, an unserved queue, buried jobs, a failed last
    occurrence, an invalid schedule, no live watchdog). Never raises for an unreachable
    server."""
    now = now or pb.clock()
    database = _database_health(pb)
    queue_ok = pb.queue.ping()
    tables: dict[str, Any] = {}
    if database == OK:
        try:
            tables = _read_tables(pb, now)
        except SQLAlchemyError as exc:
            database = f"error: {_first_line(exc)}"
    report = {
        "settings": _settings(pb),
        "database": database,
        "beanstalkd": OK if queue_ok else "unreachable",
        "queues": _queues(pb, tables) if queue_ok else {},
        "due": tables.get("due", {}),
        "workers": tables.get("workers", []),
        "watchdogs": tables.get("watchdogs", []),
        "dispatches_last_hour": tables.get("dispatches_last_hour", {}),
        "schedules": tables.get("schedules", []),
    }
    report["problems"] = find_problems(report)
    report["healthy"] = not report["problems"]
    return report


def _read_tables(pb: Postburner, now: datetime) -> dict[str, Any]:
    """Everything status reads from the database, in a fixed number of queries."""
    with pb.session() as session:
        due = pb.store.due_by_queue(session, now)
        beats = pb.store.worker_heartbeats(session)
        recent = pb.store.dispatch_counts_since(session, now - RECENT)
    return {
        "schedules": schedule_rows(pb, now=now),
        "watchdogs": _watchdogs(pb, now),
        "workers": [_worker(beat, now) for beat in beats],
        "due": due,
        "dispatches_last_hour": dict(sorted(recent.items())),
    }


def _worker(beat: WorkerHeartbeat, now: datetime) -> dict[str, Any]:
    age = (now - beat.last_seen_at).total_seconds()
    return {
        "id": beat.id,
        "node": beat.node,
        "host": beat.host,
        "pid": beat.pid,
        "queues": list(beat.queues),
        "concurrency": beat.concurrency,
        "started_at": beat.started_at.isoformat(),
        "last_seen_at": beat.last_seen_at.isoformat(),
        "seconds_since_seen": age,
        "live": age <= WORKER_STALE_AFTER,
        "jobs_run": beat.jobs_run,
        "version": beat.version,
    }


def _watchdogs(pb: Postburner, now: datetime) -> list[dict[str, Any]]:
    from postburner_py.watchdog.process import watchdog_health

    return watchdog_health(pb, now=now, stale_after=WATCHDOG_STALE_AFTER)


def _settings(pb: Postburner) -> dict[str, Any]:
    return {
        "database_url": mask_url(pb.settings.database_url),
        "beanstalkd_url": mask_url(pb.settings.beanstalkd_url),
        "namespace": pb.settings.namespace,
        "allowed_job_prefixes": list(pb.settings.allowed_job_prefixes),
        "catch_up_window_seconds": pb.settings.catch_up_window.total_seconds(),
        "node_id": pb.settings.node_id,
    }


def _database_health(pb: Postburner) -> str:
    try:
        with pb.engine.connect() as connection:
            pb.store.ping(connection)
            migrated = pb.store.is_migrated(connection)
    except SQLAlchemyError as exc:
        return f"unreachable: {_first_line(exc)}"
    return OK if migrated else "not migrated: run `postburner migrate`"


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _queues(pb: Postburner, tables: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Job counts of each queue the schedules, the workers or due jobs use, of each tube of
    the namespace on the server, and of ``default`` (an unused tube counts zero)."""
    try:
        on_server = pb.queue.queues_on_server()
    except QueueUnavailableError:
        return {}
    names = sorted(
        {str(item["queue"]) for item in tables.get("schedules", [])}
        | {name for worker in tables.get("workers", []) for name in worker["queues"]}
        | set(tables.get("due", {}))
        | set(on_server)
        | {"default"}
    )
    counts: dict[str, dict[str, int]] = {}
    for name in names:
        try:
            stats = pb.queue.stats_tube(name) or {}
        except (QueueUnavailableError, ValueError):  # ValueError: a tube that is no queue name
            continue
        counts[name] = {kind: int(stats.get(f"current-jobs-{kind}", 0)) for kind in _TUBE_COUNTS}
    return counts


def schedule_rows(pb: Postburner, *, now: datetime | None = None) -> list[dict[str, Any]]:
    """Every schedule, by name, with its next queued run and its last outcome (JSON-ready)."""
    now = now or pb.clock()
    store = pb.store
    with pb.session() as session:
        unloadable = unloadable_schedules(session, enabled_only=False)
        rows = store.schedules_with_next_run(session, now, unloadable=unloadable)
        dispatches = store.last_dispatches(session)
        runs = store.last_runs(session)
    checker = PlanChecker(now)
    return [
        _schedule_row(
            schedule,
            next_run_at,
            dispatches.get(schedule.name),
            runs.get(schedule.name),
            unloadable[schedule.id].reason
            if schedule.id in unloadable
            else checker.reason(schedule),
        )
        for schedule, next_run_at in rows
    ]


def _schedule_row(
    schedule: Schedule,
    next_run_at: datetime | None,
    dispatch: DispatchRecord | None,
    run: HistoryRecord | None,
    invalid: str | None,
) -> dict[str, Any]:
    return {
        "name": schedule.name,
        "invalid": invalid,
        "spec": schedule.cron or f"every {schedule.interval} {schedule.interval_unit}",
        "timezone": schedule.timezone,
        "enabled": schedule.enabled,
        # Run control (pause: the operator's; label: who owns it, None = code).
        "paused": _loaded(schedule, "paused_at") is not None,
        "paused_at": _iso(_loaded(schedule, "paused_at")),
        "pause_reason": schedule.pause_reason,
        "label": schedule.label,
        "starts_at": _iso(_loaded(schedule, "starts_at")),
        "ends_at": _iso(_loaded(schedule, "ends_at")),
        "catch_up_window": schedule.catch_up_window,
        "job_class": schedule.job_class,
        "queue": schedule.queue,
        "next_run_at": _iso(next_run_at),
        "last_dispatch": None
        if dispatch is None
        else {
            "fire_time": _iso(dispatch.fire_time),
            "status": dispatch.status,
            "attempt": dispatch.attempt,
            "node_id": dispatch.node_id,
        },
        "last_outcome": _outcome_status(dispatch, run),
        "last_run": None
        if run is None
        else {
            "status": run.status,
            "started_at": _iso(run.started_at),
            "finished_at": _iso(run.finished_at),
            "execution_time_ms": run.execution_time_ms,
            "error": run.error_message,
        },
    }


def _loaded(schedule: Schedule, name: str) -> Any:
    """An instant column's value, or None when it was left unloaded (a row whose stored
    instants cannot be parsed is listed with them deferred)."""
    return None if name in inspect(schedule).unloaded else getattr(schedule, name)


def _outcome_status(dispatch: DispatchRecord | None, run: HistoryRecord | None) -> str | None:
    """The last occurrence's outcome: its dispatch status, except that a completed run that
    reported partial success shows as ``partial_success``."""
    if dispatch is None:
        return None if run is None else str(run.status)
    if run is None or dispatch.status != "completed" or run.run_at != dispatch.fire_time:
        return str(dispatch.status)
    return str(run.status if run.status == HistoryStatus.PARTIAL_SUCCESS else dispatch.status)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def render_status(report: dict[str, Any]) -> str:
    """The report as aligned text, warnings first."""
    settings = report["settings"]
    lines = warnings(report)
    lines += [
        f"database   {settings['database_url']}: {report['database']}",
        f"beanstalkd {settings['beanstalkd_url']}: {report['beanstalkd']}",
        f"namespace  {settings['namespace']}",
    ]
    for name, counts in report["queues"].items():
        shown = ", ".join(f"{kind} {count}" for kind, count in counts.items())
        lines.append(f"queue      {name}: {shown}")
    lines += [_render_worker(worker) for worker in report.get("workers", [])]
    for beat in report.get("watchdogs", []):
        state = "STALE" if beat["stale"] else "ok"
        lines.append(
            f"watchdog   {beat['node']}: {state}, last pass {beat['last_pass_at'] or 'none yet'}"
        )
    recent = report.get("dispatches_last_hour", {})
    shown = ", ".join(f"{status} {count}" for status, count in recent.items()) or "none"
    lines.append(f"last hour  {shown}")
    lines.append(f"schedules  {len(report['schedules'])}")
    lines += [_render_schedule(item) for item in report["schedules"]]
    lines.append("healthy" if report.get("healthy") else "UNHEALTHY")
    return "\n".join(lines)


def warnings(report: dict[str, Any]) -> list[str]:
    """One ``WARNING:`` line per problem, each saying what to do."""
    return [f"WARNING: {problem}" for problem in report.get("problems", [])]


def _render_worker(worker: dict[str, Any]) -> str:
    state = "ok" if worker["live"] else "STALE"
    return (
        f"worker     {worker['node']} ({worker['host']} pid {worker['pid']}): {state}, queues "
        f"{','.join(worker['queues'])}, concurrency {worker['concurrency']}, "
        f"{worker['jobs_run']} jobs run, last seen {worker['last_seen_at']}"
    )


def _render_schedule(item: dict[str, Any]) -> str:
    state = "enabled" if item["enabled"] else "disabled"
    if item.get("paused_at"):
        state = "PAUSED"
    if item.get("invalid"):
        state = "INVALID"
    paused = f"  (paused: {item['pause_reason']})" if item.get("pause_reason") else ""
    return (
        f"  {item['name']:<30} {item['spec']:<20} {item['timezone']:<16} {state:<8} "
        f"next {item['next_run_at'] or '-'}  last {_last_outcome(item)}{paused}"
    )


def _last_outcome(item: dict[str, Any]) -> str:
    dispatch, run = item["last_dispatch"], item["last_run"]
    if dispatch is not None:
        outcome = f"{dispatch['fire_time']} {dispatch['status']}"
    elif run is not None:
        outcome = f"{run['started_at']} {run['status']}"
    else:
        return "-"
    if run is not None and run["status"] == HistoryStatus.FAILED and run["error"]:
        outcome += f" (error: {str(run['error']).splitlines()[0][:80]})"
    return outcome
