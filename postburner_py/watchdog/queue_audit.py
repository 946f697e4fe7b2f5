"""The queue audit: does Beanstalkd still hold the jobs the database says it does?

Beanstalkd loses every job when it restarts without a binlog, and then hands out job ids from 1
again; even with a binlog it gets a new server id (``stats()['id']``) on every start. Each audit
compares, at a constant cost (one ``stats`` plus one ``stats-tube`` per tube in use, and one
grouped query per kind of row), what the database expects with what the server reports:

* rows whose job was put on *another* server id (a restart since the put), and
* per tube, the jobs of future rows recorded on *this* server versus the jobs the tube holds
  (in any state: a job may have been kicked, or be reserved a moment before its run_at).

Only when those disagree does it look closer: each suspect job is fetched with ``peek`` and its
body must carry a valid signature and name the row (kind, id, key, run_at). A job that is
there gets the current server id recorded; a missing one has its job id cleared and is put
again at once (executions with the catch-up rule for the ones already due,
:func:`~postburner_py.watchdog.reconcile_pass.queue_unqueued`).

Rows are schedule executions (live) and one-off delayed jobs (pending).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from postburner_py.errors import QueueUnavailableError, ScheduleValidationError, SignatureError
from postburner_py.queue.beanstalk import QueuedJob
from postburner_py.queue.signing import decode_body
from postburner_py.schedules.chaining import PassReport, chunks
from postburner_py.store import store_for
from postburner_py.store.contract.schedules import JobKind
from postburner_py.watchdog.reconcile_pass import (
    REPAIR_BATCH,
    queue_unqueued,
    queue_unqueued_delayed,
)

if TYPE_CHECKING:
    from postburner_py.app import Postburner

log = logging.getLogger("postburner_py.watchdog")

#: Rows due this soon are left out of the per-tube counts: the put delay is floored to whole
#: seconds, so their job may already be ready, reserved, or run and deleted.
MARGIN = timedelta(seconds=2)
_TUBE_STATES = (
    "current-jobs-delayed",
    "current-jobs-ready",
    "current-jobs-reserved",
    "current-jobs-buried",
)
Requeue = Callable[["Postburner", datetime, PassReport, Sequence[int]], None]


@dataclass(frozen=True)
class Kind:
    """One kind of row that owns a Beanstalkd job: the job body's kind, and how to put the
    rows whose job is lost back."""

    name: JobKind
    requeue: Requeue


def _kinds() -> tuple[Kind, ...]:
    executions = Kind(
        "execution", lambda pb, now, report, ids: queue_unqueued(pb, now, report, ids=ids)
    )
    delayed = Kind(
        "delayed", lambda pb, now, report, ids: queue_unqueued_delayed(pb, now, report, ids=ids)
    )
    return executions, delayed


@dataclass(frozen=True)
class Suspicion:
    """What the cheap comparison found: whether any job id is foreign, which tubes are short."""

    server_id: str
    foreign: bool
    short_queues: tuple[str, ...]

    @property
    def clean(self) -> bool:
        """True when the database and Beanstalkd agree: nothing to verify."""
        return not self.foreign and not self.short_queues


def audit_queue(pb: Postburner, *, now: datetime, report: PassReport | None = None) -> PassReport:
    """Compare Beanstalkd with the database as of ``now``; verify and repair on disagreement."""
    report = report if report is not None else PassReport()
    try:
        suspicion = compare(pb, now)
        lost = (
            0
            if suspicion.clean
            else sum(_verify(pb, kind, now, suspicion, report) for kind in _kinds())
        )
    except QueueUnavailableError as exc:
        report.queue_error = str(exc)
        return report
    if lost:
        log.warning("queue audit: %d job(s) missing from Beanstalkd; putting them back", lost)
    return report


# --- the cheap comparison ---------------------------------------------------------------------


def compare(pb: Postburner, now: datetime) -> Suspicion:
    """One ``stats``, one grouped query per kind, one ``stats-tube`` per tube in use."""
    server_id = pb.queue.server_id()
    expected: Counter[str] = Counter()
    foreign = 0
    window = pb.settings.catch_up_window
    with pb.session() as session:
        store = store_for(session)
        for kind in _kinds():
            tally = store.audit_tally(session, kind.name, server_id, now, window, MARGIN)
            for queue, want, strangers in tally:
                if queue:
                    expected[queue] += want or 0
                foreign += strangers or 0
    short = tuple(sorted(queue for queue, want in expected.items() if _tube_short(pb, queue, want)))
    return Suspicion(server_id, foreign > 0, short)


def _tube_short(pb: Postburner, queue: str, expected: int) -> bool:
    try:
        stats = pb.queue.stats_tube(queue) or {}
    except ScheduleValidationError:
        return False  # a queue name written behind the API's back: nothing was put there
    return sum(int(stats.get(state, 0)) for state in _TUBE_STATES) < expected


# --- verification -----------------------------------------------------------------------------


def _verify(
    pb: Postburner, kind: Kind, now: datetime, suspicion: Suspicion, report: PassReport
) -> int:
    """Peek every suspect job of ``kind``; record the ones in place, re-put the missing."""
    rows = _suspects(pb, kind, now, suspicion)
    secret = pb.secret()
    present: list[Any] = []
    lost: list[Any] = []
    for row in rows:
        job = pb.queue.peek(row.beanstalk_job_id)
        (present if _is_job_of(job, kind, row, secret) else lost).append(row)
    moved = [row for row in present if row.beanstalk_server_id != suspicion.server_id]
    _adopt(pb, kind.name, moved, suspicion.server_id)
    _forget(pb, kind.name, lost)
    report.verified += len(present)
    report.missing += len(lost)
    if lost:
        kind.requeue(pb, now, report, [row.id for row in lost])
    return len(lost)


def _suspects(pb: Postburner, kind: Kind, now: datetime, suspicion: Suspicion) -> Sequence[Any]:
    """Rows with a foreign job id, and the future rows of the tubes that are short."""
    window = pb.settings.catch_up_window
    with pb.session() as session:
        return store_for(session).audit_suspects(
            session, kind.name, suspicion.server_id, suspicion.short_queues, now, window
        )


def _is_job_of(job: QueuedJob | None, kind: Kind, row: Any, secret: bytes) -> bool:
    """The job is this row's: its signed body names the row and the occurrence."""
    if job is None:
        return False
    try:
        body = decode_body(job.body, secret)
    except SignatureError:
        return False
    return (
        body.kind == kind.name
        and body.id == row.id
        and body.key == row.key
        and round(body.run_at.timestamp() * 1000) == round(row.run_at.timestamp() * 1000)
    )


def _adopt(pb: Postburner, kind: JobKind, rows: list[Any], server_id: str) -> None:
    """Record the current server id for jobs that survived the restart (binlog)."""
    for chunk in chunks(rows, REPAIR_BATCH * 10):
        with pb.work_session() as session:
            store_for(session).adopt_jobs(session.connection(), kind, chunk, server_id)
            session.commit()


def _forget(pb: Postburner, kind: JobKind, rows: list[Any]) -> None:
    """Clear the job ids of lost jobs (unless the row changed meanwhile): they are re-put next."""
    for chunk in chunks(rows, REPAIR_BATCH * 10):
        with pb.work_session() as session:
            store_for(session).forget_lost_jobs(session.connection(), kind, chunk)
            session.commit()
