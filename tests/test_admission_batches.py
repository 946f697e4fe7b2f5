"""Admission and settlement through the worker's ledger: the same decisions and rows on
PostgreSQL (the one-statement fast path, pg_batch, then SQLAlchemy Core for what it leaves) and
SQLite (SQLAlchemy Core)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import psycopg
from sqlalchemy import select

from postburner_py import Postburner, Schedule
from postburner_py.queue.signing import JobBody
from postburner_py.schedules.one_off import DelayedJob
from postburner_py.store.dispatch_log import (
    ClaimOutcome,
    DispatchRecord,
    SqlDispatchRegistry,
)
from postburner_py.store.history import HistoryRecord, HistoryStatus, HistoryStore
from postburner_py.worker.admission import Admission, AdmitRequest, Admitter, Outcome
from postburner_py.worker.fast_path import worker_ledger
from postburner_py.worker.ledger import Ledger
from postburner_py.worker.settlement import Settlement, Settler
from tests.factories import ManualClock, at, create_schedule
from tests.test_ledger import backend_pid

MakePostburner = Callable[..., Postburner]

T0 = at("2025-03-01 10:20")
DUE = at("2025-03-01 11:00")  # the first hourly occurrence after T0
NOW = DUE + timedelta(seconds=5)  # when the batch is admitted
BEGAN = NOW + timedelta(milliseconds=100)
FINISHED = NOW + timedelta(seconds=2)
ALLOWED = ["tests.jobs"]


@dataclass(frozen=True)
class World:
    """The occurrences of one database, as job bodies, and the Postburners over it."""

    pb: Postburner  # built the data (no allow-list)
    strict: Postburner  # admits (allowed_job_prefixes=ALLOWED)
    bodies: dict[str, JobBody]
    fast_answers: list[int]  # per ledger batch: answered by the one-statement fast path


def _world(make_postburner: MakePostburner, database_url: str) -> World:
    """Four one-off jobs and four schedules due at ``DUE``; ``done`` already completed."""
    pb = make_postburner(database_url=database_url, clock=ManualClock(T0))
    strict = make_postburner(
        database_url=database_url, clock=ManualClock(T0), allowed_job_prefixes=ALLOWED
    )
    bodies: dict[str, JobBody] = {}
    for name, job_class in [
        ("ok", "tests.jobs:record_run"),
        ("fail", "tests.jobs:record_run"),
        ("moved", "tests.jobs:record_run"),
        ("refused", "tests.never_imported:run"),
    ]:
        row = pb.enqueue_at(DUE, job_class, [name], job_id=name, ttr=60, max_attempts=3)
        bodies[name] = JobBody("delayed", row.id, row.job_id, row.run_at)
    for name in ("partial", "retry", "done", "late"):
        schedule_id = create_schedule(pb, name=name, ttr=60, max_attempts=3)
        with pb.session() as session:
            [execution] = session.get_one(Schedule, schedule_id).future_live()
        assert execution.run_at == DUE
        bodies[name] = JobBody("execution", execution.id, name, execution.run_at)
    earlier = SqlDispatchRegistry(pb.session_factory, node_id="earlier")
    claim = earlier.claim("done", DUE, lease_seconds=60, max_attempts=3, now=DUE)
    assert earlier.complete("done", DUE, attempt=claim.attempt, now=DUE + timedelta(seconds=1))
    return World(pb, strict, bodies, [])


def _handlers(world: World) -> tuple[Admitter, Settler]:
    pb = world.strict
    history = HistoryStore(pb.session_factory)
    return Admitter(pb, SqlDispatchRegistry(pb.session_factory), history), Settler(history)


@contextmanager
def _fast_ledger(world: World) -> Iterator[tuple[Admitter, Ledger]]:
    """A worker's ledger (PostgreSQL: with the fast path) and its admitter, closed after."""
    admitter, settler = _handlers(world)
    ledger = worker_ledger(world.strict.writer_engine, admitter, settler)
    try:
        yield admitter, ledger
    finally:
        ledger.close()


def _one_batch(world: World, admissions: Sequence[Any], settlements: Sequence[Any]) -> list[Any]:
    """Answers of one ledger batch holding ``settlements`` then ``admissions``, as a worker's
    ledger takes them (a first request holds the ledger until every one is queued)."""
    admitter, settler = _handlers(world)
    ledger = worker_ledger(world.strict.writer_engine, admitter, settler)
    queued = threading.Event()
    try:
        ledger.submit(lambda _connection, items: [queued.wait(10) for _ in items], None)
        futures = [ledger.submit(settler, item) for item in settlements]
        futures += [ledger.submit(admitter, item) for item in admissions]
        queued.set()
        answers = [future.result(timeout=30) for future in futures]
    finally:
        world.fast_answers.append(ledger.fast_answers)
        ledger.close()
    settled = answers[: len(settlements)]
    return settled + [admitter.answer(answer) for answer in answers[len(settlements) :]]


def _admit(world: World, requests: Sequence[AdmitRequest]) -> list[Admission]:
    return _one_batch(world, requests, [])


def _settle(world: World, settlements: Sequence[Settlement]) -> list[Any]:
    return _one_batch(world, [], settlements)


def _first_batch(world: World) -> dict[str, Admission]:
    """One batch naming every case; ``ok`` twice, ``moved`` with a run_at not its row's."""
    bodies = world.bodies
    moved = replace(bodies["moved"], run_at=DUE + timedelta(seconds=1))
    named = [
        ("ok", bodies["ok"], NOW),
        ("partial", bodies["partial"], NOW),
        ("retry", bodies["retry"], NOW),
        ("fail", bodies["fail"], NOW),
        ("ok again", bodies["ok"], NOW),
        ("moved", moved, NOW),
        ("refused", bodies["refused"], NOW),
        ("done", bodies["done"], NOW),
        ("late", bodies["late"], DUE + timedelta(hours=2)),
    ]
    answers = _admit(world, [AdmitRequest(body, now, "w-1") for _, body, now in named])
    return {name: answer for (name, _, _), answer in zip(named, answers, strict=True)}


def _ending(
    admission: Admission, status: HistoryStatus, *, retry: bool = False, **extra: Any
) -> Settlement:
    assert admission.occurrence and admission.claim and admission.started
    return Settlement(
        occurrence=admission.occurrence,
        attempt=admission.claim.attempt,
        started=admission.started,
        worker_id="w-1",
        began_at=BEGAN,
        finished_at=FINISHED,
        elapsed_ms=1900.0,
        status=status,
        retry=retry,
        **extra,
    )


def _settle_first_batch(world: World, admitted: dict[str, Admission]) -> list[Any]:
    error = RuntimeError("downstream said no")
    return _settle(
        world,
        [
            _ending(admitted["ok"], HistoryStatus.COMPLETED),
            _ending(
                admitted["partial"], HistoryStatus.PARTIAL_SUCCESS, results={"sent": 3, "failed": 1}
            ),
            _ending(admitted["retry"], HistoryStatus.FAILED, retry=True, error=error),
            _ending(admitted["fail"], HistoryStatus.FAILED, error=error),
        ],
    )


def _retry_later(world: World) -> Admission:
    later = NOW + timedelta(seconds=10)
    [answer] = _admit(world, [AdmitRequest(world.bodies["retry"], later, "w-2")])
    return answer


def _stored(world: World, job_id: str) -> list[Any]:
    """The history entries of ``job_id`` as the store reads them back."""
    return HistoryStore(world.pb.session_factory).get_by_job_id(job_id)


def _values(row: Any) -> dict[str, Any]:
    """Every column of an ORM row but its primary key."""
    names = [column.name for column in row.__table__.columns if column.name != "id"]
    return {name: getattr(row, name) for name in names}


def _history(pb: Postburner) -> dict[tuple[str | None, int], dict[str, Any]]:
    with pb.session() as session:
        rows = session.scalars(select(HistoryRecord))
        return {(row.schedule_name, row.attempt): _values(row) for row in rows}


def _dispatches(pb: Postburner) -> dict[str, dict[str, Any]]:
    with pb.session() as session:
        return {row.key: _values(row) for row in session.scalars(select(DispatchRecord))}


def _delayed(pb: Postburner) -> dict[str, DelayedJob]:
    with pb.session() as session:
        return {row.job_id: row for row in session.scalars(select(DelayedJob))}


def _delayed_statuses(pb: Postburner) -> dict[str, str]:
    return {job_id: row.status for job_id, row in _delayed(pb).items()}


# --- each dialect on its own ------------------------------------------------------------------


def test_one_batch_decides_every_kind_of_delivery(
    make_postburner: MakePostburner, database_url: str
) -> None:
    world = _world(make_postburner, database_url)
    admitted = _first_batch(world)
    for name in ("ok", "partial", "retry", "fail"):
        admission = admitted[name]
        assert admission.outcome is None, name
        assert admission.claim is not None and admission.claim.outcome is ClaimOutcome.ACQUIRED
        assert admission.started is not None and admission.started.id is not None
        assert admission.started.attempt == 1
        assert admission.started.queue_time_ms == 5000.0
        assert admission.started.started_at == NOW
        assert _stored(world, admission.started.job_id) == [admission.started]
    busy = admitted["ok again"]
    assert busy.outcome is None and busy.started is None
    assert busy.claim is not None and busy.claim.outcome is ClaimOutcome.BUSY
    assert admitted["moved"] == Admission(Outcome.FENCED)
    refused = admitted["refused"]
    assert refused.outcome is Outcome.REFUSED and refused.claim is None
    assert refused.occurrence is not None and refused.occurrence.key == "job:refused"
    finished = admitted["done"]
    assert finished.outcome is None and finished.started is None
    assert finished.claim is not None and finished.claim.outcome is ClaimOutcome.FINISHED
    assert not finished.claim.should_run
    assert admitted["late"].outcome is Outcome.MISSED
    history = _history(world.pb)
    assert sorted(history) == [("job:fail", 1), ("job:ok", 1), ("partial", 1), ("retry", 1)]
    dispatches = _dispatches(world.pb)
    assert {key: row["status"] for key, row in dispatches.items()} == {
        "job:ok": "dispatched",
        "job:fail": "dispatched",
        "partial": "dispatched",
        "retry": "dispatched",
        "done": "completed",
        "late": "missed",
    }
    assert dispatches["job:ok"]["lease_expires_at"] == NOW + timedelta(seconds=60)


def test_settlement_records_how_each_attempt_ended(
    make_postburner: MakePostburner, database_url: str
) -> None:
    world = _world(make_postburner, database_url)
    admitted = _first_batch(world)
    answers = _settle_first_batch(world, admitted)
    assert [entry.status for entry in answers] == [
        HistoryStatus.COMPLETED,
        HistoryStatus.PARTIAL_SUCCESS,
        HistoryStatus.FAILED,
        HistoryStatus.FAILED,
    ]
    assert [_stored(world, entry.job_id) for entry in answers] == [[entry] for entry in answers]
    history = _history(world.pb)
    for ident in [("job:ok", 1), ("partial", 1), ("retry", 1), ("job:fail", 1)]:
        row = history[ident]
        assert (row["started_at"], row["finished_at"]) == (BEGAN, FINISHED), ident
        assert (row["queue_time_ms"], row["execution_time_ms"]) == (5100.0, 1900.0), ident
    assert history[("job:ok", 1)]["status"] == "completed"
    assert history[("partial", 1)]["status"] == "partial_success"
    assert history[("partial", 1)]["results"] == {"sent": 3, "failed": 1}
    for ident in [("retry", 1), ("job:fail", 1)]:
        assert history[ident]["status"] == "failed"
        assert history[ident]["error_message"] == "RuntimeError: downstream said no"
    dispatches = _dispatches(world.pb)
    assert {key: (row["status"], row["lease_expires_at"]) for key, row in dispatches.items()} == {
        "job:ok": ("completed", None),
        "partial": ("completed", None),
        "retry": ("dispatched", FINISHED),  # the lease ends: the next delivery takes over
        "job:fail": ("failed", None),
        "done": ("completed", None),
        "late": ("missed", None),
    }
    assert _delayed_statuses(world.pb) == {
        "ok": "completed",
        "fail": "failed",
        "moved": "pending",
        "refused": "pending",
    }


def test_a_released_attempt_is_taken_over_by_the_next_delivery_as_attempt_two(
    make_postburner: MakePostburner, database_url: str
) -> None:
    world = _world(make_postburner, database_url)
    _settle_first_batch(world, _first_batch(world))
    retried = _retry_later(world)
    assert retried.outcome is None
    assert retried.claim is not None and retried.claim.outcome is ClaimOutcome.TAKEN_OVER
    assert retried.started is not None and retried.started.attempt == 2
    entry = SqlDispatchRegistry(world.pb.session_factory).find_dispatch("retry", DUE)
    assert entry is not None
    assert (entry.status, entry.attempt, entry.node_id) == ("dispatched", 2, "w-2")
    assert entry.lease_expires_at == NOW + timedelta(seconds=70)
    assert _history(world.pb)[("retry", 2)]["status"] == "started"


def test_a_closed_one_off_job_is_stamped_with_the_attempts_finish(
    make_postburner: MakePostburner, database_url: str
) -> None:
    world = _world(make_postburner, database_url)
    _settle_first_batch(world, _first_batch(world))
    delayed = _delayed(world.pb)
    assert (delayed["ok"].updated_at, delayed["fail"].updated_at) == (FINISHED, FINISHED)


# --- both dialects side by side -----------------------------------------------------------------


def _run_everything(make_postburner: MakePostburner, database_url: str) -> dict[str, Any]:
    world = _world(make_postburner, database_url)
    admitted = _first_batch(world)
    settled = _settle_first_batch(world, admitted)
    retried = _retry_later(world)
    return {
        "admitted": {name: _without_ids(answer) for name, answer in admitted.items()},
        "settled": [replace(entry, id=None) for entry in settled],
        "retried": _without_ids(retried),
        "history": _history(world.pb),
        "dispatches": _dispatches(world.pb),
        "delayed": _delayed_statuses(world.pb),
    }


def _without_ids(admission: Admission) -> Admission:
    """The answer without the history row id (the sequences of two databases may differ)."""
    started = admission.started
    return admission if started is None else replace(admission, started=replace(started, id=None))


def test_postgresql_and_sqlite_answer_and_store_the_same(
    make_postburner: MakePostburner, postgres_url: str, sqlite_url: str
) -> None:
    on_postgresql = _run_everything(make_postburner, postgres_url)
    on_sqlite = _run_everything(make_postburner, sqlite_url)
    for part in on_postgresql:
        assert on_postgresql[part] == on_sqlite[part], part


def test_no_results_are_stored_as_json_null_on_every_path(
    make_postburner: MakePostburner, database_url: str
) -> None:
    world = _world(make_postburner, database_url)
    _settle_first_batch(world, _first_batch(world))
    _retry_later(world)
    with world.pb.engine.connect() as connection:
        sql_nulls = connection.scalars(
            select(HistoryRecord.job_id).where(HistoryRecord.results.is_(None))
        ).all()
    assert sql_nulls == []


def test_the_fast_path_decides_fresh_and_fenced_deliveries_and_every_settlement(
    make_postburner: MakePostburner, postgres_url: str
) -> None:
    world = _world(make_postburner, postgres_url)
    admitted = _first_batch(world)
    _settle_first_batch(world, admitted)
    _retry_later(world)
    # ok, partial, retry, fail claimed and moved fenced in the statement; the second ok,
    # refused, done and late decided in the transaction; the retry's takeover too.
    assert world.fast_answers == [5, 4, 0]


def test_a_duplicate_delivery_in_the_batch_that_settles_its_occurrence_does_not_run(
    make_postburner: MakePostburner, database_url: str
) -> None:
    world = _world(make_postburner, database_url)
    admitted = _first_batch(world)
    duplicate = AdmitRequest(world.bodies["ok"], FINISHED, "w-2")
    _, answer = _one_batch(world, [duplicate], [_ending(admitted["ok"], HistoryStatus.COMPLETED)])
    assert answer == Admission(Outcome.FENCED)  # its one-off row is no longer pending
    assert _delayed_statuses(world.pb)["ok"] == "completed"
    assert _history(world.pb)[("job:ok", 1)]["status"] == "completed"


def test_a_lost_ledger_connection_is_replaced_and_the_batch_still_admits(
    make_postburner: MakePostburner, postgres_url: str, pg_server: Any
) -> None:
    world = _world(make_postburner, postgres_url)
    with _fast_ledger(world) as (admitter, ledger):
        pid = ledger.call(backend_pid, None)
        with psycopg.connect(pg_server.admin_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        request = AdmitRequest(world.bodies["ok"], NOW, "w-1")
        answer = admitter.answer(ledger.call(admitter, request))
        assert answer.started is not None and answer.started.id is not None
        assert ledger.call(backend_pid, None) != pid
    assert _dispatches(world.pb)["job:ok"]["status"] == "dispatched"


def _autocommit(connection: Any, items: Sequence[Any]) -> list[bool]:
    driver = connection.connection.driver_connection
    return [bool(driver.autocommit) for _ in items]


def test_a_transaction_after_a_fast_batch_is_a_real_transaction(
    make_postburner: MakePostburner, postgres_url: str
) -> None:
    world = _world(make_postburner, postgres_url)
    with _fast_ledger(world) as (admitter, ledger):
        request = AdmitRequest(world.bodies["ok"], NOW, "w-1")
        assert admitter.answer(ledger.call(admitter, request)).started is not None
        assert world.fast_answers == [] and ledger.fast_answers == 1
        assert ledger.call(_autocommit, None) is False


def _forget_the_batch_statement(connection: Any, items: Sequence[Any]) -> list[None]:
    connection.exec_driver_sql("DEALLOCATE postburner_batch")
    return [None for _ in items]


def test_a_batch_the_server_refuses_is_decided_in_a_transaction_then_runs_fast_again(
    make_postburner: MakePostburner, postgres_url: str, caplog: Any
) -> None:
    world = _world(make_postburner, postgres_url)
    with _fast_ledger(world) as (admitter, ledger):
        first = admitter.answer(ledger.call(admitter, AdmitRequest(world.bodies["ok"], NOW, "w")))
        pid = ledger.call(backend_pid, None)
        ledger.call(_forget_the_batch_statement, None)

        second = AdmitRequest(world.bodies["partial"], NOW, "w")
        refused = admitter.answer(ledger.call(admitter, second))
        third = AdmitRequest(world.bodies["retry"], NOW, "w")
        fast_again = admitter.answer(ledger.call(admitter, third))

        assert first.started is not None and first.started.id is not None
        assert refused.started is not None and refused.started.id is not None
        assert fast_again.started is not None and fast_again.started.id is not None
        assert ledger.fast_answers == 2  # the first and the third; the second in a transaction
        assert ledger.call(backend_pid, None) != pid  # the refusing connection was dropped
    assert "prepared statement" in caplog.text
    assert {name: row["status"] for name, row in _dispatches(world.pb).items()} == {
        "job:ok": "dispatched",
        "partial": "dispatched",
        "retry": "dispatched",
        "done": "completed",
    }
