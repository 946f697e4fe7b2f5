"""The contract of :class:`~postburner_py.store.contract.reports.ReportStore`, run against the
store of every database (the ``database_url`` fixture: PostgreSQL and SQLite).

Each test builds its rows with the ORM and then asks the store directly, through
``pb.store``: what status, the listings and schedule-file sync read and change.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import inspect

from postburner_py import Postburner
from postburner_py.store import Store
from postburner_py.store.dispatch_log import DispatchRecord
from postburner_py.store.history import HistoryRecord
from postburner_py.store.metadata import target_metadata
from postburner_py.store.models import Schedule, ScheduleExecution
from tests.factories import make_one_off, make_schedule

MakePostburner = Callable[..., Postburner]
pytestmark = pytest.mark.usefixtures("database_url")
NOW = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)


@pytest.fixture
def pb(make_postburner: MakePostburner) -> Postburner:
    return make_postburner(clock=lambda: NOW)


def _schedules(pb: Postburner, *names: str) -> dict[str, int]:
    """Disabled schedules (nothing queued for them on their own), by name -> id."""
    with pb.session() as session:
        rows = [make_schedule(name=name, enabled=False) for name in names]
        session.add_all(rows)
        session.commit()
        return {row.name: row.id for row in rows}


def _execution(
    pb: Postburner, schedule_id: int | None, run_at: datetime, status: str = "scheduled"
) -> int:
    with pb.session() as session:
        row = ScheduleExecution(
            schedule_id=schedule_id, run_at=run_at, status=status, cached_schedule={}
        )
        session.add(row)
        session.commit()
        return row.id


def _dispatch(pb: Postburner, key: str, fire_time: datetime, status: str = "completed") -> None:
    with pb.session() as session:
        session.add(
            DispatchRecord(
                key=key,
                fire_time=fire_time,
                dispatched_at=fire_time,
                node_id="node-1",
                status=status,
                attempt=1,
                updated_at=fire_time,
            )
        )
        session.commit()


def _run(pb: Postburner, name: str | None, run_at: datetime, attempt: int = 1) -> int:
    with pb.session() as session:
        row = HistoryRecord(
            job_id=f"{name}-{run_at.isoformat()}-{attempt}",
            task_identifier="tests.jobs:record_run",
            schedule_name=name,
            status="completed",
            worker_id="worker-1",
            attempt=attempt,
            run_at=run_at,
            started_at=run_at + timedelta(seconds=attempt),
            expires_at=run_at + timedelta(days=30),
        )
        session.add(row)
        session.commit()
        return row.id


def test_the_store_is_decided_once_per_engine(pb: Postburner) -> None:
    from postburner_py.store import store_for

    assert isinstance(pb.store, Store)
    assert store_for(pb.engine) is pb.store
    with pb.session() as session:
        assert store_for(session) is pb.store
    assert pb.dialect == pb.store.capabilities.family == pb.engine.dialect.name


def test_ping_answers_on_a_reachable_database(pb: Postburner) -> None:
    with pb.engine.connect() as connection:
        assert pb.store.ping(connection) is None


def test_is_migrated_until_the_tables_are_gone(pb: Postburner) -> None:
    with pb.engine.connect() as connection:
        assert pb.store.is_migrated(connection)
        connection.rollback()
        with connection.begin() as transaction:
            target_metadata.drop_all(connection)
            assert not pb.store.is_migrated(connection)
            transaction.rollback()  # transactional DDL: the tables come back
        assert pb.store.is_migrated(connection)


def test_schedules_with_next_run_gives_the_earliest_live_run_strictly_after_now(
    pb: Postburner,
) -> None:
    ids = _schedules(pb, "c-exactly-now", "a-several", "b-nothing")
    a = ids["a-several"]
    _execution(pb, a, NOW - timedelta(hours=1))  # live but past
    _execution(pb, a, NOW + timedelta(minutes=5), status="skipped")  # earlier, not live
    _execution(pb, a, NOW + timedelta(minutes=10), status="superseded")
    _execution(pb, a, NOW + timedelta(hours=2), status="pending")
    _execution(pb, a, NOW + timedelta(hours=1))
    _execution(pb, ids["c-exactly-now"], NOW)
    with pb.session() as session:
        rows = pb.store.schedules_with_next_run(session, NOW)
    assert [(schedule.name, next_run) for schedule, next_run in rows] == [
        ("a-several", NOW + timedelta(hours=1)),
        ("b-nothing", None),
        ("c-exactly-now", None),
    ]


def test_schedules_with_next_run_lists_unloadable_rows_once_with_their_instants_deferred(
    pb: Postburner,
) -> None:
    ids = _schedules(pb, "b-broken", "a-fine", "c-fine")
    _execution(pb, ids["b-broken"], NOW + timedelta(minutes=1))
    with pb.session() as session:
        rows = pb.store.schedules_with_next_run(session, NOW, unloadable={ids["b-broken"]})
        names = [schedule.name for schedule, _ in rows]
        broken = dict((schedule.name, (schedule, run)) for schedule, run in rows)["b-broken"]
        unloaded = inspect(broken[0]).unloaded
    assert names == ["a-fine", "b-broken", "c-fine"]
    assert broken[1] == NOW + timedelta(minutes=1)
    assert {"anchor", "resumed_at"} <= unloaded


def test_queued_run_ats_has_the_earliest_live_future_run_of_each_schedule_only(
    pb: Postburner,
) -> None:
    ids = _schedules(pb, "several", "only-past", "only-skipped", "none")
    _execution(pb, ids["several"], NOW + timedelta(hours=3), status="pending")
    _execution(pb, ids["several"], NOW + timedelta(hours=2))
    _execution(pb, ids["several"], NOW + timedelta(minutes=1), status="skipped")
    _execution(pb, ids["only-past"], NOW - timedelta(minutes=1))
    _execution(pb, ids["only-skipped"], NOW + timedelta(minutes=1), status="skipped")
    _execution(pb, None, NOW + timedelta(minutes=1), status="pending")  # a one-off row
    with pb.session() as session:
        queued = pb.store.queued_run_ats(session, NOW)
    assert queued == {ids["several"]: NOW + timedelta(hours=2)}


def test_last_dispatches_gives_each_keys_newest_fire_time(pb: Postburner) -> None:
    _dispatch(pb, "report", NOW - timedelta(minutes=2), status="failed")
    _dispatch(pb, "report", NOW - timedelta(minutes=1), status="dispatched")
    _dispatch(pb, "report", NOW - timedelta(minutes=3))
    _dispatch(pb, "other", NOW - timedelta(hours=1), status="missed")
    with pb.session() as session:
        last = pb.store.last_dispatches(session)
    assert {key: (row.fire_time, row.status) for key, row in last.items()} == {
        "report": (NOW - timedelta(minutes=1), "dispatched"),
        "other": (NOW - timedelta(hours=1), "missed"),
    }


def test_last_dispatches_is_empty_without_a_dispatch_row(pb: Postburner) -> None:
    _schedules(pb, "never-ran")
    with pb.session() as session:
        assert pb.store.last_dispatches(session) == {}


def test_last_runs_pairs_the_newest_attempt_with_the_last_occurrence(pb: Postburner) -> None:
    earlier, later = NOW - timedelta(minutes=2), NOW - timedelta(minutes=1)
    _dispatch(pb, "report", earlier)
    _dispatch(pb, "report", later)
    _run(pb, "report", earlier)
    first_of_later = _run(pb, "report", later)
    second_of_later = _run(pb, "report", later, attempt=2)
    _run(pb, "report", earlier, attempt=2)  # a late retry of the earlier occurrence
    with pb.session() as session:
        runs = pb.store.last_runs(session)
    assert first_of_later < second_of_later
    assert runs["report"].id == second_of_later


def test_last_runs_falls_back_to_the_newest_history_row_without_a_dispatch_row(
    pb: Postburner,
) -> None:
    _run(pb, "undispatched", NOW - timedelta(minutes=5))
    newest = _run(pb, "undispatched", NOW - timedelta(minutes=9))
    _run(pb, None, NOW - timedelta(minutes=1))  # a one-off job: never reported by name
    with pb.session() as session:
        runs = pb.store.last_runs(session)
    assert {name: row.id for name, row in runs.items()} == {"undispatched": newest}


def test_schedule_by_name_finds_one_schedule_or_none(pb: Postburner) -> None:
    ids = _schedules(pb, "wanted", "other")
    with pb.session() as session:
        found = pb.store.schedule_by_name(session, "wanted")
        assert found is not None and found.id == ids["wanted"]
        assert pb.store.schedule_by_name(session, "missing") is None


def test_schedule_by_name_can_leave_the_instants_unloaded(pb: Postburner) -> None:
    _schedules(pb, "lazy")
    with pb.session() as session:
        found = pb.store.schedule_by_name(session, "lazy", defer_instants=True)
        assert found is not None
        assert {"anchor", "resumed_at"} <= inspect(found).unloaded
        eager = pb.store.schedule_by_name(session, "lazy")
        assert eager is found  # one identity in the session


def test_live_execution_at_finds_only_a_live_occurrence_of_that_schedule(pb: Postburner) -> None:
    ids = _schedules(pb, "mine", "theirs")
    when = NOW + timedelta(hours=1)
    live = _execution(pb, ids["mine"], when)
    _execution(pb, ids["mine"], when + timedelta(hours=1), status="skipped")
    _execution(pb, ids["theirs"], when + timedelta(hours=2))
    with pb.session() as session:
        found = pb.store.live_execution_at(session, "mine", when)
        assert found is not None and found.id == live
        assert pb.store.live_execution_at(session, "mine", when + timedelta(hours=1)) is None
        assert pb.store.live_execution_at(session, "mine", when + timedelta(hours=2)) is None
        assert pb.store.live_execution_at(session, "missing", when) is None


def test_disable_schedule_writes_in_the_callers_transaction_bypassing_the_session(
    pb: Postburner,
) -> None:
    with pb.session() as session:
        schedule = make_schedule(name="to-disable", enabled=True, cron="0 0 1 1 *")
        session.add(schedule)
        session.commit()
        schedule_id = schedule.id
    with pb.session() as session:
        loaded = session.get(Schedule, schedule_id)
        assert loaded is not None and loaded.enabled
        pb.store.disable_schedule(session, schedule_id)
        assert loaded.enabled  # the identity map is the caller's to refresh
        with pb.session() as other:
            assert _enabled(other, schedule_id)  # not committed yet
        session.commit()
    with pb.session() as session:
        assert not _enabled(session, schedule_id)


def test_disable_schedule_is_undone_by_the_callers_rollback(pb: Postburner) -> None:
    ids = _schedules(pb, "kept")
    with pb.session() as session:
        session.execute(_enable(ids["kept"]))
        session.commit()
    with pb.session() as session:
        pb.store.disable_schedule(session, ids["kept"])
        session.rollback()
    with pb.session() as session:
        assert _enabled(session, ids["kept"])


def test_all_schedules_returns_every_schedule(pb: Postburner) -> None:
    ids = _schedules(pb, "one", "two", "three")
    with pb.session() as session:
        rows = pb.store.all_schedules(session)
        assert all(isinstance(row, Schedule) for row in rows)
        assert {row.name: row.id for row in rows} == ids


def _enabled(session: Any, schedule_id: int) -> bool:
    from sqlalchemy import select

    return bool(session.scalar(select(Schedule.enabled).where(Schedule.id == schedule_id)))


def _enable(schedule_id: int) -> Any:
    from sqlalchemy import update

    return update(Schedule).where(Schedule.id == schedule_id).values(enabled=True)


def _one_off(pb: Postburner, job_id: str, run_at: datetime, queue: str) -> None:
    with pb.session() as session:
        session.add(make_one_off(job_id=job_id, run_at=run_at, queue=queue))
        session.commit()


def test_due_by_queue_counts_due_occurrences_no_attempt_claimed(pb: Postburner) -> None:
    store: Store = pb.store
    ids = _schedules(pb, "a", "b")
    with pb.session() as session:
        session.get_one(Schedule, ids["b"]).queue = "reports"
        session.commit()
    due = NOW - timedelta(minutes=1)
    _execution(pb, ids["a"], due)
    _execution(pb, ids["a"], due - timedelta(minutes=1))
    _dispatch(pb, "a", due - timedelta(minutes=1), "dispatched")  # claimed: running
    _execution(pb, ids["a"], NOW + timedelta(minutes=1))  # not due yet
    _execution(pb, ids["b"], due, status="skipped")  # not live
    _execution(pb, ids["b"], due)
    _one_off(pb, "later", NOW + timedelta(hours=1), "reports")
    _one_off(pb, "now", NOW, "reports")
    with pb.session() as session:
        assert store.due_by_queue(session, NOW) == {"default": 1, "reports": 2}


def test_dispatch_counts_since_counts_each_stored_status(pb: Postburner) -> None:
    store: Store = pb.store
    _dispatch(pb, "a", NOW - timedelta(minutes=10), "completed")
    _dispatch(pb, "a", NOW - timedelta(minutes=20), "completed")
    _dispatch(pb, "b", NOW - timedelta(minutes=30), "missed")
    _dispatch(pb, "b", NOW - timedelta(hours=2), "failed")  # too old
    with pb.session() as session:
        counts = store.dispatch_counts_since(session, NOW - timedelta(hours=1))
    assert counts == {"completed": 2, "missed": 1}


def test_live_counts_has_the_live_rows_of_each_kind_per_queue(pb: Postburner) -> None:
    from postburner_py.store.models import DelayedJob

    with pb.session() as session:
        reports = make_schedule(name="reports", enabled=False, queue="reports")
        quick = make_schedule(name="quick", enabled=False)
        session.add_all([reports, quick])
        session.commit()
        ids = {"reports": reports.id, "quick": quick.id}
    _execution(pb, ids["reports"], NOW + timedelta(hours=1))
    _execution(pb, ids["reports"], NOW - timedelta(hours=1), status="pending")  # due: live
    _execution(pb, ids["reports"], NOW + timedelta(hours=2), status="skipped")
    _execution(pb, ids["quick"], NOW + timedelta(hours=1), status="superseded")
    _execution(pb, None, NOW + timedelta(hours=1))  # no schedule: no queue to count it in
    with pb.session() as session:
        for job_id, status in (("a", "pending"), ("b", "pending"), ("c", "completed")):
            session.add(
                DelayedJob(
                    job_id=job_id,
                    job_class="tests.jobs:record_run",
                    args=[],
                    kwargs={},
                    queue="mail",
                    priority=0,
                    ttr=60,
                    max_attempts=1,
                    run_at=NOW,
                    status=status,
                )
            )
        session.commit()
        counts = pb.store.live_counts(session)
    assert counts == {("execution", "reports"): 2, ("delayed", "mail"): 2}
