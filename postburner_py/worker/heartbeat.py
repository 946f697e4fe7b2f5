"""The worker's heartbeat: one row per process in ``postburner_worker_heartbeats``.

A daemon thread writes the row once per :data:`HEARTBEAT_INTERVAL` (never per job: the job
count is read from the worker's counters), so the cost is one upsert and one commit per
interval whatever the throughput. ``postburner status`` counts a worker live while its row
is at most :data:`WORKER_STALE_AFTER` old; rows not seen for :data:`HEARTBEAT_EXPIRY` are
deleted by every worker as it starts and by the watchdog's retention, and a clean stop
deletes its own row at once.

A worker started without ``--queue`` *follows* the queues in use: each beat reads the
queues of enabled schedules and pending one-off jobs (one query), always with ``default``,
and the reserving threads watch those tubes from their next reserve on.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from importlib import metadata
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from postburner_py.health import Pulse

if TYPE_CHECKING:
    from postburner_py.app import Postburner

log = logging.getLogger("postburner_py.worker")

#: Seconds between two beats of one worker.
HEARTBEAT_INTERVAL = 10.0
#: A worker whose row is older than this (three missed beats) is not live.
WORKER_STALE_AFTER = 3 * HEARTBEAT_INTERVAL
#: Rows not seen for this long are deleted (a crashed worker's row).
HEARTBEAT_EXPIRY = timedelta(hours=1)
#: The queue a following worker always serves (where jobs go unless told otherwise).
DEFAULT_QUEUE = "default"


class Heartbeat:
    """Writes one worker's row; :meth:`start` beats on a daemon thread until ``stopping``.

    ``queues`` is the fixed list the worker serves, or None to follow the queues in use
    (:attr:`queues` then changes with each beat). ``jobs_run()`` returns the jobs run so
    far; ``clock`` stamps the row.
    """

    def __init__(
        self,
        pb: Postburner,
        *,
        queues: Sequence[str] | None,
        concurrency: int,
        jobs_run: Callable[[], int],
        clock: Callable[[], datetime],
        interval: float = HEARTBEAT_INTERVAL,
    ) -> None:
        self.pb = pb
        self.id = uuid.uuid4().hex
        self.following = queues is None
        self.queues: tuple[str, ...] = tuple(queues or (DEFAULT_QUEUE,))
        self.interval = interval
        self.pulse = Pulse(3 * interval)
        self._jobs_run = jobs_run
        self._clock = clock
        self._started_at = clock()
        self._fixed: dict[str, Any] = {
            "id": self.id,
            "node": pb.settings.node_id,
            "host": socket.gethostname()[:255],
            "pid": os.getpid(),
            "concurrency": concurrency,
            "started_at": self._started_at,
            "version": _version(),
        }
        self._failing = False
        self._refused: set[str] = set()

    def beat(self) -> bool:
        """Write the row now (and, when following, refresh :attr:`queues`); False when the
        database did not take it (logged once per outage, retried at the next beat)."""
        self.pulse.tick()
        try:
            with self.pb.session() as session:
                if self.following:
                    self.queues = self._servable(self.pb.store.queues_in_use(session))
                self.pb.store.beat_worker(session, self._row())
                session.commit()
        except SQLAlchemyError as exc:
            if not self._failing:
                log.warning("worker heartbeat not written (%s); retrying", _first_line(exc))
            self._failing = True
            return False
        if self._failing:
            log.info("worker heartbeat written again")
        self._failing = False
        return True

    def expire_old_rows(self) -> int:
        """Delete rows not seen for :data:`HEARTBEAT_EXPIRY` (crashed workers); how many."""
        with self.pb.session() as session:
            gone = self.pb.store.expire_worker_heartbeats(session, self._clock() - HEARTBEAT_EXPIRY)
            session.commit()
        return gone

    def forget(self) -> None:
        """Delete this worker's row (a clean stop is not a dead worker)."""
        try:
            with self.pb.session() as session:
                self.pb.store.forget_worker(session, self.id)
                session.commit()
        except SQLAlchemyError as exc:
            log.warning("could not remove the worker heartbeat row: %s", _first_line(exc))

    def start(self, stopping: threading.Event) -> threading.Thread:
        """Beat every :attr:`interval` seconds on a daemon thread until ``stopping`` is set."""

        def loop() -> None:
            while not stopping.wait(self.interval):
                self.beat()

        thread = threading.Thread(target=loop, name="worker-heartbeat", daemon=True)
        thread.start()
        return thread

    def _row(self) -> dict[str, Any]:
        return {
            **self._fixed,
            "queues": list(self.queues),
            "last_seen_at": self._clock(),
            "jobs_run": self._jobs_run(),
        }

    def _servable(self, names: Sequence[str]) -> tuple[str, ...]:
        """``names`` and ``default``, without names that are no tube (a row written behind
        the API's back): those are logged once and left out, never crash the reserve."""
        kept = []
        for name in sorted({*names, DEFAULT_QUEUE}):
            try:
                self.pb.queue.tube(name)
            except ValueError as exc:
                if name not in self._refused:
                    log.error("queue %r is not served: %s", name, exc)
                self._refused.add(name)
                continue
            kept.append(name)
        return tuple(kept)


def _version() -> str:
    """The installed distribution's version (``postburner_py``'s package imports every role,
    which the worker must not)."""
    try:
        return metadata.version("postburner_py")[:64]
    except metadata.PackageNotFoundError:
        return "unknown"


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
