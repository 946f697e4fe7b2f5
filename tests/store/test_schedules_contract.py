"""The ScheduleStore contract, run against every store (PostgreSQL and SQLite).

Each test talks to the store's methods directly, on rows written with a plain session (no
session hooks, so nothing reconciles or puts behind the test's back).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from postburner_py.app import Postburner
from postburner_py.store import Store, store_for
from postburner_py.store.contract.schedules import PlannedExecution, PutRef
from postburner_py.store.dispatch_log import DispatchRecord, DispatchStatus
from postburner_py.store.models import (
    ExecutionStatus,
    Schedule,
    ScheduleExecution,
    WatchdogHeartbeat,
)
from tests.factories import at, make_one_off, make_schedule

NOW = at("2031-03-01 10:30")
NEXT = at("2031-03-01 11:00")
LATER = at("2031-03-01 12:00")


@pytest.fixture
def pb(make_postburner: Callable[..., Postburner], database_url: str) -> Postburner:
    return make_postburner(database_url=database_url)


@pytest.fixture
def store(pb: Postburner) -> Store:
    return store_for(pb.engine)


@pytest.fixture
def plain(pb: Postburner) -> Iterator[Session]:
    """A session without the library's hooks, for writing the rows a test starts from."""
    with Session(pb.engine, expire_on_commit=False) as session:
        yield session


def _add_schedules(session: Session, count: int, **overrides: Any) -> list[int]:
    schedules = [make_schedule(**overrides) for _ in range(count)]
    session.add_all(schedules)
    session.commit()
    return [schedule.id for schedule in schedules]


def _plan_and_insert(
    store: Store, session: Session, schedule_ids: list[int], run_at: datetime = NEXT
) -> list[tuple[int, int, datetime]]:
    rows = store.plan_rows(session, schedule_ids, NOW)
    planned = [PlannedExecution(row, run_at, run_at + timedelta(hours=1)) for row in rows]
    inserted = store.insert_executions(session, planned, NOW)
    session.commit()
    return inserted


def _holding_lock(pb: Postburner, store: Store, schedule_id: int) -> Session:
    holder = pb.work_session()
    assert store.lock_schedules(holder, pb.settings.namespace, [schedule_id], blocking=True)
    return holder


# --- locks ------------------------------------------------------------------------------------


def test_try_lock_refuses_a_schedule_locked_elsewhere(pb: Postburner, store: Store) -> None:
    holder = _holding_lock(pb, store, 1)
    try:
        with pb.work_session() as other:
            assert not store.lock_schedules(other, pb.settings.namespace, [1], blocking=False)
            assert not other.in_transaction()  # refused: rolled back, nothing held
    finally:
        holder.rollback()
        holder.close()
    with pb.work_session() as other:
        assert store.lock_schedules(other, pb.settings.namespace, [1], blocking=False)
        other.rollback()


def test_blocking_lock_waits_until_the_holder_ends_its_transaction(
    pb: Postburner, store: Store
) -> None:
    holder = _holding_lock(pb, store, 7)
    acquired: list[float] = []

    def lock() -> None:
        with pb.work_session() as waiter:
            assert store.lock_schedules(waiter, pb.settings.namespace, [7], blocking=True)
            acquired.append(time.monotonic())
            waiter.rollback()

    thread = threading.Thread(target=lock)
    thread.start()
    time.sleep(0.6)
    assert acquired == []  # still waiting
    released = time.monotonic()
    holder.commit()
    holder.close()
    thread.join(timeout=10)
    assert len(acquired) == 1 and acquired[0] >= released


def test_try_lock_schedules_takes_only_the_free_locks(pb: Postburner, store: Store) -> None:
    holder = _holding_lock(pb, store, 1) if store.capabilities.advisory_locks else None
    try:
        with pb.work_session() as session:
            if holder is None:  # one writer: its transaction covers every schedule
                assert store.lock_schedules(session, pb.settings.namespace, [], blocking=True)
            taken = store.try_lock_schedules(session, pb.settings.namespace, [2, 1, 3])
            session.rollback()
    finally:
        if holder is not None:
            holder.rollback()
            holder.close()
    assert taken == ({2, 3} if holder is not None else {1, 2, 3})


# --- creating executions ------------------------------------------------------------------------


def test_insert_executions_ignores_a_duplicate_occurrence_and_returns_only_the_inserted(
    store: Store, plain: Session
) -> None:
    (schedule_id,) = _add_schedules(plain, 1)
    (row,) = store.plan_rows(plain, [schedule_id], NOW)
    first = store.insert_executions(plain, [PlannedExecution(row, NEXT, LATER)], NOW)
    plain.commit()
    again = [PlannedExecution(row, NEXT, LATER), PlannedExecution(row, LATER, LATER)]
    second = store.insert_executions(plain, again, NOW)
    plain.commit()
    assert [(sid, run_at) for _, sid, run_at in first] == [(schedule_id, NEXT)]
    assert [(sid, run_at) for _, sid, run_at in second] == [(schedule_id, LATER)]
    stored = plain.scalars(select(ScheduleExecution).order_by(ScheduleExecution.run_at)).all()
    assert [(e.run_at, e.status) for e in stored] == [
        (NEXT, ExecutionStatus.SCHEDULED),
        (LATER, ExecutionStatus.SCHEDULED),
    ]
    schedule = plain.get(Schedule, schedule_id)
    assert schedule is not None
    assert all(e.cached_schedule == schedule.snapshot() for e in stored)


def test_plan_rows_skips_a_schedule_that_has_a_future_execution(
    store: Store, plain: Session
) -> None:
    planned, waiting = _add_schedules(plain, 2)
    _plan_and_insert(store, plain, [planned])
    rows = store.plan_rows(plain, [planned, waiting], NOW)
    plain.rollback()
    assert [row.id for row in rows] == [waiting]


def test_record_puts_skips_rows_no_longer_live(store: Store, plain: Session) -> None:
    ids = _add_schedules(plain, 2)
    (live_id, _, _), (retired_id, _, _) = sorted(_plan_and_insert(store, plain, ids))
    store.supersede_executions(plain, [retired_id], NOW, still="live")
    recorded = store.record_puts(
        plain, [PutRef(live_id, 41, "server-a"), PutRef(retired_id, 42, "server-a")]
    )
    plain.commit()
    assert recorded == {live_id}
    rows = plain.execute(
        select(ScheduleExecution.id, ScheduleExecution.beanstalk_job_id).order_by(
            ScheduleExecution.id
        )
    ).all()
    assert [tuple(row) for row in rows] == [(live_id, 41), (retired_id, None)]


def test_record_puts_leaves_a_row_someone_else_put(store: Store, plain: Session) -> None:
    (execution_id, _, _) = _plan_and_insert(store, plain, _add_schedules(plain, 1))[0]
    assert store.record_puts(plain, [PutRef(execution_id, 5, "server-a")]) == {execution_id}
    assert store.record_puts(plain, [PutRef(execution_id, 6, "server-a")]) == set()
    plain.commit()
    assert plain.scalar(select(ScheduleExecution.beanstalk_job_id)) == 5


def test_claim_for_put_lets_only_one_claimer_through(store: Store, plain: Session) -> None:
    (execution_id, _, _) = _plan_and_insert(store, plain, _add_schedules(plain, 1))[0]
    store.release_claims(plain, [execution_id])  # scheduled, no claim: claimable again
    plain.commit()
    grace = timedelta(seconds=60)
    assert store.claim_for_put(plain, execution_id, NOW, grace)
    assert not store.claim_for_put(plain, execution_id, NOW, grace)
    plain.commit()


def test_record_missed_records_each_occurrence_once(store: Store, plain: Session) -> None:
    assert store.record_missed(plain, [("nightly", NOW)], node_id="test", now=NOW) == 1
    twice = [("nightly", NOW), ("nightly", NEXT)]
    assert store.record_missed(plain, twice, node_id="test", now=NOW) == 1
    plain.commit()
    assert len(plain.scalars(select(DispatchRecord)).all()) == 2


# --- finding the work ---------------------------------------------------------------------------


def test_schedules_to_converge_finds_the_missing_and_the_drifted(
    store: Store, plain: Session
) -> None:
    healthy, drifted, missing = _add_schedules(plain, 3)
    _plan_and_insert(store, plain, [healthy, drifted])
    assert store.schedules_to_converge(plain, NOW) == ([missing], [])
    schedule = plain.get(Schedule, drifted)
    assert schedule is not None
    schedule.kwargs = {"flag": False}
    plain.commit()
    assert store.schedules_to_converge(plain, NOW) == ([missing], [drifted])
    plain.rollback()


def test_json_key_order_is_not_drift(store: Store, plain: Session) -> None:
    (schedule_id,) = _add_schedules(plain, 1, kwargs={"a": 1, "b": [1, 2]})
    _plan_and_insert(store, plain, [schedule_id])
    plain.execute(
        text("UPDATE postburner_schedule_executions SET cached_schedule = :snap"),
        {"snap": _reordered_snapshot(plain, schedule_id)},
    )
    plain.commit()
    assert store.schedules_to_converge(plain, NOW) == ([], [])
    plain.rollback()


def _reordered_snapshot(session: Session, schedule_id: int) -> str:
    import json

    schedule = session.get(Schedule, schedule_id)
    assert schedule is not None
    snapshot = schedule.snapshot()
    snapshot["kwargs"] = {"b": [1, 2], "a": 1}
    return json.dumps(dict(reversed(list(snapshot.items()))))


def test_a_schedule_with_two_future_executions_is_wrong(store: Store, plain: Session) -> None:
    (schedule_id,) = _add_schedules(plain, 1)
    (row,) = store.plan_rows(plain, [schedule_id], NOW)
    planned = [PlannedExecution(row, NEXT, LATER), PlannedExecution(row, LATER, LATER)]
    store.insert_executions(plain, planned, NOW)
    plain.commit()
    assert store.schedules_to_converge(plain, NOW) == ([], [schedule_id])
    plain.rollback()


def test_stale_executions_are_those_of_disabled_schedules(store: Store, plain: Session) -> None:
    enabled, disabled = _add_schedules(plain, 2)
    inserted = dict(
        (sid, eid) for eid, sid, _ in _plan_and_insert(store, plain, [enabled, disabled])
    )
    schedule = plain.get(Schedule, disabled)
    assert schedule is not None
    schedule.enabled = False
    plain.commit()
    stale = store.stale_executions(plain, NOW, timedelta(hours=12))
    assert [(row.id, row.schedule_id) for row in stale] == [(inserted[disabled], disabled)]
    retired = store.supersede_executions(
        plain,
        [inserted[disabled], inserted[enabled]],
        NOW,
        still="stale",
        lookback=timedelta(hours=12),
    )
    plain.commit()
    assert [row[0] for row in retired] == [inserted[disabled]]


def test_unparsable_instants_are_reported_not_raised(store: Store, plain: Session) -> None:
    _good, bad = _add_schedules(plain, 2)
    if store.capabilities.unparsable_instants:
        plain.execute(
            text("UPDATE postburner_schedules SET anchor = 'not a date' WHERE id = :id"),
            {"id": bad},
        )
        plain.commit()
    found = store.unparsable_schedules(plain, enabled_only=True)
    plain.rollback()
    if not store.capabilities.unparsable_instants:
        assert found == {}  # typed columns: such a value cannot be stored
        return
    assert set(found) == {bad}
    assert "anchor" in found[bad].reason and "not a date" in found[bad].reason


# --- the queue audit ----------------------------------------------------------------------------


def test_audit_rows_count_expected_and_foreign_jobs_per_queue(store: Store, plain: Session) -> None:
    (execution_id, _, _) = _plan_and_insert(store, plain, _add_schedules(plain, 1, queue="mail"))[0]
    store.record_puts(plain, [PutRef(execution_id, 9, "server-a")])
    plain.commit()
    window, margin = timedelta(minutes=10), timedelta(seconds=2)
    here = store.audit_tally(plain, "execution", "server-a", NOW, window, margin)
    elsewhere = store.audit_tally(plain, "execution", "server-b", NOW, window, margin)
    assert [tuple(row) for row in here] == [("mail", 1, 0)]
    assert [tuple(row) for row in elsewhere] == [("mail", 0, 1)]
    suspects = store.audit_suspects(plain, "execution", "server-b", (), NOW, window)
    assert [(row.id, row.beanstalk_job_id, row.beanstalk_server_id) for row in suspects] == [
        (execution_id, 9, "server-a")
    ]
    schedule_name = plain.scalar(select(Schedule.name))
    assert suspects[0].key == schedule_name
    short = store.audit_suspects(plain, "execution", "server-a", ("mail",), NOW, window)
    assert [row.id for row in short] == [execution_id]
    plain.rollback()


def test_forget_lost_jobs_leaves_a_row_whose_job_changed(store: Store, plain: Session) -> None:
    (execution_id, _, _) = _plan_and_insert(store, plain, _add_schedules(plain, 1))[0]
    store.record_puts(plain, [PutRef(execution_id, 9, "server-a")])
    plain.commit()
    lost = store.audit_suspects(plain, "execution", "server-b", (), NOW, timedelta(minutes=10))
    store.forget_lost_jobs(plain.connection(), "execution", lost)
    plain.commit()
    assert plain.scalar(select(ScheduleExecution.beanstalk_job_id)) is None
    store.forget_lost_jobs(plain.connection(), "execution", lost)  # nothing left to match
    plain.commit()


# --- watchdog and settings ----------------------------------------------------------------------


def test_a_heartbeat_is_inserted_then_updated_in_place(store: Store, plain: Session) -> None:
    row = {"node": "w1", "started_at": NOW, "last_pass_at": None, "last_report": {"a": 1}}
    store.beat(plain, row, {"last_report": {"a": 1}})
    store.beat(plain, row, {"last_report": {"a": 2}, "last_pass_at": NEXT})
    plain.commit()
    (beat,) = store.heartbeats(plain)
    assert (beat.node, beat.last_pass_at, beat.last_report) == ("w1", NEXT, {"a": 2})
    store.forget_heartbeat(plain, "w1")
    plain.commit()
    assert plain.scalars(select(WatchdogHeartbeat)).all() == []


def test_a_setting_keeps_the_value_stored_first(store: Store, pb: Postburner) -> None:
    with pb.engine.begin() as connection:
        first = store.setting(connection, "contract-key", "one", NOW)
    with pb.engine.begin() as connection:
        second = store.setting(connection, "contract-key", "two", NOW)
    assert (first, second) == ("one", "one")


def test_schedules_with_waiting_ignores_an_occurrence_a_worker_started(
    store: Store, plain: Session
) -> None:
    due = NOW - timedelta(minutes=1)
    (schedule_id,) = _add_schedules(plain, 1)
    _plan_and_insert(store, plain, [schedule_id], run_at=due)
    assert store.schedules_with_waiting(plain, [schedule_id], NOW) == {schedule_id}
    assert store.latest_live_run_at(plain, [schedule_id]) == {schedule_id: due}
    assert store.latest_accounted(plain, [schedule_id], NOW) == {schedule_id: due}
    name = plain.scalar(select(Schedule.name))
    assert not store.occurrence_claimed(plain, str(name), due)
    started = {"key": name, "fire_time": due, "dispatched_at": NOW, "node_id": "w", "attempt": 1}
    plain.add(DispatchRecord(**started, status="dispatched", updated_at=NOW))
    plain.commit()
    assert store.schedules_with_waiting(plain, [schedule_id], NOW) == set()
    assert store.occurrence_claimed(plain, str(name), due)
    plain.rollback()


def test_the_one_statement_insert_snapshots_every_cacheable_attribute() -> None:
    import re

    from postburner_py.store import queries
    from postburner_py.store.models import CACHEABLE_ATTRIBUTES

    statement = queries.load("schedules")["insert_executions"]
    built = statement[statement.index("jsonb_build_object(") : statement.index("),\n")]
    assert re.findall(r"'(\w+)', ", built) == list(CACHEABLE_ATTRIBUTES)


def test_unqueued_executions_are_live_rows_without_a_job_past_their_claim(
    store: Store, plain: Session
) -> None:
    lookback, grace = timedelta(hours=12), timedelta(seconds=60)
    ids = _add_schedules(plain, 2)
    (claimed, _, _), (released, _, _) = sorted(_plan_and_insert(store, plain, ids))
    store.release_claims(plain, [released])  # a failed put: claimable again at once
    plain.commit()
    assert store.unqueued_executions(plain, NOW, lookback, grace) == [released]
    later = NOW + grace * 2  # the other claim has expired: its putter died
    assert store.unqueued_executions(plain, later, lookback, grace) == [claimed, released]
    rows = store.claim_unqueued(plain, [claimed, released], later, lookback, grace)
    assert sorted(row.id for row in rows) == [claimed, released]
    store.mark_claimed(plain, [released], later)
    plain.commit()
    assert store.unqueued_executions(plain, later, lookback, grace) == [claimed]


def test_retired_jobs_are_found_and_forgotten(store: Store, plain: Session) -> None:
    lookback = timedelta(hours=12)
    (execution_id, _, _) = _plan_and_insert(store, plain, _add_schedules(plain, 1))[0]
    store.record_puts(plain, [PutRef(execution_id, 3, "server-a")])
    assert store.retired_jobs(plain, "execution", NOW, lookback) == []
    retired = store.supersede_executions(plain, [execution_id], NOW, still="live")
    assert retired == [(execution_id, 3, "server-a")]
    found = store.retired_jobs(plain, "execution", NOW, lookback)
    assert [tuple(row) for row in found] == [(execution_id, 3, "server-a")]
    store.forget_retired_jobs(plain, "execution", [execution_id], NOW, lookback)
    plain.commit()
    assert store.retired_jobs(plain, "execution", NOW, lookback) == []
    assert store.retired_jobs(plain, "delayed", NOW, lookback) == []


def test_retire_executions_of_a_deleted_schedule_returns_their_jobs(
    store: Store, plain: Session
) -> None:
    (schedule_id,) = _add_schedules(plain, 1)
    (execution_id, _, _) = _plan_and_insert(store, plain, [schedule_id])[0]
    store.record_puts(plain, [PutRef(execution_id, 8, "server-a")])
    assert store.retire_executions_of(plain, schedule_id) == [(execution_id, 8, "server-a")]
    assert store.retire_executions_of(plain, schedule_id) == []
    assert store.live_executions(plain, schedule_id) == []
    plain.commit()


def _worker_row(worker_id: str, seen: datetime, **changes: Any) -> dict[str, Any]:
    row = {
        "id": worker_id,
        "node": "node-1",
        "host": "host",
        "pid": 1,
        "queues": ["default"],
        "concurrency": 1,
        "started_at": seen,
        "last_seen_at": seen,
        "jobs_run": 0,
        "version": "1",
    }
    return {**row, **changes}


def test_worker_beats_upsert_one_row_per_worker_and_expire_by_last_seen(
    store: Store, plain: Session
) -> None:
    store.beat_worker(plain, _worker_row("w1", NOW - timedelta(hours=2)))
    store.beat_worker(plain, _worker_row("w2", NOW))
    store.beat_worker(plain, _worker_row("w2", NOW, jobs_run=5, queues=["a", "b"]))
    plain.commit()
    rows = {row.id: row for row in store.worker_heartbeats(plain)}
    assert (rows["w2"].jobs_run, rows["w2"].queues) == (5, ["a", "b"])
    assert store.expire_worker_heartbeats(plain, NOW - timedelta(hours=1)) == 1
    store.forget_worker(plain, "w2")
    store.forget_worker(plain, "gone already")
    plain.commit()
    assert store.worker_heartbeats(plain) == []


def test_queues_in_use_are_those_of_enabled_schedules_and_pending_one_off_jobs(
    store: Store, plain: Session
) -> None:
    plain.add_all(
        [
            make_schedule(name="on", queue="reports"),
            make_schedule(name="off", queue="unused", enabled=False),
            make_schedule(name="also", queue="reports"),
            _pending_one_off("mail", "pending"),
            _pending_one_off("done", "completed"),
        ]
    )
    plain.commit()
    assert store.queues_in_use(plain) == ["mail", "reports"]


def _pending_one_off(queue: str, status: str) -> Any:
    return make_one_off(job_id=f"one-off-{queue}", queue=queue, run_at=NOW, status=status)


def test_paused_schedules_are_stale_and_ended_ones_are_not_missing(
    store: Store, plain: Session
) -> None:
    running, paused, ended = _add_schedules(plain, 3)
    inserted = {sid: eid for eid, sid, _ in _plan_and_insert(store, plain, [running, paused])}
    plain.get_one(Schedule, paused).paused_at = NOW
    plain.get_one(Schedule, ended).ends_at = NOW
    plain.commit()
    assert store.schedules_to_converge(plain, NOW) == ([], [])  # ended: nothing to create
    stale = store.stale_executions(plain, NOW, timedelta(hours=12))
    assert [(row.id, row.schedule_id) for row in stale] == [(inserted[paused], paused)]
    assert [row.id for row in store.plan_rows(plain, [running, paused, ended], NOW)] == [ended]
    plain.get_one(Schedule, ended).ends_at = LATER
    plain.commit()
    assert store.schedules_to_converge(plain, NOW) == ([ended], [])  # not ended yet: missing
    plain.rollback()


def test_a_run_window_change_is_drift(store: Store, plain: Session) -> None:
    (schedule_id,) = _add_schedules(plain, 1)
    _plan_and_insert(store, plain, [schedule_id])
    assert store.schedules_to_converge(plain, NOW) == ([], [])
    for field, value in (("starts_at", NOW), ("ends_at", LATER), ("catch_up_window", 60)):
        setattr(plain.get_one(Schedule, schedule_id), field, value)
        plain.commit()
        assert store.schedules_to_converge(plain, NOW) == ([], [schedule_id]), field
        setattr(plain.get_one(Schedule, schedule_id), field, None)
        plain.commit()
        assert store.schedules_to_converge(plain, NOW) == ([], []), field


def test_skipped_ahead_returns_the_skipped_fire_times_after_an_instant(
    store: Store, plain: Session
) -> None:
    rows = [("a", NEXT), ("a", LATER), ("b", LATER)]
    store.record_missed(plain, rows, node_id="op", now=NOW, status=DispatchStatus.SKIPPED)
    store.record_missed(plain, [("a", NOW)], node_id="op", now=NOW, status=DispatchStatus.PAUSED)
    plain.commit()
    assert store.skipped_ahead(plain, ["a", "c"], NOW) == {"a": {NEXT, LATER}}
    assert store.skipped_ahead(plain, ["a", "b"], NEXT) == {"a": {LATER}, "b": {LATER}}
    assert store.skipped_ahead(plain, [], NOW) == {}
    assert not store.occurrence_claimed(plain, "a", NEXT)  # a skip is not a claim
    assert not store.occurrence_claimed(plain, "a", NOW)


def test_a_setting_is_written_then_replaced_and_read_back(store: Store, plain: Session) -> None:
    assert store.read_setting(plain, "contract-written") is None
    store.write_setting(plain, "contract-written", "one", NOW)
    store.write_setting(plain, "contract-written", "two", NEXT)
    plain.commit()
    assert store.read_setting(plain, "contract-written") == "two"


def test_schedule_zones_are_the_distinct_zones_of_enabled_schedules(
    store: Store, plain: Session
) -> None:
    _add_schedules(plain, 2, timezone="Europe/Prague")
    _add_schedules(plain, 1, timezone="UTC")
    _add_schedules(plain, 1, timezone="Asia/Tokyo", enabled=False)
    assert store.schedule_zones(plain) == ["Europe/Prague", "UTC"]


def test_future_runs_in_zones_are_the_live_future_executions_of_those_zones(
    store: Store, plain: Session
) -> None:
    prague = _add_schedules(plain, 2, timezone="Europe/Prague")
    (utc,) = _add_schedules(plain, 1, timezone="UTC")
    _plan_and_insert(store, plain, [*prague, utc])
    (past,) = _add_schedules(plain, 1, timezone="Europe/Prague")
    _plan_and_insert(store, plain, [past], run_at=NOW - timedelta(minutes=1))
    rows = store.future_runs_in_zones(plain, ["Europe/Prague", "Nowhere/Else"], NOW)
    assert [(row.id, row.run_at, row.timezone) for row in rows] == [
        (schedule_id, NEXT, "Europe/Prague") for schedule_id in prague
    ]
    assert {row.dst_gap for row in rows} == {"shift"}
    assert store.future_runs_in_zones(plain, [], NOW) == []
