"""Operator actions shared by scripts and the CLI: skip an occurrence, enable or disable a
schedule by name, list the dispatch log, write starter files."""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from postburner_py.errors import PostburnerError, UnplannableScheduleError
from postburner_py.schedules.planning import planning
from postburner_py.store.dispatch_log import DispatchEntry, DispatchStatus, SqlDispatchRegistry
from postburner_py.store.models import Schedule, ScheduleExecution

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from postburner_py.app import Postburner


@dataclass(frozen=True)
class SkipResult:
    """What ``skip`` did: the occurrence, whether it was skipped (else why not), and what is
    queued next. ``execution_id`` is None for an occurrence skipped ahead (not queued yet)."""

    execution_id: int | None
    run_at: datetime
    skipped: bool
    status: str
    next_run_at: datetime | None
    schedule: str | None = None
    reason: str | None = None

    def describe(self) -> str:
        """One line for the operator."""
        what = (
            f"execution {self.execution_id}"
            if self.execution_id is not None
            else f"schedule {self.schedule}"
        )
        verdict = "skipped" if self.skipped else f"not skipped: {self.reason or self.status}"
        following = self.next_run_at.isoformat() if self.next_run_at else "nothing"
        return f"{what} at {self.run_at.isoformat()} {verdict}; next queued: {following}"


def skip_occurrence(
    pb: Postburner,
    *,
    execution_id: int | None = None,
    schedule: str | None = None,
    at: datetime | None = None,
) -> SkipResult:
    """Skip one occurrence: by execution id (the queued one), or by schedule name and
    ``run_at`` (any future point of its grid, queued or not, see
    :meth:`~postburner_py.store.models.Schedule.skip_occurrence`)."""
    with pb.session() as session:
        execution = (
            session.get(ScheduleExecution, execution_id)
            if execution_id is not None
            else _find_by_time(pb, session, schedule, at)
        )
        if execution is None and execution_id is None and schedule is not None and at:
            return skip_ahead(pb, schedule, at)  # not queued yet: skipped ahead
        if execution is None:
            raise PostburnerError(_not_found(execution_id, schedule, at))
        skipped = execution.skip()
        owner = session.get(Schedule, execution.schedule_id) if execution.schedule_id else None
        upcoming = owner.future_live() if owner is not None else []
        return SkipResult(
            execution_id=execution.id,
            run_at=execution.run_at,
            skipped=skipped,
            status=execution.status,
            next_run_at=upcoming[0].run_at if upcoming else None,
            reason=None if skipped else _refusal(pb, execution.status, _key(execution)),
        )


def _not_found(execution_id: int | None, schedule: str | None, at: datetime | None) -> str:
    if execution_id is not None:
        return f"no execution with id {execution_id}"
    return "give an execution id, or a schedule name and an instant"


def _find_by_time(
    pb: Postburner, session: Session, schedule: str | None, at: datetime | None
) -> ScheduleExecution | None:
    if schedule is None or at is None:
        return None
    return pb.store.live_execution_at(session, schedule, at)


def skip_ahead(pb: Postburner, name: str, at: datetime) -> SkipResult:
    """Skip the occurrence of schedule ``name`` at ``at``; why not when it was not."""
    with pb.session() as session:
        schedule = pb.store.schedule_by_name(session, name)
        if schedule is None:
            raise PostburnerError(f"no schedule named {name!r}")
        skipped = schedule.skip_occurrence(at)
        upcoming = schedule.future_live()
        status = _dispatch_status(pb, name, at) or "skipped"
        return SkipResult(
            execution_id=None,
            run_at=at,
            skipped=skipped,
            status=status,
            next_run_at=upcoming[0].run_at if upcoming else None,
            schedule=name,
            reason=None if skipped else _refusal(pb, None, (name, at)),
        )


def _key(execution: ScheduleExecution) -> tuple[str, datetime]:
    return str(execution.cached_schedule["name"]), execution.run_at


def _dispatch_status(pb: Postburner, key: str, fire_time: datetime) -> str | None:
    entry = SqlDispatchRegistry(pb.session_factory, clock=pb.clock).find_dispatch(key, fire_time)
    return None if entry is None else str(entry.status)


def _refusal(pb: Postburner, execution_status: str | None, occurrence: tuple[str, datetime]) -> str:
    """Why an occurrence was not skipped, in words."""
    status = _dispatch_status(pb, *occurrence)
    if status == DispatchStatus.SKIPPED or execution_status == "skipped":
        return "it is already skipped"
    if status in (DispatchStatus.DISPATCHED, DispatchStatus.COMPLETED, DispatchStatus.FAILED):
        return f"a worker has already claimed it (dispatch status {status}); it cannot be skipped"
    if status is not None:
        return f"it is recorded {status} in the dispatch log; it will not run"
    return f"its execution is {execution_status}, no longer queued"


# --- enable / disable by name ----------------------------------------------------------------


@dataclass(frozen=True)
class EnableResult:
    """What ``enable``/``disable`` did: whether the flag changed and what is queued next."""

    name: str
    enabled: bool
    changed: bool
    next_run_at: datetime | None

    def describe(self) -> str:
        """One line for the operator."""
        state = "enabled" if self.enabled else "disabled"
        verdict = state if self.changed else f"already {state}"
        following = self.next_run_at.isoformat() if self.next_run_at else "nothing"
        return f"schedule {self.name} {verdict}; next queued: {following}"


def set_enabled(
    pb: Postburner, name: str, enabled: bool, *, now: datetime | None = None
) -> EnableResult:
    """Enable or disable the schedule ``name``, commit, and reconcile its queue.

    A schedule whose stored row cannot be planned can always be disabled; enabling it raises
    :class:`~postburner_py.errors.UnplannableScheduleError` naming it, writing nothing.
    """
    with pb.session() as session:
        # Instants load only when needed: a row SQLite cannot load them from can be disabled.
        schedule = pb.store.schedule_by_name(session, name, defer_instants=True)
        if schedule is None:
            raise PostburnerError(f"no schedule named {name!r}")
        if schedule.label is not None:
            raise PostburnerError(
                f"schedule {name!r} belongs to schedule file label {schedule.label!r}, whose "
                f"sync sets enabled; change it in the file, or `postburner pause {name}` "
                "(a sync never resumes a pause)"
            )
        changed = schedule.enabled != enabled
        if enabled:
            with planning(name):
                schedule.enable(now=now)
        else:
            _disable(pb, session, schedule, now)
        upcoming = schedule.future_live(now)
        return EnableResult(name, enabled, changed, upcoming[0].run_at if upcoming else None)


def _disable(pb: Postburner, session: Session, schedule: Schedule, now: datetime | None) -> None:
    """``schedule.disable()`` without validating the row on flush: disabling is the way out
    for a row that cannot be planned, so it must not need one that can."""
    from postburner_py.schedules.lifecycle import reconcile_schedule

    pb.store.disable_schedule(session, schedule.id)
    session.commit()
    with contextlib.suppress(UnplannableScheduleError):  # disabled all the same, retired
        reconcile_schedule(pb, schedule.id, now=now)
    session.refresh(schedule, ["enabled"])  # after the reconcile: it must see what that did


# --- pause / resume / delete by name -----------------------------------------------------------


@dataclass(frozen=True)
class PauseResult:
    """What ``pause``/``resume`` did: the state now, whether it changed, and what is queued."""

    name: str
    paused: bool
    changed: bool
    paused_at: datetime | None
    reason: str | None
    next_run_at: datetime | None

    def describe(self) -> str:
        """One line for the operator."""
        following = self.next_run_at.isoformat() if self.next_run_at else "nothing"
        if not self.paused:
            verdict = "resumed" if self.changed else "not paused"
            return f"schedule {self.name} {verdict}; next queued: {following}"
        since = self.paused_at.isoformat() if self.paused_at else "?"
        verdict = "paused" if self.changed else "already paused"
        return f"schedule {self.name} {verdict} since {since} ({self.reason or 'no reason'})"


def set_paused(
    pb: Postburner,
    name: str,
    paused: bool,
    *,
    reason: str | None = None,
    now: datetime | None = None,
) -> PauseResult:
    """Pause (with ``reason``) or resume the schedule ``name``; see :meth:`Schedule.pause`."""
    with pb.session() as session:
        schedule = pb.store.schedule_by_name(session, name)
        if schedule is None:
            raise PostburnerError(f"no schedule named {name!r}")
        with planning(name):
            changed = schedule.pause(reason, now=now) if paused else schedule.resume(now=now)
        upcoming = schedule.future_live(now)
        return PauseResult(
            name,
            schedule.is_paused,
            changed,
            schedule.paused_at,
            schedule.pause_reason,
            upcoming[0].run_at if upcoming else None,
        )


def delete_schedule(pb: Postburner, name: str) -> int:
    """Delete the schedule ``name``: its executions not yet run are retired in the same
    commit and their jobs removed right after it (the watchdog removes any it could not);
    its history and dispatch log stay. Returns how many live executions were retired."""
    with pb.session() as session:
        schedule = pb.store.schedule_by_name(session, name, defer_instants=True)
        if schedule is None:
            raise PostburnerError(f"no schedule named {name!r}")
        live = len(schedule.future_live())
        session.delete(schedule)
        session.commit()
        return live


# --- dispatch log listing --------------------------------------------------------------------


def list_dispatches(
    pb: Postburner,
    *,
    key: str | None = None,
    node: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
) -> list[DispatchEntry]:
    """Dispatch log rows, newest ``fire_time`` first, filtered by one key or one node.

    Without ``key`` and ``node`` it lists every key (by ``status`` when given).
    """
    if key is not None and node is not None:
        raise ValueError("filter by key or by node, not both")
    registry = SqlDispatchRegistry(pb.session_factory, clock=pb.clock)
    if key is not None:
        return registry.find_by_key(key, status=status, since=since, until=until, limit=limit)
    if node is not None:
        return registry.find_by_node(node, status=status, since=since, until=until, limit=limit)
    statuses = [status] if status is not None else list(DispatchStatus)
    entries = [
        entry
        for one in statuses
        for entry in registry.find_by_status(one, since=since, until=until, limit=limit)
    ]
    entries.sort(key=lambda entry: entry.fire_time, reverse=True)
    return entries[:limit]


# --- starter files (postburner init) ---------------------------------------------------------

ENV_FILE = "postburner.env"
SECRET_FILE = "postburner-secret.env"
#: What ``postburner init`` sets, not just documents: docker-compose.yml reads these (its
#: ``postgres`` service the ``POSTGRES_*`` lines, the postburner services the rest).
_COMPOSE_VALUES = {
    "POSTBURNER_BEANSTALKD_URL": "beanstalk://beanstalkd:11300",
    "POSTBURNER_CONCURRENCY": "4",
    "POSTBURNER_WATCHDOG_INTERVAL": "30",
    "POSTBURNER_METRICS_PORT": "9108",
}
_ENV_HEADER = """\
# postburner settings, written by `postburner init`. Every setting is a POSTBURNER_*
# variable; a command-line option of the same name wins over it. Reference:
# docs/configuration.md. Keep this file out of version control.
#
# Set up for docker-compose.yml (hosts `postgres` and `beanstalkd`; its postgres service
# reads the POSTGRES_* lines). Elsewhere (systemd's EnvironmentFile=, a Kubernetes Secret,
# `set -a; . ./postburner.env; set +a`) point the URLs at your servers.
# The signing secret is in postburner-secret.env, read only by workers and watchdogs.

POSTGRES_USER=postburner
POSTGRES_PASSWORD={password}
POSTGRES_DB=postburner

"""
_SECRET_FILE_TEXT = """\
# The HMAC key that signs job bodies (docs/configuration.md, `secret`): the same in every
# process that queues or runs jobs (workers, watchdogs, your application), and only there.
# Do not change it while jobs are queued.
POSTBURNER_SECRET={secret}
"""


def starter_config(password: str) -> str:
    """The ``postburner.env`` text: the ``POSTGRES_*`` lines, then every variable of
    :data:`postburner_py.config.VARIABLES` (the secret excepted) with its meaning and
    default, set where the compose file needs a value, commented out otherwise."""
    from postburner_py.config import VARIABLES

    values = {
        **_COMPOSE_VALUES,
        "POSTBURNER_DATABASE_URL": (
            f"postgresql+psycopg://postburner:{password}@postgres:5432/postburner"
        ),
    }
    blocks = [
        _variable_block(variable, values.get(variable.name))
        for variable in VARIABLES
        if variable.name != "POSTBURNER_SECRET"
    ]
    return _ENV_HEADER.format(password=password) + "\n".join(blocks)


def _variable_block(variable: Any, value: str | None) -> str:
    comment = f"# {variable.meaning}. Default: {variable.default}\n"
    if value is not None:
        return f"{comment}{variable.name}={value}\n"
    return f"{comment}# {variable.name}={variable.example}\n"


def starter_secret(secret: str) -> str:
    """The ``postburner-secret.env`` text."""
    return _SECRET_FILE_TEXT.format(secret=secret)


STARTER_SCHEDULES = """\
# Schedules for postburner. Apply with `postburner sync schedules.yml` (--dry-run to preview).
#
# "defaults" applies everywhere; the section named by --env (or POSTBURNER_ENV, default
# "production") is deep-merged over it, entry by entry, matched by key. A sync touches only
# the schedules of this file's label (--label, default: the file name without extension);
# the ones of its label the file no longer mentions are disabled (deleted with --prune).
#
# Fields: key (the schedule name), job_class, cron | interval + interval_unit [+ anchor],
# timezone, args, kwargs, queue, priority, ttr, max_attempts, timeout, no_retry_on, catch_up,
# catch_up_window, starts_at, ends_at, enabled, description.
# Placeholders in args and kwargs, filled for each occurrence: {{fire_time.iso8601}},
# {{fire_time.unix}}, {{idempotency_key}}, {{key}}. Reference: docs/schedule-files.md.

defaults:
  jobs:
    - key: "examples:heartbeat"
      description: "Shows the pipeline is alive, every 5 seconds"
      job_class: "postburner_py.examples:heartbeat"
      interval: 5
      interval_unit: seconds
      ttr: 30

    - key: "examples:minute_report"
      description: "A report at the start of every minute"
      job_class: "postburner_py.examples:minute_report"
      cron: "* * * * *"
      timezone: "UTC"
      kwargs:
        fire_time: "{{fire_time.iso8601}}"
        idempotency_key: "{{idempotency_key}}"

# An environment section overrides single fields of the defaults, e.g.:
# production:
#   jobs:
#     - key: "examples:heartbeat"
#       enabled: false
"""


def starter_files() -> dict[str, str]:
    """The files ``postburner init`` writes, by name, with a fresh database password and
    signing secret each time."""
    return {
        ENV_FILE: starter_config(secrets.token_hex(16)),
        SECRET_FILE: starter_secret(secrets.token_hex(32)),
        "schedules.yml": STARTER_SCHEDULES,
    }


def write_starter_files(directory: str | Path) -> list[Path]:
    """Write ``postburner.env``, ``postburner-secret.env`` and ``schedules.yml`` into
    ``directory``; never overwrite.

    Raises :class:`PostburnerError` naming the first file that already exists, having
    written nothing. The two environment files are readable by their owner only.
    """
    folder = Path(directory)
    targets = {folder / name: text for name, text in starter_files().items()}
    for path in targets:
        if path.exists():
            raise PostburnerError(f"{path} already exists; not overwriting it")
    folder.mkdir(parents=True, exist_ok=True)
    for path, text in targets.items():
        with path.open("x", encoding="utf-8") as handle:
            if path.suffix == ".env":
                os.chmod(path, 0o600)
            handle.write(text)
    return list(targets)
