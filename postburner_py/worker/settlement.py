"""Settlement: recording how attempts ended, for a batch of attempts in one transaction.

For each finished attempt: close its history row (completed, partial success or failed, with
the real start instant and the lateness), then in the dispatch log complete it, fail it for
good, or end its lease so the retry delivery takes over as the next attempt; a one-off job's
row is closed with it: :meth:`~postburner_py.store.contract.gate.GateStore.settle`, one
statement of each kind for the whole batch (on PostgreSQL the fast path's one statement does
it: :meth:`~postburner_py.store.contract.gate.GateStore.settle_and_admit`). The worker deletes,
releases or buries the Beanstalkd job only once the batch committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from postburner_py.schedules.one_off import COMPLETED as DELAYED_COMPLETED
from postburner_py.schedules.one_off import FAILED as DELAYED_FAILED
from postburner_py.store import store_for
from postburner_py.store.contract.gate import Closing
from postburner_py.store.dispatch_log import DispatchStatus
from postburner_py.store.history import HistoryEntry, HistoryStatus, HistoryStore, terminal_changes
from postburner_py.worker.admission import Occurrence


@dataclass(slots=True)
class Settlement:
    """One finished attempt: what ran, when it really began, how it ended.

    ``status`` is the history status; a ``failed`` attempt with ``retry`` keeps the
    occurrence open for its next attempt.
    """

    occurrence: Occurrence
    attempt: int
    started: HistoryEntry
    worker_id: str
    began_at: datetime
    finished_at: datetime
    elapsed_ms: float
    status: HistoryStatus
    results: Any = None
    error: BaseException | None = None
    retry: bool = False
    #: Filled by :meth:`Settler.prepare` on the asking thread: the terminal entry this
    #: settlement answers, and its JSON form for the PostgreSQL fast path.
    entry: HistoryEntry | None = None
    wire: str | None = None

    @property
    def closes_occurrence(self) -> bool:
        """True unless a retry follows."""
        return not self.retry

    @property
    def failed_for_good(self) -> bool:
        """A failed attempt with no retry left."""
        return self.status is HistoryStatus.FAILED and not self.retry


class Settler:
    """The ledger's batch handler for :class:`Settlement`; answers each terminal entry."""

    #: In a transaction the ledger runs settlements before admissions (a retry's next
    #: delivery in the same batch finds its lease ended).
    batch_order = 0

    def __init__(self, history: HistoryStore) -> None:
        self.history = history

    def __call__(
        self, connection: Connection, settlements: Sequence[Settlement]
    ) -> list[HistoryEntry]:
        if not settlements:
            return []
        finished = [(item, _changes(item)) for item in settlements]
        store_for(connection).settle(
            connection, [_closing(item, changes) for item, changes in finished]
        )
        return [replace(item.started, **changes) for item, changes in finished]

    def prepare(self, settlement: Settlement) -> Settlement:
        """``settlement``, given its terminal entry and its fast-path JSON (filled in place,
        on the thread that settles)."""
        if settlement.wire is not None:
            return settlement
        changes = _changes(settlement)
        settlement.entry = replace(settlement.started, **changes)
        settlement.wire = _closing(settlement, changes).wire()
        return settlement


def _changes(item: Settlement) -> dict[str, Any]:
    return terminal_changes(
        item.status,
        started=item.started,
        worker_id=item.worker_id,
        execution_time_ms=item.elapsed_ms,
        finished_at=item.finished_at,
        began_at=item.began_at,
        results=item.results,
        error=item.error,
        due_at=item.occurrence.start_at,
    )


def _closing(item: Settlement, changes: dict[str, Any]) -> Closing:
    one_off = item.occurrence.kind == "delayed" and item.closes_occurrence
    final_status = None
    if item.closes_occurrence:
        final_status = DispatchStatus.FAILED if item.failed_for_good else DispatchStatus.COMPLETED
    return Closing(
        history_id=_stored_id(item.started),
        changes=changes,
        key=item.occurrence.key,
        fire_time=item.occurrence.run_at,
        attempt=item.attempt,
        final_status=None if final_status is None else str(final_status),
        delayed_id=item.occurrence.row_id if one_off else None,
        delayed_status=_delayed_status(item) if one_off else None,
    )


def _stored_id(entry: HistoryEntry) -> int:
    if entry.id is None:
        raise ValueError("started: this HistoryEntry was never stored, it has no id")
    return entry.id


def _delayed_status(item: Settlement) -> str:
    return DELAYED_FAILED if item.failed_for_good else DELAYED_COMPLETED
