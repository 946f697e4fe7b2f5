"""The watchdog process: the safety net that converges Beanstalkd back to the database.

APScheduler 3 (a ``BlockingScheduler``; ``coalesce=True``, ``max_instances=1``, one worker
thread, so jobs never overlap) drives three jobs:

* the reconcile pass (:mod:`postburner_py.watchdog.reconcile_pass`) every ``interval`` seconds;
* the queue audit (:mod:`postburner_py.watchdog.queue_audit`) every ``interval`` seconds;
* retention: :meth:`HistoryStore.expire` and :meth:`SqlDispatchRegistry.cleanup`.

After each pass it writes a heartbeat row (``postburner_watchdog_heartbeats``) that
:func:`watchdog_health` reads for ``postburner status``. SIGTERM and SIGINT stop it between
passes. When PostgreSQL or Beanstalkd is unreachable it logs once per outage, backs off,
keeps running, and converges when the server is back. ``tick`` runs one audit and one pass,
for ``postburner tick`` and for tests.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import FrameType
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import InterfaceError, OperationalError

from postburner_py.errors import ConfigurationError, QueueUnavailableError
from postburner_py.health import HealthOptions, Pulse, Verdict, servers_ready
from postburner_py.logs import (
    BEANSTALKD_LOST,
    BEANSTALKD_RECOVERED,
    DATABASE_LOST,
    DATABASE_RECOVERED,
    WATCHDOG_PASS,
    WATCHDOG_STARTED,
    WATCHDOG_STOPPED,
    fields,
)
from postburner_py.metrics import DEFAULT_METRICS_HOST
from postburner_py.schedules.chaining import PassReport
from postburner_py.store import store_for
from postburner_py.store.models import WatchdogHeartbeat
from postburner_py.watchdog.metrics import WatchdogMetrics
from postburner_py.watchdog.queue_audit import audit_queue
from postburner_py.watchdog.reconcile_pass import LOOKBACK, reconcile_pass

if TYPE_CHECKING:
    from postburner_py.app import Postburner

log = logging.getLogger("postburner_py.watchdog")

DEFAULT_INTERVAL = 60.0
#: First wait after a failed attempt; it doubles per failure up to BACKOFF_CAP seconds.
BACKOFF_START = 1.0
BACKOFF_CAP = 120.0
#: Errors that mean "the database is unreachable", as opposed to a bug.
DATABASE_DOWN = (OperationalError, InterfaceError)

__all__ = [
    "DEFAULT_METRICS_HOST",
    "PassReport",
    "Retention",
    "Watchdog",
    "WatchdogHeartbeat",
    "WatchdogMetrics",
    "run_watchdog",
    "tick",
    "watchdog_health",
]


@dataclass(frozen=True)
class Retention:
    """How often old rows are deleted, and how long dispatch log rows are kept.

    Job history rows carry their own ``expires_at`` (set by the :class:`HistoryStore` that
    wrote them); the watchdog deletes the expired ones. ``dispatch_window`` must be at least
    twice the reconcile pass's look-back (:data:`~postburner_py.watchdog.reconcile_pass.LOOKBACK`),
    which relies on the dispatch log to tell a due execution that ran from one that never did.
    """

    interval: float = 3600.0
    dispatch_window: timedelta = timedelta(days=1)

    def __post_init__(self) -> None:
        if self.interval <= 0:
            raise ConfigurationError(f"retention interval must be positive, not {self.interval}")
        if self.dispatch_window < LOOKBACK * 2:
            raise ConfigurationError(
                f"retention dispatch_window {self.dispatch_window} must be at least twice the "
                f"reconcile look-back ({LOOKBACK})"
            )


def tick(pb: Postburner, *, now: datetime | None = None) -> PassReport:
    """Run one queue audit and one reconcile pass as of ``now`` (default: ``pb.clock()``).

    Beanstalkd being unavailable is reported (``report.queue_error``), not raised: the database
    half still runs. A database error is raised.
    """
    started = time.perf_counter()
    now = now or pb.clock()
    report = PassReport()
    audit_queue(pb, now=now, report=report)
    reconcile_pass(pb, now=now, report=report)
    report.duration = time.perf_counter() - started
    return report


def watchdog_health(
    pb: Postburner, *, now: datetime, stale_after: timedelta | float
) -> list[dict[str, Any]]:
    """Every watchdog's heartbeat; ``stale`` when its last pass (or start) is older than
    ``stale_after`` (a timedelta or seconds)."""
    limit = stale_after if isinstance(stale_after, timedelta) else timedelta(seconds=stale_after)
    with pb.session() as session:
        beats = store_for(session).heartbeats(session)
    return [_health_of(beat, now, limit) for beat in beats]


def _health_of(beat: WatchdogHeartbeat, now: datetime, limit: timedelta) -> dict[str, Any]:
    last = beat.last_pass_at or beat.started_at
    return {
        "node": beat.node,
        "started_at": beat.started_at.isoformat(),
        "last_pass_at": beat.last_pass_at.isoformat() if beat.last_pass_at else None,
        "seconds_since_pass": (now - last).total_seconds(),
        "stale": now - last > limit,
        "last_report": beat.last_report,
    }


def run_watchdog(
    pb: Postburner,
    *,
    interval: float = DEFAULT_INTERVAL,
    metrics_port: int | None = None,
    metrics_host: str = DEFAULT_METRICS_HOST,
    retention: Retention | None = None,
    health: HealthOptions | None = None,
) -> int:
    """Run the watchdog until SIGTERM or SIGINT; returns the process exit code (0).

    With ``metrics_port``, Prometheus metrics are served on ``metrics_host:metrics_port``
    (default host 127.0.0.1: this machine only). With ``health``, the probes
    (:mod:`postburner_py.health`: liveness is :meth:`Watchdog.liveness`) are served too.
    """
    metrics = WatchdogMetrics() if metrics_port is not None else None
    watchdog = Watchdog(pb, interval=interval, retention=retention or Retention(), metrics=metrics)
    server = (
        metrics.serve(metrics_port, metrics_host)
        if metrics is not None and metrics_port is not None
        else None
    )
    probes = None if health is None else health.serve(watchdog.liveness, lambda: servers_ready(pb))
    try:
        watchdog.run()
    finally:
        if probes is not None:
            probes.close()
        if server is not None:
            server.shutdown()
            server.server_close()
    return 0


#: The log actions of an outage, by what is out.
_OUTAGE_ACTIONS = {
    "the database": (DATABASE_LOST, DATABASE_RECOVERED),
    "Beanstalkd": (BEANSTALKD_LOST, BEANSTALKD_RECOVERED),
}


class Outage:
    """One server's reachability: logs once per outage, backs off while it lasts."""

    def __init__(self, what: str, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.what = what
        self._lost, self._recovered = _OUTAGE_ACTIONS.get(what, ("outage.lost", "outage.ended"))
        self.failures = 0
        self._monotonic = monotonic
        self._retry_at = 0.0

    @property
    def down(self) -> bool:
        """True while the last attempt failed."""
        return self.failures > 0

    def ready(self) -> bool:
        """False while backing off after a failure."""
        return self._monotonic() >= self._retry_at

    def failed(self, error: BaseException | str) -> None:
        """Record a failed attempt; the first one of an outage is logged as a warning."""
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        if not self.failures:
            log.warning(
                "%s is unreachable (%s); retrying with backoff",
                self.what,
                message,
                extra=fields(self._lost, error=message),
            )
        else:
            log.debug("%s still unreachable: %s", self.what, message)
        self.failures += 1
        wait = min(BACKOFF_CAP, BACKOFF_START * 2 ** (self.failures - 1))
        self._retry_at = self._monotonic() + wait

    def succeeded(self) -> None:
        """Record a successful attempt; the end of an outage is logged."""
        if self.failures:
            log.info(
                "%s is reachable again after %d failed attempt(s)",
                self.what,
                self.failures,
                extra=fields(self._recovered, failures=self.failures),
            )
        self.failures = 0
        self._retry_at = 0.0


class Watchdog:
    """The watchdog's jobs and state; :meth:`run` schedules them with APScheduler.

    Each job method runs one unit of work and may be called directly (tests do).
    """

    def __init__(
        self,
        pb: Postburner,
        *,
        interval: float = DEFAULT_INTERVAL,
        retention: Retention | None = None,
        metrics: WatchdogMetrics | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval <= 0:
            raise ConfigurationError(f"watchdog interval must be positive, not {interval}")
        self.pb = pb
        self.interval = interval
        self.retention = retention or Retention()
        self.metrics = metrics
        self.node = pb.settings.node_id
        self.started_at = pb.clock()
        self.database = Outage("the database", monotonic)
        self.queue = Outage("Beanstalkd", monotonic)
        self.stopping = threading.Event()
        # Alive while a job ran within three intervals, or one is still in progress (a long
        # pass over many schedules) for at most fifteen minutes.
        self.pulse = Pulse(max(3 * interval, 60.0), busy_within=900.0, monotonic=monotonic)
        self._busy = threading.Lock()
        self._reports: dict[str, dict[str, Any]] = {}
        self._stop_scheduler: Callable[[], None] | None = None

    # -- jobs -----------------------------------------------------------------------------

    def reconcile(self) -> PassReport | None:
        """One reconcile pass; None when skipped (stopping, or backing off a database outage)."""
        return self._run(
            "reconcile", lambda now, report: reconcile_pass(self.pb, now=now, report=report)
        )

    def audit(self) -> PassReport | None:
        """One queue audit; None when skipped (also while backing off a Beanstalkd outage)."""
        if not self.queue.ready():
            return None
        return self._run("audit", lambda now, report: audit_queue(self.pb, now=now, report=report))

    def clean_up(self) -> tuple[int, int] | None:
        """Delete expired history and old dispatch log rows: (history, dispatches) deleted."""
        from postburner_py.store.dispatch_log import SqlDispatchRegistry
        from postburner_py.store.history import HistoryStore

        if self._skipped():
            return None
        now = self.pb.clock()
        window = self.retention.dispatch_window.total_seconds()
        with self._busy, self.pulse.busy():
            try:
                history = HistoryStore(self.pb.session_factory).expire(now=now)
                registry = SqlDispatchRegistry(self.pb.session_factory, node_id=self.node)
                dispatches = registry.cleanup(window, now=now)
                workers = self._expire_worker_heartbeats(now)
            except DATABASE_DOWN as exc:
                self.database.failed(exc)
                return None
        self.database.succeeded()
        log.info(
            "retention: deleted %d history, %d dispatch log and %d worker heartbeat rows",
            history,
            dispatches,
            workers,
        )
        return history, dispatches

    def _expire_worker_heartbeats(self, now: datetime) -> int:
        from postburner_py.worker.heartbeat import HEARTBEAT_EXPIRY

        with self.pb.session() as session:
            gone = self.pb.store.expire_worker_heartbeats(session, now - HEARTBEAT_EXPIRY)
            session.commit()
        return gone

    def liveness(self) -> Verdict:
        """The health probe's liveness: the scheduler ran a job recently (or one is still
        in progress, for at most fifteen minutes)."""
        return Verdict.of({"scheduler loop": self.pulse.check()})

    def _skipped(self) -> bool:
        self.pulse.tick()  # the scheduler came round, whether or not the job runs
        if self.stopping.is_set():
            self.stop()  # a signal that came before the scheduler ran: stop it now
            return True
        return not self.database.ready()

    def _run(
        self, kind: str, work: Callable[[datetime, PassReport], PassReport]
    ) -> PassReport | None:
        if self._skipped():
            return None
        with self._busy, self.pulse.busy():
            started = time.perf_counter()
            now = self.pb.clock()
            report = PassReport()
            try:
                work(now, report)
                report.duration = time.perf_counter() - started
                self._beat(kind, report, now)
            except DATABASE_DOWN as exc:
                self.database.failed(exc)
                return None
            except QueueUnavailableError as exc:
                report.queue_error = str(exc)
        self.database.succeeded()
        self._observe(kind, report)
        return report

    def _observe(self, kind: str, report: PassReport) -> None:
        if report.queue_error is not None:
            self.queue.failed(report.queue_error)
        elif kind == "audit" or report.created or report.requeued:
            self.queue.succeeded()  # the audit or a put reached the server
        counts = report.counts()
        level = logging.INFO if any(counts.values()) else logging.DEBUG
        if log.isEnabledFor(level):
            line = fields(WATCHDOG_PASS, kind=kind, duration=report.duration, counts=counts)
            log.log(level, "%s: %s", kind, report.describe(), extra=line)
        if self.metrics is not None:
            self.metrics.observe(kind, report, queue_up=not self.queue.down)
            self._observe_backlog(kind)

    def _observe_backlog(self, kind: str) -> None:
        """After an audit, Beanstalkd's jobs per tube; after a pass, the live rows."""
        assert self.metrics is not None
        try:
            if kind == "audit" and not self.queue.down:
                self.metrics.observe_tubes(self.pb.queue.queue_stats())
            elif kind == "reconcile":
                with self.pb.session() as session:
                    self.metrics.observe_live(store_for(session).live_counts(session))
        except (QueueUnavailableError, *DATABASE_DOWN) as exc:
            log.debug("metrics: could not read the %s backlog: %s", kind, exc)

    # -- heartbeat ------------------------------------------------------------------------

    def _beat(self, kind: str, report: PassReport, now: datetime) -> None:
        self._reports[kind] = report.as_dict()
        values: dict[str, Any] = {"last_report": dict(self._reports)}
        if kind == "reconcile":
            values["last_pass_at"] = now
        row = {"node": self.node, "started_at": self.started_at, "last_pass_at": None, **values}
        with self.pb.session() as session:
            store_for(session).beat(session, row, values)
            session.commit()

    def forget_heartbeat(self) -> None:
        """Delete this watchdog's heartbeat row (a clean stop is not an outage)."""
        with self.pb.session() as session:
            store_for(session).forget_heartbeat(session, self.node)
            session.commit()

    # -- process --------------------------------------------------------------------------

    def run(self) -> None:
        """Schedule the jobs and block until :meth:`stop` (or SIGTERM/SIGINT)."""
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.blocking import BlockingScheduler

        scheduler = BlockingScheduler(
            executors={"default": ThreadPoolExecutor(1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        first = datetime.now().astimezone()
        for job, seconds in (
            (self.audit, self.interval),
            (self.reconcile, self.interval),
            (self.clean_up, self.retention.interval),
        ):
            scheduler.add_job(job, "interval", seconds=seconds, next_run_time=first)
        self._stop_scheduler = functools.partial(scheduler.shutdown, wait=False)
        previous = _install_signal_handlers(self.stop)
        log.info(
            "watchdog %s started: passes every %ss",
            self.node,
            self.interval,
            extra=fields(WATCHDOG_STARTED, node=self.node, interval=self.interval),
        )
        try:
            if not self.stopping.is_set():
                scheduler.start()
        finally:
            _restore_signal_handlers(previous)
            self._finish()

    def stop(self) -> None:
        """Stop after the job in progress, if any; safe from a signal handler."""
        from apscheduler.schedulers import SchedulerNotRunningError

        self.stopping.set()
        if self._stop_scheduler is not None:
            # Not started yet (its first job stops it then), or already stopped.
            with contextlib.suppress(SchedulerNotRunningError):
                self._stop_scheduler()

    def _finish(self) -> None:
        with self._busy:  # wait for the pass in progress: stop between passes
            try:
                self.forget_heartbeat()
            except DATABASE_DOWN as exc:
                log.warning("could not remove the heartbeat row: %s", exc)
        log.info("watchdog %s stopped", self.node, extra=fields(WATCHDOG_STOPPED, node=self.node))


def _install_signal_handlers(stop: Callable[[], None]) -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handle(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: stopping after the current pass", signal.Signals(signum).name)
        stop()

    return {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}


def _restore_signal_handlers(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)
