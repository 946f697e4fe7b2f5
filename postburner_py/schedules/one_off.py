"""One-off delayed jobs: ``enqueue_at`` stores a job and puts it into Beanstalkd at once.

They go through the same signature check, dispatch-log gate (key ``job:<job_id>``, a
namespace no schedule name may enter) and history as scheduled work, and the watchdog
repairs them the same way. ``job_id`` is unique while the job is pending and may be reused
once it ran or was cancelled.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError

from postburner_py import validation
from postburner_py.errors import DuplicateJobError, QueueUnavailableError, ScheduleValidationError
from postburner_py.queue.beanstalk import validate_queue_name
from postburner_py.queue.operations import JobRef, remove_job
from postburner_py.queue.signing import JobBody, encode_body
from postburner_py.store import store_for
from postburner_py.store.models import DelayedJob, DelayedStatus
from postburner_py.tracing import enqueue_context

if TYPE_CHECKING:
    from postburner_py.app import Postburner

log = logging.getLogger("postburner_py.delayed_jobs")

PENDING = DelayedStatus.PENDING
COMPLETED = DelayedStatus.COMPLETED
FAILED = DelayedStatus.FAILED
CANCELLED = DelayedStatus.CANCELLED

__all__ = [
    "CANCELLED",
    "COMPLETED",
    "FAILED",
    "PENDING",
    "DelayedJob",
    "DelayedStatus",
    "cancel",
    "delayed_body",
    "enqueue_at",
    "job_state",
    "put_delayed",
]


def enqueue_at(
    pb: Postburner,
    at: datetime,
    job_class: str,
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    queue: str = "default",
    job_id: str | None = None,
    priority: int = validation.DEFAULT_PRIORITY,
    ttr: int = 300,
    max_attempts: int = 3,
    timeout: float | None = None,
    no_retry_on: Sequence[str] | None = None,
) -> DelayedJob:
    """Store a one-off job and put it into Beanstalkd, delayed until ``at``.

    ``timeout`` (seconds, None: no limit) and ``no_retry_on`` (exception class names that
    are never retried) are as on :class:`~postburner_py.store.models.Schedule`.

    Raises :class:`ScheduleValidationError` naming the parameter for bad input, before
    anything is written: ``args`` must be a list (or tuple) and ``kwargs`` a mapping of JSON
    values within the limits of :func:`~postburner_py.validation.validate_json`; ``at`` may
    be in the past (the job runs at once) but at most ``MAX_DELAY_SECONDS`` (about 136
    years) after now; text fits its column and holds no NUL or lone surrogate; integers are
    real ints in range. Placeholders such as ``{{fire_time.iso8601}}`` in the arguments are
    filled when the job runs; write ``\\{{`` for a literal ``{{``. Raises
    :class:`DuplicateJobError` when ``job_id`` is already pending. If Beanstalkd is
    unreachable the job stays stored without a Beanstalkd id; the watchdog queues it later.
    """
    row = _validated_row(
        pb, at, job_class, args, kwargs, queue, job_id, priority, ttr, max_attempts
    )
    row.timeout = validation.validate_timeout(timeout)
    row.no_retry_on = validation.validate_no_retry_on(no_retry_on)
    row.trace_context = enqueue_context()
    with pb.work_session() as session:
        session.add(row)
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            raise DuplicateJobError(
                f"job_id {row.job_id!r} is already pending; cancel it or pick another id"
            ) from None
    try:
        put_delayed(pb, row, now=pb.clock())
    except QueueUnavailableError as exc:
        log.warning(
            "job %s stored; Beanstalkd unreachable (%s): the watchdog queues it", row.job_id, exc
        )
    return row


def _validated_row(
    pb: Postburner,
    at: datetime,
    job_class: str,
    args: Sequence[Any],
    kwargs: dict[str, Any] | None,
    queue: str,
    job_id: str | None,
    priority: int,
    ttr: int,
    max_attempts: int,
) -> DelayedJob:
    """Every parameter checked against the same rules and columns as a Schedule's."""
    validation.require_aware("at", at)
    validation.check_delay("at", at, pb.clock())
    job_class = _fits("job_class", validation.validate_job_class(job_class))
    validation.check_job_allowed(job_class, pb.settings.allowed_job_prefixes)
    job_id = job_id if job_id is not None else uuid.uuid4().hex
    if not isinstance(job_id, str) or not job_id or len(job_id) > 200:
        raise ScheduleValidationError("job_id", "must be a non-empty string of at most 200 chars")
    queue = validate_queue_name(queue, namespace=pb.settings.namespace)
    ttr = validation.validate_positive_int("ttr", ttr, "seconds a worker may run the job")
    attempts = validation.validate_positive_int("max_attempts", max_attempts, "1: no retry")
    return DelayedJob(
        job_id=_fits("job_id", job_id),
        job_class=job_class,
        args=validation.validate_args(args),
        kwargs=validation.validate_kwargs(kwargs),
        queue=_fits("queue", queue),
        priority=_fits("priority", validation.validate_priority(priority)),
        ttr=_fits("ttr", ttr),
        max_attempts=_fits("max_attempts", attempts),
        run_at=at,
        status=PENDING,
    )


def _fits(field: str, value: Any) -> Any:
    return validation.fit_column(field, value, DelayedJob.__table__.c[field])


def delayed_body(pb: Postburner, row: DelayedJob) -> bytes:
    """The signed body naming ``row``."""
    return encode_body(JobBody("delayed", row.id, row.job_id, row.run_at), pb.secret())


def put_delayed(pb: Postburner, row: DelayedJob, *, now: datetime) -> None:
    """Put ``row`` into Beanstalkd and record where it went (only while still pending)."""
    with pb.work_session() as session:
        store = store_for(session)
        claimed = store.claim_delayed(session, row.id, now)
        session.commit()
        if not claimed:
            return
        try:
            job = pb.queue.put_at(
                delayed_body(pb, row),
                queue=row.queue,
                priority=row.priority,
                run_at=row.run_at,
                now=now,
                ttr=row.ttr,
            )
        except QueueUnavailableError:
            store.set_delayed_job(session, row.id, None, None)
            session.commit()
            raise
        server = pb.queue.server_id()
        store.set_delayed_job(session, row.id, job, server)
        session.commit()
    row.beanstalk_job_id, row.beanstalk_server_id = job, server


def cancel(pb: Postburner, job_id: str) -> bool:
    """Cancel a pending one-off job; False when none is pending or it has already started
    (:func:`job_state` then says what became of it: ``completed``, ``failed`` (its attempts
    are spent, a worker lost included), ``cancelled``, or ``pending`` while it runs)."""
    with pb.work_session() as session:
        store = store_for(session)
        row = store.pending_delayed_for_update(session, job_id)
        if row is None or store.occurrence_claimed(session, row.occurrence_key, row.run_at):
            return False
        row.status = CANCELLED
        session.commit()
        ref = JobRef(row.id, row.beanstalk_job_id, row.beanstalk_server_id, kind="delayed")
        if remove_job(pb, ref):
            row.beanstalk_job_id = None
            session.commit()
    return True


def job_state(pb: Postburner, job_id: str) -> str | None:
    """The status of the newest one-off job with ``job_id`` (None: there is none). Once it
    is ``completed``, ``failed`` or ``cancelled`` the job_id may be enqueued again."""
    with pb.work_session() as session:
        return store_for(session).delayed_status(session, job_id)
