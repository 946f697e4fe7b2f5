"""What ``postburner status`` reports: settings, server health, queues and every schedule.

Each schedule comes with its next queued run and its last outcome: the newest occurrence in
the dispatch log (``dispatched``, ``completed``, ``failed`` or ``missed``) and, when a worker
recorded it, the newest attempt *of that occurrence* in the job history (with its error, if it
failed): a late retry of an earlier occurrence never shows under a later one. A schedule whose
stored row cannot be planned carries the reason (``invalid``) and makes the report unhealthy.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import inspect
from sqlalchemy.exc import SQLAlchemyError

from postburner_py.config import mask_url
from postburner_py.errors import QueueUnavailableError
from postburner_py.schedules.planning import PlanChecker, unloadable_schedules
from postburner_py.store.dispatch_log import DispatchRecord
from postburner_py.store.history import HistoryRecord, HistoryStatus
from postburner_py.store.models import Schedule

if TYPE_CHECKING:
    from postburner_py.app import Postburner

OK = "ok"
#: A watchdog whose last pass is older than this is reported stale (seconds).
WATCHDOG_STALE_AFTER = 300.0
_TUBE_COUNTS = ("ready", "delayed", "reserved", "buried")


def collect_status(pb: Postburner, *, now: datetime | None = None) -> dict[str, Any]:
    """A JSON-ready report; ``healthy`` is False when a server does not answer (or the
    database is not migrated). Never raises for an unreachable server."""
    database = _database_health(pb)
    queue_ok = pb.queue.ping()
    schedules: list[dict[str, Any]] = []
    watchdogs: list[dict[str, Any]] = []
    if database == OK:
        try:
            schedules = schedule_rows(pb, now=now)
            watchdogs = _watchdogs(pb, now or pb.clock())
        except SQLAlchemyError as exc:
            database = f"error: {_first_line(exc)}"
    return {
        "settings": _settings(pb),
        "database": database,
        "beanstalkd": OK if queue_ok else "unreachable",
        "queues": _queues(pb, schedules) if queue_ok else {},
        "watchdogs": watchdogs,
        "schedules": schedules,
        "healthy": database == OK and queue_ok and not _invalid(schedules),
    }


def _invalid(schedules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The enabled schedules whose row cannot be planned (nothing of theirs is queued)."""
    return [item for item in schedules if item["enabled"] and item.get("invalid")]


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


def _queues(pb: Postburner, schedules: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Job counts of each queue the schedules use (an unused tube counts zero)."""
    names = sorted({str(item["queue"]) for item in schedules} | {"default"})
    counts: dict[str, dict[str, int]] = {}
    for name in names:
        try:
            stats = pb.queue.stats_tube(name) or {}
        except QueueUnavailableError:
            return counts
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
    for beat in report.get("watchdogs", []):
        state = "STALE" if beat["stale"] else "ok"
        lines.append(
            f"watchdog   {beat['node']}: {state}, last pass {beat['last_pass_at'] or 'none yet'}"
        )
    lines.append(f"schedules  {len(report['schedules'])}")
    lines += [_render_schedule(item) for item in report["schedules"]]
    return "\n".join(lines)


def warnings(report: dict[str, Any]) -> list[str]:
    """One ``WARNING:`` line per server that does not answer (or is not migrated), and one
    per enabled schedule whose row cannot be planned."""
    found = [
        f"WARNING: schedule {item['name']!r} cannot be planned, nothing of it is queued: "
        f"{item['invalid']}"
        for item in _invalid(report["schedules"])
    ]
    if report["database"] != OK:
        found.append(f"WARNING: database: {report['database']}")
    if report["beanstalkd"] != OK:
        found.append(
            "WARNING: Beanstalkd does not answer; queued jobs cannot be checked, put or run"
        )
    if report["database"] == OK and not any(
        not beat["stale"] for beat in report.get("watchdogs", [])
    ):
        found.append(
            f"WARNING: no watchdog has passed in the last {WATCHDOG_STALE_AFTER:.0f} s; "
            "queued jobs still fire, but nothing repairs drift or lost jobs "
            "(run `postburner watchdog`)"
        )
    return found


def _render_schedule(item: dict[str, Any]) -> str:
    state = "enabled" if item["enabled"] else "disabled"
    if item.get("invalid"):
        state = "INVALID"
    return (
        f"  {item['name']:<30} {item['spec']:<20} {item['timezone']:<16} {state:<8} "
        f"next {item['next_run_at'] or '-'}  last {_last_outcome(item)}"
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
