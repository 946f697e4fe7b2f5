"""The contract of the gate facet (:class:`~postburner_py.store.contract.gate.GateStore`),
talking to the store's methods directly.

Every test runs against each gate path: on PostgreSQL the one-statement batch
(``settle_and_admit``) and the generic SQLAlchemy Core path forced on the same engine
(``batch_statement=False``), and on SQLite the generic path. An admission that the batch
statement leaves undecided goes through the transaction path, as the worker's ledger does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, select

from postburner_py import Postburner
from postburner_py.queue.signing import JobBody
from postburner_py.schedules.one_off import DelayedJob
from postburner_py.store import Store
from postburner_py.store.contract.gate import Closing, Delivery
from postburner_py.store.dispatch_log import (
    ClaimOutcome,
    ClaimRequest,
    DispatchRecord,
    DispatchStatus,
)
from postburner_py.store.history import (
    HistoryEntry,
    HistoryRecord,
    HistoryStatus,
    HistoryStore,
    LostAttempt,
    terminal_changes,
)
from tests.factories import ManualClock, at

DUE = at("2025-03-01 11:00")
NOW = DUE + timedelta(seconds=5)
TTR = 60
FENCED = "fenced"


def _stores(family: str) -> dict[str, Store]:
    if family == "postgresql":
        from postburner_py.store.postgresql import CAPABILITIES, PostgresStore

        generic = PostgresStore(replace(CAPABILITIES, batch_statement=False))
        return {"batch": PostgresStore(), "generic": generic}
    from postburner_py.store.sqlite import SqliteStore

    return {"generic": SqliteStore()}


@dataclass
class Gate:
    """One store over one database, and the two gate operations as the worker runs them."""

    pb: Postburner
    store: Store
    path: str

    def one_off(self, name: str) -> JobBody:
        """A fresh one-off job due at ``DUE``, as the body of its delivery."""
        row = self.pb.enqueue_at(
            DUE, "tests.jobs:record_run", [name], job_id=name, ttr=TTR, max_attempts=3
        )
        return JobBody("delayed", row.id, row.job_id, row.run_at)

    def admit(self, bodies: Sequence[JobBody], *, now: Any = NOW, node: str = "w-1") -> list[str]:
        """Admit one batch of deliveries: each answer is a claim outcome, or ``fenced``."""
        answers: list[str | None] = [None] * len(bodies)
        if self.path == "batch":
            wires = [_delivery(body, now, node).wire() for body in bodies]
            with self.pb.writer_engine.connect() as connection:
                rows = self.store.settle_and_admit(
                    connection, [], wires, allowed_prefixes=(), catch_up_window=timedelta(hours=1)
                )
                self.store.end_batch(connection)
            for n in range(len(bodies)):
                row = rows.get(n)
                if row is None:
                    answers[n] = FENCED
                elif not row.undecided:
                    answers[n] = ClaimOutcome.ACQUIRED if _claimed(row) else FENCED
        rest = [n for n, answer in enumerate(answers) if answer is None]
        if rest:
            with self.pb.writer_engine.begin() as connection:
                decided = self._admit_in(connection, [bodies[n] for n in rest], now, node)
            for n, answer in zip(rest, decided, strict=True):
                answers[n] = answer
        return [str(answer) for answer in answers]

    def _admit_in(
        self, connection: Connection, bodies: Sequence[JobBody], now: Any, node: str
    ) -> list[str]:
        delayed, _ = self.store.lock_occurrences(
            connection, delayed_ids=[body.id for body in bodies], execution_ids=[]
        )
        live = {row.id: row for row in delayed if row.status == "pending"}
        runnable = [
            n
            for n, body in enumerate(bodies)
            if body.id in live and live[body.id].run_at == body.run_at
        ]
        claims = self.store.claim(
            connection,
            [
                ClaimRequest(f"job:{bodies[n].key}", bodies[n].run_at, node, TTR, 3, now)
                for n in runnable
            ],
        )
        starts = [
            replace(_start(bodies[n], now, node), job_id=bodies[n].key, attempt=claim.attempt)
            for n, claim in zip(runnable, claims, strict=True)
            if claim.should_run
        ]
        self.store.insert_started(connection, starts)
        outcomes = {n: str(claim.outcome) for n, claim in zip(runnable, claims, strict=True)}
        return [outcomes.get(n, FENCED) for n in range(len(bodies))]

    def settle(self, closings: Sequence[Closing]) -> None:
        if self.path == "batch":
            with self.pb.writer_engine.connect() as connection:
                self.store.settle_and_admit(
                    connection,
                    [item.wire() for item in closings],
                    [],
                    allowed_prefixes=(),
                    catch_up_window=timedelta(hours=1),
                )
                self.store.end_batch(connection)
        else:
            with self.pb.writer_engine.begin() as connection:
                self.store.settle(connection, closings)

    def dispatches(self) -> list[DispatchRecord]:
        with self.pb.session() as session:
            return list(session.scalars(select(DispatchRecord).order_by(DispatchRecord.id)))

    def history(self) -> list[HistoryRecord]:
        with self.pb.session() as session:
            return list(session.scalars(select(HistoryRecord).order_by(HistoryRecord.id)))

    def one_off_status(self, body: JobBody) -> str:
        with self.pb.session() as session:
            return session.get_one(DelayedJob, body.id).status


#: Every gate path: (database, path). PostgreSQL has two, SQLite only the generic one.
GATE_PATHS = [("postgresql", "batch"), ("postgresql", "generic"), ("sqlite", "generic")]


@pytest.fixture(params=GATE_PATHS, ids=["-".join(path) for path in GATE_PATHS])
def gate(request: pytest.FixtureRequest, make_postburner: Callable[..., Postburner]) -> Gate:
    database, path = request.param
    url = request.getfixturevalue("postgres_url" if database == "postgresql" else "sqlite_url")
    pb = make_postburner(database_url=url, clock=ManualClock(DUE - timedelta(hours=1)))
    return Gate(pb, _stores(pb.writer_engine.dialect.name)[path], path)


def _start(body: JobBody, now: Any, node: str) -> HistoryEntry:
    return HistoryStore(None).start_entry(
        job_id="",
        task_identifier="tests.jobs:record_run",
        worker_id=node,
        correlation_id=f"corr:{body.key}",
        run_at=body.run_at,
        schedule_name=f"job:{body.key}",
        started_at=max(now, body.run_at),
    )


def _delivery(body: JobBody, now: Any, node: str) -> Delivery:
    start = _start(body, now, node)
    assert start.queue_time_ms is not None and start.correlation_id is not None
    return Delivery(
        kind=body.kind,
        id=body.id,
        key=f"job:{body.key}",
        run_at=body.run_at,
        node_id=node,
        now=now,
        correlation_id=start.correlation_id,
        started_at=start.started_at,
        queue_time_ms=start.queue_time_ms,
        expires_at=start.expires_at,
    )


def _claimed(row: Any) -> bool:
    from postburner_py.store.contract.gate import admitted_row

    parsed = admitted_row(row.data)
    return parsed.history_id is not None


def _closing(
    gate: Gate, body: JobBody, *, attempt: int = 1, final: str | None = "completed"
) -> Closing:
    [started] = [row for row in gate.history() if row.attempt == attempt]
    entry = HistoryStore(None).start_entry(
        job_id=started.job_id,
        task_identifier=started.task_identifier,
        worker_id="w-1",
        run_at=started.run_at,
        started_at=started.started_at,
    )
    finished_at = NOW + timedelta(seconds=2)
    status = HistoryStatus.COMPLETED if final == "completed" else HistoryStatus.FAILED
    changes = terminal_changes(
        status,
        started=entry,
        worker_id="w-1",
        execution_time_ms=1500.0,
        finished_at=finished_at,
        began_at=NOW,
    )
    return Closing(
        history_id=started.id,
        changes=changes,
        key=f"job:{body.key}",
        fire_time=body.run_at,
        attempt=attempt,
        final_status=final,
        delayed_id=body.id if final is not None else None,
        delayed_status=final,
    )


def test_admit_claims_an_occurrence_once_and_refuses_a_second_admit(gate: Gate) -> None:
    body = gate.one_off("once")

    assert gate.admit([body]) == [ClaimOutcome.ACQUIRED]
    assert gate.admit([body], node="w-2") == [ClaimOutcome.BUSY]

    [dispatch] = gate.dispatches()
    assert (dispatch.status, dispatch.attempt, dispatch.node_id) == ("dispatched", 1, "w-1")
    assert dispatch.lease_expires_at == NOW + timedelta(seconds=TTR)
    [started] = gate.history()
    assert (started.status, started.attempt, started.schedule_name) == ("started", 1, "job:once")


def test_admit_never_records_two_started_rows_for_one_occurrence_named_twice(gate: Gate) -> None:
    body = gate.one_off("twice")

    assert gate.admit([body, body]) == [ClaimOutcome.ACQUIRED, ClaimOutcome.BUSY]

    assert len(gate.dispatches()) == 1
    assert [row.status for row in gate.history()] == ["started"]


def test_a_fenced_delivery_writes_nothing(gate: Gate) -> None:
    body = gate.one_off("fenced")
    stale = replace(body, run_at=body.run_at + timedelta(seconds=1))
    gone = replace(body, id=body.id + 1000)

    assert gate.admit([stale, gone]) == [FENCED, FENCED]

    assert gate.dispatches() == []
    assert gate.history() == []


def test_settle_records_the_outcome_once(gate: Gate) -> None:
    body = gate.one_off("settled")
    gate.admit([body])
    closing = _closing(gate, body)

    gate.settle([closing])
    later = replace(
        closing,
        changes={**closing.changes, "finished_at": NOW + timedelta(minutes=5)},
        final_status="failed",
        delayed_status="failed",
    )
    gate.settle([later])

    [dispatch] = gate.dispatches()
    assert (dispatch.status, dispatch.lease_expires_at) == ("completed", None)
    [history] = gate.history()
    assert history.status == "completed"
    assert history.finished_at == NOW + timedelta(seconds=2)
    assert gate.one_off_status(body) == "completed"


def test_settle_of_a_fenced_out_attempt_changes_no_dispatch_row(gate: Gate) -> None:
    body = gate.one_off("fenced-out")
    gate.admit([body])
    stale = replace(_closing(gate, body), attempt=2)

    gate.settle([stale])

    [dispatch] = gate.dispatches()
    assert (dispatch.status, dispatch.attempt) == ("dispatched", 1)
    assert dispatch.lease_expires_at == NOW + timedelta(seconds=TTR)


def test_a_retry_settlement_ends_the_lease_for_the_next_attempt(gate: Gate) -> None:
    body = gate.one_off("retried")
    gate.admit([body])

    gate.settle([_closing(gate, body, final=None)])

    [dispatch] = gate.dispatches()
    finished_at = NOW + timedelta(seconds=2)
    assert (dispatch.status, dispatch.lease_expires_at) == ("dispatched", finished_at)
    assert gate.one_off_status(body) == "pending"
    assert gate.admit([body], now=finished_at + timedelta(seconds=1)) == [ClaimOutcome.TAKEN_OVER]
    assert [(row.attempt, row.status) for row in gate.history()] == [
        (1, "failed"),
        (2, "started"),
    ]


def test_an_expired_lease_is_taken_over_and_the_lost_attempt_history_closed(gate: Gate) -> None:
    body = gate.one_off("lost")
    gate.admit([body])
    expired = NOW + timedelta(seconds=TTR + 1)

    with gate.pb.writer_engine.begin() as connection:
        [claim] = gate.store.claim(
            connection, [ClaimRequest("job:lost", body.run_at, "w-2", TTR, 3, expired)]
        )
        assert claim.outcome is ClaimOutcome.TAKEN_OVER
        assert claim.previous is not None and claim.previous.attempt == 1
        gate.store.close_lost(
            connection, [LostAttempt("corr:lost", 1, expired, "worker lost: attempt 1")]
        )

    [dispatch] = gate.dispatches()
    assert (dispatch.attempt, dispatch.node_id) == (2, "w-2")
    [lost] = gate.history()
    assert (lost.status, lost.finished_at, lost.error_message) == (
        "failed",
        expired,
        "worker lost: attempt 1",
    )


def test_an_expired_lease_with_no_attempt_left_is_exhausted(gate: Gate) -> None:
    body = gate.one_off("spent")
    gate.admit([body])
    expired = NOW + timedelta(seconds=TTR + 1)

    with gate.pb.writer_engine.begin() as connection:
        request = ClaimRequest("job:spent", body.run_at, "w-2", TTR, 1, expired)
        [claim] = gate.store.claim(connection, [request])
        gate.store.fail_spent_one_offs(connection, [(body.id, expired)])

    assert claim.outcome is ClaimOutcome.EXHAUSTED
    assert [row.status for row in gate.dispatches()] == ["failed"]
    assert gate.one_off_status(body) == "failed"


def test_a_released_lease_is_never_renewed(gate: Gate) -> None:
    body = gate.one_off("released")
    gate.admit([body])
    later = NOW + timedelta(seconds=1)

    with gate.pb.writer_engine.begin() as connection:
        assert gate.store.release_lease(connection, "job:released", DUE, attempt=1, now=later)
        renewed = gate.store.renew_lease(
            connection,
            "job:released",
            DUE,
            attempt=1,
            lease_until=later + timedelta(seconds=TTR),
            now=later,
        )

    assert renewed is False
    [dispatch] = gate.dispatches()
    assert dispatch.lease_expires_at == later


def test_renew_extends_only_the_owning_attempts_lease(gate: Gate) -> None:
    body = gate.one_off("renewed")
    gate.admit([body])
    later = NOW + timedelta(seconds=TTR + 30)  # expired, but nobody took it over
    until = later + timedelta(seconds=TTR)

    with gate.pb.writer_engine.begin() as connection:
        other = gate.store.renew_lease(
            connection, "job:renewed", DUE, attempt=2, lease_until=until, now=later
        )
        own = gate.store.renew_lease(
            connection, "job:renewed", DUE, attempt=1, lease_until=until, now=later
        )

    assert (other, own) == (False, True)
    assert gate.dispatches()[0].lease_expires_at == until


def test_end_attempt_writes_the_final_status_only_for_the_owner(gate: Gate) -> None:
    body = gate.one_off("ended")
    gate.admit([body])

    with gate.pb.writer_engine.begin() as connection:
        end = gate.store.end_attempt
        stale = end(connection, "job:ended", DUE, attempt=2, status=DispatchStatus.FAILED, now=NOW)
        own = end(connection, "job:ended", DUE, attempt=1, status=DispatchStatus.COMPLETED, now=NOW)
        again = end(connection, "job:ended", DUE, attempt=1, status=DispatchStatus.FAILED, now=NOW)

    assert (stale, own, again) == (False, True, False)
    assert [(row.status, row.lease_expires_at) for row in gate.dispatches()] == [
        ("completed", None)
    ]


def test_record_missed_inserts_only_occurrences_without_a_row(gate: Gate) -> None:
    body = gate.one_off("missed")
    gate.admit([body])
    other = DUE + timedelta(hours=1)

    with gate.pb.writer_engine.begin() as connection:
        occurrences = [("job:missed", at) for at in (DUE, other, other)]
        added = gate.store.record_missed(connection, occurrences, node_id="watchdog", now=NOW)

    assert added == 1
    assert [(row.status, row.attempt) for row in gate.dispatches()] == [
        ("dispatched", 1),
        ("missed", 0),
    ]


def test_find_filters_by_key_node_status_and_window(gate: Gate) -> None:
    first, second = gate.one_off("find-a"), gate.one_off("find-b")
    gate.admit([first])
    gate.admit([second], node="w-2")
    with gate.pb.writer_engine.begin() as connection:
        gate.store.record_missed(
            connection, [("job:find-a", DUE + timedelta(hours=1))], node_id="w-2", now=NOW
        )

    with gate.pb.writer_engine.connect() as connection:

        def keys(**criteria: Any) -> list[tuple[str, str]]:
            found = gate.store.find(connection, **criteria)
            return [(entry.key, entry.status) for entry in found]

        assert keys(key="job:find-a") == [("job:find-a", "missed"), ("job:find-a", "dispatched")]
        assert keys(node_id="w-2") == [("job:find-a", "missed"), ("job:find-b", "dispatched")]
        assert keys(status=DispatchStatus.DISPATCHED) == [
            ("job:find-b", "dispatched"),
            ("job:find-a", "dispatched"),
        ]
        assert keys(since=DUE + timedelta(minutes=1)) == [("job:find-a", "missed")]
        assert keys(until=DUE + timedelta(minutes=1), limit=1) == [("job:find-b", "dispatched")]
        assert keys(key="job:find-b", node_id="w-1") == []
        entry = gate.store.find_dispatch(connection, "job:find-b", DUE)
        assert entry is not None and entry.node_id == "w-2"


def test_a_terminal_history_record_is_written_once(gate: Gate) -> None:
    body = gate.one_off("history")
    gate.admit([body])
    [started] = gate.history()
    changes = {"status": HistoryStatus.COMPLETED, "finished_at": NOW, "worker_id": "w-1"}

    with gate.pb.writer_engine.begin() as connection:
        entry = gate.store.finish_history(connection, started.id, changes, "corr:history")
        assert (entry.status, entry.correlation_id) == ("completed", "corr:history")
        with pytest.raises(ValueError, match="already completed"):
            gate.store.finish_history(connection, started.id, changes, None)
        with pytest.raises(LookupError):
            gate.store.finish_history(connection, started.id + 1000, changes, None)

    with gate.pb.writer_engine.connect() as connection:
        found = gate.store.find_history(connection, status=HistoryStatus.COMPLETED)
        assert [row.id for row in found] == [started.id]
        assert gate.store.find_history(connection, job_id="nobody") == []
        assert gate.store.expire_history(connection, now=NOW) == 0


def test_record_missed_records_paused_and_skipped_occurrences_with_their_status(
    gate: Gate,
) -> None:
    later = DUE + timedelta(hours=1)
    with gate.pb.writer_engine.begin() as connection:
        for status, at in ((DispatchStatus.PAUSED, DUE), (DispatchStatus.SKIPPED, later)):
            added = gate.store.record_missed(
                connection, [("job:held", at)], node_id="op", now=NOW, status=status
            )
            assert added == 1
    assert [(row.status, row.attempt) for row in gate.dispatches()] == [
        ("paused", 0),
        ("skipped", 0),
    ]


# --- overlap: the schedule's running slot ---------------------------------------------------

STEP = timedelta(seconds=20)


def _schedule_occurrences(gate: Gate, name: str, overlap: str, count: int) -> list[JobBody]:
    """A (disabled: nothing queued) schedule and ``count`` scheduled executions one STEP apart
    from DUE, as the bodies of their deliveries."""
    from postburner_py.store.models import Schedule, ScheduleExecution

    with gate.pb.session() as session:
        schedule = Schedule(
            name=name,
            job_class="tests.jobs:record_run",
            cron="* * * * *",
            ttr=TTR,
            overlap=overlap,
            enabled=False,
        )
        session.add(schedule)
        session.commit()  # its reconcile (disabled) runs now, before the rows exist
        rows = [
            ScheduleExecution(
                schedule_id=schedule.id,
                run_at=DUE + n * STEP,
                next_run_at=DUE + (n + 1) * STEP,
                status="scheduled",
                cached_schedule={**schedule.snapshot(), "catch_up": True},
            )
            for n in range(count)
        ]
        session.add_all(rows)
        session.commit()
        return [JobBody("execution", row.id, name, row.run_at) for row in rows]


def _admit_occurrences(
    gate: Gate, bodies: Sequence[JobBody], *, now: Any, node: str = "w-1"
) -> list[str]:
    """Admit executions as the worker does: the batch statement first (on its path), then the
    transaction for what it left undecided."""
    answers: list[str | None] = [None] * len(bodies)
    if gate.path == "batch":
        wires = [_occurrence_delivery(body, now, node).wire() for body in bodies]
        with gate.pb.writer_engine.connect() as connection:
            rows = gate.store.settle_and_admit(
                connection, [], wires, allowed_prefixes=(), catch_up_window=timedelta(hours=1)
            )
            gate.store.end_batch(connection)
        for n, row in rows.items():
            if not row.undecided:
                answers[n] = ClaimOutcome.ACQUIRED if _claimed(row) else FENCED
    rest = [n for n, answer in enumerate(answers) if answer is None]
    if rest:
        with gate.pb.writer_engine.begin() as connection:
            _, rows = gate.store.lock_occurrences(
                connection, delayed_ids=[], execution_ids=[bodies[n].id for n in rest]
            )
            by_id = {row.id: row for row in rows}
            requests = [
                ClaimRequest(
                    bodies[n].key,
                    bodies[n].run_at,
                    node,
                    TTR,
                    3,
                    now,
                    overlap=by_id[bodies[n].id].overlap,
                )
                for n in rest
            ]
            claims = gate.store.claim(connection, requests)
        for n, claim in zip(rest, claims, strict=True):
            answers[n] = claim.outcome
    return [str(answer) for answer in answers]


def _occurrence_delivery(body: JobBody, now: Any, node: str) -> Delivery:
    return replace(_delivery(body, now, node), key=body.key)


def _statuses(gate: Gate) -> list[tuple[str, int]]:
    return [(row.status, row.attempt) for row in gate.dispatches()]


def test_overlap_skip_records_an_occurrence_due_while_another_runs_skipped_overlap(
    gate: Gate,
) -> None:
    first, second, third = _schedule_occurrences(gate, "ov-skip", "skip", 3)

    assert _admit_occurrences(gate, [first], now=first.run_at) == [ClaimOutcome.ACQUIRED]
    assert _admit_occurrences(gate, [second], now=second.run_at, node="w-2") == [
        ClaimOutcome.OVERLAP
    ]

    assert _statuses(gate) == [("dispatched", 1), ("skipped_overlap", 0)]
    [running] = [row for row in gate.dispatches() if row.status == "dispatched"]
    assert running.running_key == "ov-skip"
    # Once the first's lease lapses (its worker died), the third runs: never beyond the TTR.
    later = first.run_at + timedelta(seconds=TTR + 1)
    assert _admit_occurrences(gate, [third], now=later) == [ClaimOutcome.ACQUIRED]
    holders = [row.fire_time for row in gate.dispatches() if row.running_key is not None]
    assert holders == [third.run_at]


def test_overlap_skip_lets_two_occurrences_of_one_batch_never_both_run(gate: Gate) -> None:
    first, second = _schedule_occurrences(gate, "ov-batch", "skip", 2)

    answers = _admit_occurrences(gate, [first, second], now=second.run_at)

    assert sorted(answers) == sorted([ClaimOutcome.ACQUIRED, ClaimOutcome.OVERLAP])


def test_overlap_buffer_one_lets_one_wait_and_skips_the_next(gate: Gate) -> None:
    first, second, third = _schedule_occurrences(gate, "ov-buffer", "buffer_one", 3)
    assert _admit_occurrences(gate, [first], now=first.run_at) == [ClaimOutcome.ACQUIRED]

    assert _admit_occurrences(gate, [second], now=second.run_at) == [ClaimOutcome.WAITING]
    assert _admit_occurrences(gate, [third], now=third.run_at) == [ClaimOutcome.OVERLAP]
    # Still running: the waiting one keeps waiting.
    assert _admit_occurrences(gate, [second], now=third.run_at) == [ClaimOutcome.WAITING]

    with gate.pb.writer_engine.begin() as connection:
        assert gate.store.end_attempt(
            connection,
            "ov-buffer",
            first.run_at,
            attempt=1,
            status=DispatchStatus.COMPLETED,
            now=third.run_at,
        )
    assert _admit_occurrences(gate, [second], now=third.run_at) == [ClaimOutcome.ACQUIRED]
    assert _statuses(gate) == [("completed", 1), ("dispatched", 1), ("skipped_overlap", 0)]


def test_overlap_allow_runs_occurrences_side_by_side(gate: Gate) -> None:
    first, second = _schedule_occurrences(gate, "ov-allow", "allow", 2)

    assert _admit_occurrences(gate, [first], now=first.run_at) == [ClaimOutcome.ACQUIRED]
    assert _admit_occurrences(gate, [second], now=second.run_at) == [ClaimOutcome.ACQUIRED]

    assert all(row.running_key is None for row in gate.dispatches())


def test_settling_an_attempt_frees_its_schedules_running_slot(gate: Gate) -> None:
    first, second = _schedule_occurrences(gate, "ov-free", "skip", 2)
    assert _admit_occurrences(gate, [first], now=first.run_at) == [ClaimOutcome.ACQUIRED]
    with gate.pb.writer_engine.begin() as connection:
        gate.store.end_attempt(
            connection,
            "ov-free",
            first.run_at,
            attempt=1,
            status=DispatchStatus.COMPLETED,
            now=first.run_at,
        )

    assert _admit_occurrences(gate, [second], now=second.run_at) == [ClaimOutcome.ACQUIRED]
