"""The read side of the storage seam, and the operator's writes: status, listings, sync."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection
from datetime import datetime
from typing import TYPE_CHECKING

from postburner_py.store.facet import Facet

if TYPE_CHECKING:
    from sqlalchemy import Connection
    from sqlalchemy.orm import Session

    from postburner_py.store.dispatch_records import DispatchRecord
    from postburner_py.store.history_records import HistoryRecord
    from postburner_py.store.models import Schedule, ScheduleExecution


class ReportStore(Facet, ABC):
    """What status, the command line and schedule-file sync read and change.

    Every method takes the caller's session (or connection): it runs inside the caller's
    transaction and never commits or rolls it back unless its contract says so. The reads
    take no lock and change nothing; none of them is on the worker's path.
    """

    @abstractmethod
    def ping(self, connection: Connection) -> None:
        """One round trip to the database, so that a server that does not answer is found.

        Raises the driver's error (a ``SQLAlchemyError``) when the database cannot be
        reached; returns nothing and writes nothing otherwise. Used by ``status`` and before
        a long-running process starts.
        """

    @abstractmethod
    def is_migrated(self, connection: Connection) -> bool:
        """Whether the schema exists (the ``schedules`` table is there).

        False on an empty database (run ``postburner migrate``); never creates anything.
        """

    @abstractmethod
    def schedules_with_next_run(
        self, session: Session, now: datetime, *, unloadable: Collection[int] = ()
    ) -> list[tuple[Schedule, datetime | None]]:
        """Every schedule, ordered by name, with the earliest live run after ``now``.

        The second item is the smallest ``run_at`` of the schedule's executions that are
        live (``pending`` or ``scheduled``) and strictly after ``now``, or None when there is
        none. ``unloadable`` names schedule ids whose stored instants cannot be parsed (see
        :func:`postburner_py.schedules.planning.unloadable_schedules`): those rows are loaded
        with ``anchor`` and ``resumed_at`` deferred, so one hand-edited row never makes the
        listing raise. Every schedule appears exactly once.
        """

    @abstractmethod
    def last_dispatches(self, session: Session) -> dict[str, DispatchRecord]:
        """Per dispatch log key, its row with the newest ``fire_time`` (the last occurrence).

        Keys with no row are absent. Reads only the dispatch log.
        """

    @abstractmethod
    def last_runs(self, session: Session) -> dict[str, HistoryRecord]:
        """Per schedule name, the newest job history attempt of its last occurrence.

        Paired by occurrence: a history row's ``(schedule_name, run_at)`` equals the newest
        dispatch row's ``(key, fire_time)``; the newest such attempt (highest id) wins, so a
        late retry of an earlier occurrence never shows under a later one. A schedule with
        history but no dispatch row left (retention deleted them) gets its newest history
        row. History rows without a schedule name (one-off jobs) are never returned.
        """

    @abstractmethod
    def due_by_queue(self, session: Session, now: datetime) -> dict[str, int]:
        """Per queue, how many occurrences are due and not started: live executions of a
        schedule on that queue, and pending one-off jobs, with ``run_at`` at or before
        ``now`` and no dispatch-log row for their ``(key, run_at)`` (no attempt claimed them).

        Queues with nothing due are absent. Two grouped queries whatever the number of
        schedules.
        """

    @abstractmethod
    def dispatch_counts_since(self, session: Session, since: datetime) -> dict[str, int]:
        """Dispatch-log rows with ``fire_time`` at or after ``since``, counted by ``status``.

        Every status string stored appears (new statuses need no code here); statuses with
        no row are absent. One grouped query.
        """

    @abstractmethod
    def schedule_by_name(
        self, session: Session, name: str, *, defer_instants: bool = False
    ) -> Schedule | None:
        """The schedule named ``name`` (names are unique), or None.

        With ``defer_instants`` its ``anchor`` and ``resumed_at`` are not loaded until read,
        so a row whose stored instants cannot be parsed can still be found (and disabled).
        """

    @abstractmethod
    def live_execution_at(
        self, session: Session, schedule_name: str, run_at: datetime
    ) -> ScheduleExecution | None:
        """The live (``pending``/``scheduled``) execution of ``schedule_name`` at ``run_at``.

        None when the schedule has no such occurrence, or it is no longer live (skipped,
        superseded, started): only a queued occurrence is an operator's to skip.
        """

    @abstractmethod
    def disable_schedule(self, session: Session, schedule_id: int) -> None:
        """Set ``enabled`` false on the schedule ``schedule_id``, in the caller's transaction.

        Written as one ``UPDATE`` that bypasses the ORM's flush (and so its validation hooks
        and the identity map): disabling is the way out for a row that cannot be planned, so
        it must not need one that can. The caller commits, reconciles and refreshes.
        """

    @abstractmethod
    def all_schedules(self, session: Session) -> list[Schedule]:
        """Every schedule (ORM objects in ``session``), for schedule-file sync to compare."""

    @abstractmethod
    def queued_run_ats(self, session: Session, now: datetime) -> dict[int, datetime]:
        """Per schedule id, the earliest live (``pending``/``scheduled``) ``run_at`` after ``now``.

        Schedules with no live future execution are absent; one-off rows (no schedule) never
        appear. Sync uses it to predict how each change moves the queue.
        """

    @abstractmethod
    def live_counts(self, session: Session) -> dict[tuple[str, str], int]:
        """Live rows by ``(kind, queue)``: ``execution`` for schedule executions still to run
        (``pending``/``scheduled``, due or not, of a schedule that exists: the queue is the
        schedule's), ``delayed`` for pending one-off jobs. Kinds and queues without a live
        row are absent. Read-only, one grouped query per kind (the watchdog's metrics)."""
