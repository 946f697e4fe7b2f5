"""What ``postburner status`` reports: settings, server health and every schedule."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, text

from postburner_py.models import LIVE_STATUSES, Schedule, ScheduleExecution

if TYPE_CHECKING:
    from postburner_py.app import Postburner


def collect_status(pb: Postburner) -> dict[str, Any]:
    """A JSON-ready report; ``healthy`` is False when a server does not answer."""
    database = _database_health(pb)
    queue_ok = pb.queue.ping()
    return {
        "settings": {
            "database_url": pb.engine.url.render_as_string(hide_password=True),
            "beanstalkd_url": pb.settings.beanstalkd_url,
            "namespace": pb.settings.namespace,
            "allowed_job_prefixes": list(pb.settings.allowed_job_prefixes),
        },
        "database": database,
        "beanstalkd": "ok" if queue_ok else "unreachable",
        "schedules": _schedules(pb) if database == "ok" else [],
        "healthy": database == "ok" and queue_ok,
    }


def _database_health(pb: Postburner) -> str:
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with pb.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return f"unreachable: {str(exc).splitlines()[0]}"
    return "ok"


def _schedules(pb: Postburner) -> list[dict[str, Any]]:
    now = pb.clock()
    next_run = (
        select(func.min(ScheduleExecution.run_at))
        .where(
            ScheduleExecution.schedule_id == Schedule.id,
            ScheduleExecution.status.in_(LIVE_STATUSES),
            ScheduleExecution.run_at > now,
        )
        .scalar_subquery()
    )
    with pb.session() as session:
        rows = session.execute(select(Schedule, next_run).order_by(Schedule.name)).all()
    return [
        {
            "name": schedule.name,
            "spec": schedule.cron or f"every {schedule.interval} {schedule.interval_unit}",
            "timezone": schedule.timezone,
            "enabled": schedule.enabled,
            "job_class": schedule.job_class,
            "next_run_at": next_run_at.isoformat() if next_run_at else None,
        }
        for schedule, next_run_at in rows
    ]


def render_status(report: dict[str, Any]) -> str:
    """The report as aligned text."""
    settings = report["settings"]
    lines = [
        f"database   {settings['database_url']}: {report['database']}",
        f"beanstalkd {settings['beanstalkd_url']}: {report['beanstalkd']}",
        f"namespace  {settings['namespace']}",
    ]
    if report["beanstalkd"] != "ok":
        lines.append("WARNING: Beanstalkd does not answer; queued jobs cannot be checked or put")
    lines.append(f"schedules  {len(report['schedules'])}")
    for item in report["schedules"]:
        state = "enabled" if item["enabled"] else "disabled"
        lines.append(
            f"  {item['name']:<30} {item['spec']:<20} {item['timezone']:<18} {state:<8} "
            f"next {item['next_run_at'] or '-'}"
        )
    return "\n".join(lines)
