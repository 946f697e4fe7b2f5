"""Session events that make the Python API behave: validate on flush, reconcile after commit.

Creating a schedule, changing what or when it runs, enabling, disabling or deleting it
reconciles that schedule right after the session commits, so its next occurrence is in
Beanstalkd at once. A save that changes nothing cached reconciles nothing. If Beanstalkd is
unreachable then, the commit still stands, a warning is logged and the watchdog converges.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import event, inspect
from sqlalchemy.orm import Session, sessionmaker

from postburner_py.errors import QueueUnavailableError
from postburner_py.queue.operations import JobRef

# The lifecycle rules register themselves with the models on import: every session these
# hooks are installed on can run ``schedule.reconcile()`` and the execution methods.
from postburner_py.schedules import lifecycle, run_control  # noqa: F401
from postburner_py.store import store_for
from postburner_py.store.models import CACHEABLE_ATTRIBUTES, Schedule
from postburner_py.validation import check_job_allowed

if TYPE_CHECKING:
    from postburner_py.app import Postburner

log = logging.getLogger("postburner_py.hooks")

_TOUCHED = "postburner_touched_schedules"
_TO_RECONCILE = "postburner_reconcile_ids"
_ORPHANED_JOBS = "postburner_orphaned_jobs"
#: Above this many schedules changed in one commit, one set-based pass replaces reconciling
#: each schedule on its own (a handful of statements instead of several per schedule).
ONE_BY_ONE_LIMIT = 20


def install_session_hooks(factory: sessionmaker[Session]) -> None:
    """Attach the validation and reconcile-on-commit events to sessions from ``factory``."""
    event.listen(factory, "before_flush", _before_flush)
    event.listen(factory, "after_flush_postexec", _after_flush_postexec)
    event.listen(factory, "after_commit", _after_commit)
    event.listen(factory, "after_rollback", _after_rollback)


def _before_flush(session: Session, _context: Any, _instances: Any) -> None:
    pb: Postburner = session.info["postburner"]
    now = pb.clock()
    for schedule in _schedules(session.new):
        _validate(pb, schedule)
        schedule.resumed_at = now
        _touched(session).add(schedule)
    for schedule in _schedules(session.dirty):
        cached_changed, enabled_changed = _changes(schedule)
        if cached_changed or enabled_changed:
            _validate(pb, schedule)
            if cached_changed or schedule.enabled:
                schedule.resumed_at = now
            _touched(session).add(schedule)
    for schedule in _schedules(session.deleted):
        _retire_executions_of(session, schedule.id)


def _schedules(objects: Any) -> list[Schedule]:
    return [obj for obj in objects if isinstance(obj, Schedule)]


def _changes(schedule: Schedule) -> tuple[bool, bool]:
    state = inspect(schedule)
    cached = any(state.attrs[name].history.has_changes() for name in CACHEABLE_ATTRIBUTES)
    return cached, state.attrs["enabled"].history.has_changes()


def _validate(pb: Postburner, schedule: Schedule) -> None:
    schedule.validate()
    check_job_allowed(schedule.job_class, pb.settings.allowed_job_prefixes)


def _touched(session: Session) -> set[Schedule]:
    touched: set[Schedule] = session.info.setdefault(_TOUCHED, set())
    return touched


def _retire_executions_of(session: Session, schedule_id: int) -> None:
    """A deleted schedule's live executions are superseded in the same transaction."""
    rows = store_for(session).retire_executions_of(session, schedule_id)
    orphans: list[JobRef] = session.info.setdefault(_ORPHANED_JOBS, [])
    orphans.extend(JobRef(row[0], row[1], row[2]) for row in rows if row[1] is not None)


def _after_flush_postexec(session: Session, _context: Any) -> None:
    touched: set[Schedule] = session.info.pop(_TOUCHED, set())
    ids: set[int] = session.info.setdefault(_TO_RECONCILE, set())
    ids.update(schedule.id for schedule in touched if schedule.id is not None)


def _after_commit(session: Session) -> None:
    ids: set[int] = session.info.pop(_TO_RECONCILE, set())
    orphans: list[JobRef] = session.info.pop(_ORPHANED_JOBS, [])
    if not ids and not orphans:
        return
    pb: Postburner = session.info["postburner"]
    from postburner_py.watchdog.reconcile_pass import reconcile_pass

    if orphans:
        _guarded(lambda: _forget_removed(pb, orphans), "deleted schedules")
    if len(ids) > ONE_BY_ONE_LIMIT:
        _guarded(lambda: reconcile_pass(pb, now=pb.clock()), f"{len(ids)} schedules")
        return
    for schedule_id in sorted(ids):
        _guarded(
            functools.partial(lifecycle.reconcile_schedule, pb, schedule_id),
            f"schedule {schedule_id}",
        )


def _guarded(work: Callable[[], object], what: str) -> None:
    """The commit stands whatever happens next: mirroring it in Beanstalkd may fail, and is
    then logged for the watchdog to converge, never raised into the caller's ``commit()``."""
    try:
        work()
    except QueueUnavailableError as exc:
        log.warning(
            "%s saved, but Beanstalkd is unreachable (%s); "
            "the watchdog will queue it when the server is back",
            what,
            exc,
        )
    except Exception:
        log.exception(
            "%s saved, but converging the queue failed; the watchdog will repair it", what
        )


def _after_rollback(session: Session) -> None:
    for key in (_TOUCHED, _TO_RECONCILE, _ORPHANED_JOBS):
        session.info.pop(key, None)


def _forget_removed(pb: Postburner, orphans: list[JobRef]) -> None:
    with pb.session() as session:
        lifecycle.remove_jobs(pb, session, orphans)
