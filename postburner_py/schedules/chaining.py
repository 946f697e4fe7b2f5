"""Creating the next executions of schedules: one operation the watchdog and the worker share.

:func:`create_next_executions` is the lean creation path: for a batch of schedules, under the
per-schedule locks it can take without waiting, it re-reads the ones still without a live
future execution, plans them, records their missed occurrences, inserts the new executions in
one statement (already claimed for the put) and commits; the puts then go out on a background
thread (:class:`BackgroundPuts`), pipelined over several connections, and the job ids are
recorded chunk by chunk. The watchdog's reconcile pass runs it for every schedule missing an
execution; the worker's chainer runs it through :func:`chain_next_many` once an occurrence
has started. Every database statement is a method of the store
(:class:`~postburner_py.store.contract.schedules.ScheduleStore`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from postburner_py.config import MAX_CATCH_UP_WINDOW
from postburner_py.errors import PostburnerError, QueueUnavailableError, UnplannableScheduleError
from postburner_py.queue.beanstalk import PutRequest, delay_seconds
from postburner_py.queue.operations import JobRef, remove_job
from postburner_py.queue.signing import JobBody, encode_body
from postburner_py.schedules.planning import (
    SchedulePlan,
    catch_up_window,
    plan_schedule,
    planning,
    stored_window,
)
from postburner_py.store import store_for
from postburner_py.store.contract.schedules import PlannedExecution, PutRef
from postburner_py.timegrid.jitter import start_instant
from postburner_py.timegrid.window import WindowedGrid

if TYPE_CHECKING:
    from sqlalchemy import Row
    from sqlalchemy.orm import Session

    from postburner_py.app import Postburner

log = logging.getLogger("postburner_py.watchdog")
chain_log = logging.getLogger("postburner_py.lifecycle")

#: Schedules per transaction when creating executions.
CREATE_BATCH = 1000
#: Jobs per ``put_many`` call; job ids are recorded after each chunk.
PUT_CHUNK = 8000
#: Connections ``put_many`` may spread one chunk over.
PUT_CONNECTIONS = 4
_MAX_UINT32 = 2**32 - 1
#: Schedules that cannot be planned listed by name in a report (all are counted).
MAX_LISTED_INVALID = 100
_UNLISTED_INVALID = f"more than {MAX_LISTED_INVALID} schedules cannot be planned; the rest unlisted"
T = TypeVar("T")


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """``items`` in consecutive slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass
class PassReport:
    """What one watchdog pass did (counts are rows or jobs, ``duration`` is seconds)."""

    #: Executions created (new schedules, a chain that broke, re-enabled or changed schedules).
    created: int = 0
    #: Live executions retired: drifted, duplicated, of disabled/deleted schedules, too late.
    superseded: int = 0
    #: Schedules whose future executions were converged (drift, duplicates).
    repaired: int = 0
    #: Jobs the queue audit found missing from Beanstalkd.
    missing: int = 0
    #: Existing executions put (again): never queued, or lost by Beanstalkd.
    requeued: int = 0
    #: Occurrences recorded ``missed`` in the dispatch log.
    missed: int = 0
    #: Jobs the queue audit checked with ``peek`` and found in place.
    verified: int = 0
    #: Jobs of skipped or superseded executions deleted from Beanstalkd.
    removed: int = 0
    #: Executions left without a job because Beanstalkd is unavailable (retried next pass).
    unqueued: int = 0
    #: Schedules or executions skipped because their stored values cannot be planned or queued.
    invalid: int = 0
    duration: float = 0.0
    #: Why Beanstalkd work was skipped in this pass, if it was.
    queue_error: str | None = None
    problems: list[str] = field(default_factory=list)
    #: Schedules that cannot be planned: name to reason (at most MAX_LISTED_INVALID).
    invalid_schedules: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for logs and ``postburner tick``."""
        counts = ", ".join(f"{name} {value}" for name, value in self.counts().items())
        line = f"{counts} in {self.duration:.3f}s"
        if self.queue_error:
            line += f" (Beanstalkd unavailable: {self.queue_error})"
        return line

    def counts(self) -> dict[str, int]:
        """The integer counters by name."""
        return {k: v for k, v in asdict(self).items() if isinstance(v, int)}

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in the heartbeat row)."""
        return asdict(self)

    def note(self, problem: str) -> None:
        """Remember a problem worth one log line (kept short: at most ten per pass)."""
        if len(self.problems) < 10:
            self.problems.append(problem)

    def unplannable(self, error: UnplannableScheduleError) -> None:
        """Count a schedule whose row cannot be planned, and remember why (one log line)."""
        self.invalid += 1
        if len(self.invalid_schedules) < MAX_LISTED_INVALID:
            self.invalid_schedules[error.name] = error.reason
        elif (overflow := _UNLISTED_INVALID) not in self.problems:
            self.note(overflow)

    def log_problems(self) -> None:
        """One warning per problem and per schedule that cannot be planned."""
        for problem in self.problems:
            log.warning("%s", problem)
        for name, reason in self.invalid_schedules.items():
            log.warning("schedule %r cannot be planned, nothing queued: %s", name, reason)


@dataclass(frozen=True)
class QueuedExecution:
    """An execution to put: what the job body and the put need, without the ORM object."""

    execution_id: int
    key: str
    run_at: datetime
    queue: str
    priority: int
    ttr: int
    #: Seconds of jitter (None: none): the job is delayed to :attr:`start_at`.
    jitter: float | None = None

    @property
    def start_at(self) -> datetime:
        """The instant the occurrence starts (``run_at`` plus its jitter offset)."""
        return start_instant(self.key, self.run_at, self.jitter)

    @classmethod
    def of(cls, execution_id: int, run_at: datetime, snapshot: dict[str, Any]) -> QueuedExecution:
        """Built from an execution's id, ``run_at`` and ``cached_schedule``."""
        return cls(
            execution_id,
            str(snapshot["name"]),
            run_at,
            str(snapshot["queue"]),
            int(snapshot["priority"]),
            int(snapshot["ttr"]),
            snapshot.get("jitter"),
        )


def create_next_executions(
    pb: Postburner, schedule_ids: list[int], now: datetime, report: PassReport
) -> None:
    """Create (and queue) the next execution of the given schedules, if they still have none.

    Schedules whose lock is held elsewhere are left alone (their holder converges them);
    counts and problems go to ``report``.
    """
    with BackgroundPuts(pb, report) as puts:
        for chunk in chunks(schedule_ids, CREATE_BATCH):
            with pb.work_session() as session:
                store = store_for(session)
                locked = store.try_lock_schedules(session, pb.settings.namespace, chunk)
                planned = _create_batch(pb, session, sorted(locked), now, report)
                session.commit()
            report.created += len(planned)
            puts.submit(planned)


def _create_batch(
    pb: Postburner, session: Session, schedule_ids: list[int], now: datetime, report: PassReport
) -> list[QueuedExecution]:
    """Inside the locked transaction: re-check, plan, insert. Returns the rows to put."""
    if not schedule_ids:
        return []
    store = store_for(session)
    schedules = store.plan_rows(session, schedule_ids, now)
    latest = store.latest_accounted(session, [row.id for row in schedules], now)
    # Skipped points are rare rows: one indexed read covers any catch-up window's reach.
    since = now - MAX_CATCH_UP_WINDOW
    planner = _Planner(pb, now, store.skipped_ahead(session, [r.name for r in schedules], since))
    plans = {row.id: found for row in schedules if (found := planner.plan(row, latest, report))}
    due = [sid for sid, p in plans.items() if p.is_due(now)]
    waiting = store.schedules_with_waiting(session, due, now)
    news: list[PlannedExecution] = []
    missed: list[tuple[str, datetime]] = []
    for row in schedules:
        if row.id not in plans:
            continue
        plan = plans[row.id]
        missed += _missed(str(row.name), plan)
        if plan.run_at is not None and not (plan.is_due(now) and row.id in waiting):
            news.append(PlannedExecution(row, plan.run_at, plan.following))
    report.missed += store.record_missed(session, missed, node_id=pb.settings.node_id, now=now)
    inserted = store.insert_executions(session, news, now)
    by_key = {(new.row.id, new.run_at): new for new in news}
    return [_queued(by_key[(sid, run_at)], eid) for eid, sid, run_at in inserted]


def _queued(new: PlannedExecution, execution_id: int) -> QueuedExecution:
    """What the put needs, once the row has its id."""
    row = new.row
    return QueuedExecution(
        execution_id, row.name, new.run_at, row.queue, row.priority, row.ttr, row.jitter
    )


class _Planner:
    """``plan_schedule`` for many schedules; schedules sharing a spec and baseline share the
    work (a schedule with points skipped ahead is planned on its own)."""

    def __init__(
        self, pb: Postburner, now: datetime, skipped: dict[str, set[datetime]] | None = None
    ) -> None:
        self.pb = pb
        self.now = now
        self.skipped = skipped or {}
        self._grids: dict[tuple[Any, ...], WindowedGrid] = {}
        self._plans: dict[tuple[Any, ...], SchedulePlan] = {}
        self._tubes: set[str] = set()

    def plan(
        self, row: Row[Any], latest: dict[int, datetime], report: PassReport
    ) -> SchedulePlan | None:
        """The next occurrence of ``row``'s schedule and the grid point after it; None
        (counted invalid) when the row cannot be planned or queued."""
        try:
            self._check_puttable(row)
        except PostburnerError as exc:
            report.invalid += 1
            report.note(f"schedule {row.name!r} cannot be queued: {exc}")
            return None
        try:
            with planning(row.name):
                return self._plan(row, latest)
        except UnplannableScheduleError as exc:
            report.unplannable(exc)
            return None

    def _plan(self, row: Row[Any], latest: dict[int, datetime]) -> SchedulePlan:
        accounted = (t for t in (latest.get(row.id), row.resumed_at) if t is not None)
        baseline = max(accounted, default=self.now)
        window = catch_up_window(row, self.pb.settings.catch_up_window)
        skipped = self.skipped.get(str(row.name), set())
        key = (*_spec(row), baseline, bool(row.catch_up), window, *sorted(skipped))
        if key not in self._plans:
            self._plans[key] = plan_schedule(
                self.grid(row),
                baseline=baseline,
                now=self.now,
                catch_up=bool(row.catch_up),
                window=window,
                skipped=skipped,
            )
        return self._plans[key]

    def grid(self, row: Row[Any]) -> WindowedGrid:
        """The schedule's occurrence grid (raises for a bad spec, see
        :mod:`postburner_py.schedules.planning`)."""
        spec = _spec(row)
        if spec not in self._grids:
            self._grids[spec] = stored_window(row)
        return self._grids[spec]

    def _check_puttable(self, row: Row[Any]) -> None:
        if row.queue not in self._tubes:
            check_puttable(self.pb, row.queue, row.priority, row.ttr)
            self._tubes.add(row.queue)
        else:
            check_puttable(self.pb, None, row.priority, row.ttr)


def _spec(row: Row[Any]) -> tuple[Any, ...]:
    spec = (row.cron, row.anchor, row.interval, row.interval_unit, row.timezone)
    return (*spec, row.dst_gap, row.dst_fold, row.starts_at, row.ends_at)


def check_puttable(pb: Postburner, queue: Any, priority: Any, ttr: Any) -> None:
    """Refuse values written behind the API's back that Beanstalkd would reject
    (``queue`` None: already checked)."""
    if queue is not None:
        pb.queue.tube(str(queue))
    for name, value, low in (("priority", priority, 0), ("ttr", ttr, 1)):
        if not isinstance(value, int) or not low <= value <= _MAX_UINT32:
            raise PostburnerError(f"{name} {value!r} is not an integer {low}..{_MAX_UINT32}")


def _missed(key: str, plan: SchedulePlan) -> list[tuple[str, datetime]]:
    if plan.missed_total > len(plan.missed):
        log.warning(
            "schedule %s missed %d occurrences; the first %d are in the dispatch log",
            key,
            plan.missed_total,
            len(plan.missed),
        )
    return [(key, fire_time) for fire_time in plan.missed]


# --- putting and recording --------------------------------------------------------------------


class BackgroundPuts:
    """Puts batches on a background thread while the pass goes on writing the next batch.

    Each submitted batch is already committed (claimed). Leaving the ``with`` block waits for
    every put and record; ``left`` is then how many executions could not be put.
    """

    def __init__(self, pb: Postburner, report: PassReport) -> None:
        self.pb = pb
        self.report = report
        self.left = 0
        self._pending: list[Future[int]] = []

    def __enter__(self) -> BackgroundPuts:
        return self

    def submit(self, items: Sequence[QueuedExecution]) -> None:
        """Put ``items`` (and record their job ids) in the background."""
        if items:
            self._pending.append(_putter().submit(put_and_record, self.pb, items, self.report))

    def __exit__(self, *_exc: object) -> None:
        for future in self._pending:
            self.left += future.result()


_PUTTER: list[ThreadPoolExecutor] = []
_PUTTER_LOCK = threading.Lock()


def _putter() -> ThreadPoolExecutor:
    """The one long-lived put thread of this process, shared by every pass.

    Long-lived on purpose: Beanstalkd connections are per thread, so a thread per pass would
    leave a connection behind each time. One thread also keeps a pass's puts in order.
    """
    with _PUTTER_LOCK:
        if not _PUTTER:
            _PUTTER.append(ThreadPoolExecutor(1, thread_name_prefix="postburner-watchdog-put"))
        return _PUTTER[0]


def put_and_record(pb: Postburner, items: Sequence[QueuedExecution], report: PassReport) -> int:
    """Put claimed executions in chunks over several connections; record each chunk's job ids.

    The rows are committed ``scheduled`` before the put (DESIGN: database first). If Beanstalkd
    is unavailable the claims are released, so the next pass retries at once; returns how many
    were not put.
    """
    left = 0
    for chunk in chunks(items, PUT_CHUNK):
        if report.queue_error is None:
            try:
                _put_chunk(pb, chunk)
                continue
            except QueueUnavailableError as exc:
                report.queue_error = str(exc)
        _release(pb, [item.execution_id for item in chunk])
        left += len(chunk)
    return left


def _put_chunk(pb: Postburner, chunk: Sequence[QueuedExecution]) -> None:
    secret = pb.secret()
    server_before = pb.queue.server_id()
    moment = pb.clock()
    requests = [
        PutRequest(
            body=encode_body(
                JobBody("execution", item.execution_id, item.key, item.run_at), secret
            ),
            queue=item.queue,
            priority=item.priority,
            delay=delay_seconds(item.start_at, moment),
            ttr=item.ttr,
        )
        for item in chunk
    ]
    job_ids = pb.queue.put_many(requests, connections=PUT_CONNECTIONS)
    # Job ids mean something only on the server that issued them. Record the id read before
    # the put: if the server restarted meanwhile it is no longer the current one, and the
    # queue audit checks these jobs with peek instead of trusting them.
    refs = [
        JobRef(item.execution_id, job_id, server_before)
        for item, job_id in zip(chunk, job_ids, strict=True)
    ]
    _record(pb, refs)


def _record(pb: Postburner, refs: list[JobRef]) -> None:
    """Store job ids on rows still live and still without one; take back the other jobs."""
    puts = [PutRef(ref.execution_id, ref.job_id or 0, ref.server_id) for ref in refs]
    with pb.work_session() as session:
        recorded = store_for(session).record_puts(session, puts)
        session.commit()
    for ref in refs:
        if ref.execution_id not in recorded:
            remove_job(pb, ref)  # skipped, superseded or put by someone else meanwhile


def _release(pb: Postburner, ids: list[int]) -> None:
    """Forget our claim on rows we could not put, so the next pass retries without waiting."""
    if not ids:
        return
    with pb.work_session() as session:
        store_for(session).release_claims(session, ids)
        session.commit()


# --- the worker's chaining ------------------------------------------------------------------


def chain_next_many(pb: Postburner, run_at: Mapping[int, datetime], *, now: datetime) -> None:
    """Make sure the occurrence after ``run_at`` exists for many schedules (schedule id to the
    ``run_at`` just reached): one query finds the schedules without a live execution after it,
    one creation pass per distinct instant (usually one: chaining happens once ``run_at`` has
    come) creates theirs, under try-locks: a schedule someone else holds is being converged
    already. A retry of the same occurrence finds the next one in place and creates nothing."""
    after = {schedule_id: max(at, now) for schedule_id, at in run_at.items()}
    with pb.session() as session:
        latest = store_for(session).latest_live_run_at(session, list(after))
    missing: dict[datetime, list[int]] = {}
    for schedule_id, instant in after.items():
        newest = latest.get(schedule_id)
        if newest is None or newest <= instant:
            missing.setdefault(instant, []).append(schedule_id)
    if not missing:
        return
    report = PassReport()
    for instant, schedule_ids in sorted(missing.items()):
        # The lean creation path: try-lock, re-check, one INSERT, one put.
        create_next_executions(pb, sorted(schedule_ids), instant, report)
    # The schedules that could not be chained are left for the watchdog, which reports them.
    for problem in report.problems:
        chain_log.warning("chaining: %s", problem)
    for name, why in report.invalid_schedules.items():
        chain_log.warning("chaining: schedule %r cannot be planned, nothing queued: %s", name, why)
