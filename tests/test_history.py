"""Job history: database rows per attempt and a ring buffer of recent terminal entries."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import sessionmaker

from postburner_py.errors import ConfigurationError
from postburner_py.store.history import HistoryEntry, HistoryStatus, HistoryStore
from tests.factories import ManualClock, at

T0 = at("2025-03-01 10:00")
StoreFactory = Callable[..., HistoryStore]


def later(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def make_store(database_url: str, clock: ManualClock) -> Iterator[StoreFactory]:
    """``make_store(**options)``: a HistoryStore on the test database (both backends)."""
    engine: Engine = create_engine(database_url)

    def make(**options: Any) -> HistoryStore:
        options.setdefault("clock", clock)
        return HistoryStore(sessionmaker(engine), **options)

    yield make
    engine.dispose()


@pytest.fixture
def store(make_store: StoreFactory) -> HistoryStore:
    return make_store()


@pytest.fixture
def memory_store(clock: ManualClock) -> HistoryStore:
    """A store without a database: the ring buffer only."""
    return HistoryStore(None, buffer_size=3, clock=clock)


def start(store: HistoryStore, job_id: str = "101", **overrides: Any) -> HistoryEntry:
    """``record_start`` of a scheduled run due at T0 that started 1.5 s late."""
    arguments: dict[str, Any] = {
        "job_id": job_id,
        "task_identifier": "app.jobs.Report",
        "worker_id": "worker-1",
        "correlation_id": f"occurrence-{job_id}",
        "run_at": T0,
        "schedule_name": "daily-report",
        "started_at": later(1.5),
    }
    arguments.update(overrides)
    return store.record_start(**arguments)


# -- recording ---------------------------------------------------------------------------


def test_record_start_stores_a_started_row_with_its_lateness(store: HistoryStore) -> None:
    entry = start(store)

    assert entry.id is not None
    assert entry.status is HistoryStatus.STARTED
    assert entry.queue_time_ms == pytest.approx(1500.0)
    assert entry.expires_at == later(1.5) + timedelta(days=30)
    assert store.get_by_job_id("101") == [entry]
    assert store.recent() == []


def test_record_start_without_run_at_has_no_lateness_and_uses_the_clock(
    store: HistoryStore,
) -> None:
    entry = start(store, run_at=None, started_at=None)

    assert (entry.started_at, entry.run_at, entry.queue_time_ms) == (T0, None, None)


def test_retention_can_be_set_per_store_and_per_record(make_store: StoreFactory) -> None:
    store = make_store(retention=timedelta(days=7))

    default = start(store, "1")
    overridden = start(store, "2", retention=timedelta(hours=1))

    assert default.expires_at == later(1.5) + timedelta(days=7)
    assert overridden.expires_at == later(1.5) + timedelta(hours=1)


def test_record_completion_updates_the_row_and_pushes_it_to_the_buffer(
    store: HistoryStore,
) -> None:
    started = start(store)

    done = store.record_completion(
        started, worker_id="worker-1", execution_time_ms=250.0, finished_at=later(2)
    )

    assert (done.id, done.status) == (started.id, HistoryStatus.COMPLETED)
    assert (done.finished_at, done.execution_time_ms) == (later(2), 250.0)
    assert store.get_by_job_id("101") == [done]
    assert store.recent() == [done]


def test_record_failure_keeps_the_exception_message_and_stack(store: HistoryStore) -> None:
    started = start(store)
    try:
        raise KeyError("customer 7")
    except KeyError as error:
        failed = store.record_failure(
            started, worker_id="worker-1", execution_time_ms=12.0, error=error
        )

    assert failed.status is HistoryStatus.FAILED
    assert failed.error_message == "KeyError: 'customer 7'"
    assert failed.error_stack is not None
    assert "test_record_failure_keeps_the_exception_message_and_stack" in failed.error_stack
    assert store.get_by_job_id("101") == [failed]


def test_record_failure_accepts_a_plain_message(store: HistoryStore) -> None:
    failed = store.record_failure(
        start(store), worker_id="worker-1", execution_time_ms=1.0, error="upstream timed out"
    )

    assert (failed.error_message, failed.error_stack) == ("upstream timed out", None)


def test_record_partial_success_stores_json_results(store: HistoryStore) -> None:
    results = {"sent": 98, "bounced": ["a@example.com", "b@example.com"]}

    partial = store.record_partial_success(
        start(store), worker_id="worker-1", execution_time_ms=40.0, results=results
    )

    assert partial.status is HistoryStatus.PARTIAL_SUCCESS
    assert store.get_by_job_id("101")[0].results == results


def test_results_that_are_not_json_are_refused_and_nothing_changes(store: HistoryStore) -> None:
    started = start(store)

    with pytest.raises(ValueError, match=r"^results: "):
        store.record_partial_success(
            started, worker_id="worker-1", execution_time_ms=1.0, results={"at": T0}
        )

    assert store.get_by_job_id("101") == [started]
    assert store.recent() == []


def test_a_row_gets_only_one_terminal_record(store: HistoryStore) -> None:
    started = start(store)
    store.record_completion(started, worker_id="worker-1", execution_time_ms=1.0)

    with pytest.raises(ValueError, match="already completed"):
        store.record_failure(started, worker_id="worker-1", execution_time_ms=1.0, error="late")
    assert [entry.status for entry in store.recent()] == [HistoryStatus.COMPLETED]


def test_terminal_records_name_the_attempt_by_primary_key(store: HistoryStore) -> None:
    first = start(store, attempt=1)
    second = start(store, attempt=2, started_at=later(90))

    assert second.id is not None
    store.record_failure(second.id, worker_id="worker-2", execution_time_ms=3.0, error="x")
    store.record_completion(first, worker_id="worker-1", execution_time_ms=5.0)

    by_attempt = {entry.attempt: entry.status for entry in store.get_by_job_id("101")}
    assert by_attempt == {1: HistoryStatus.COMPLETED, 2: HistoryStatus.FAILED}


def test_completion_fills_in_a_missing_correlation_id(store: HistoryStore) -> None:
    started = start(store, correlation_id=None)

    store.record_completion(
        started, worker_id="worker-1", execution_time_ms=1.0, correlation_id="occurrence-9"
    )

    assert [entry.id for entry in store.get_by_correlation_id("occurrence-9")] == [started.id]


def test_a_contradicting_correlation_id_is_refused(store: HistoryStore) -> None:
    started = start(store)

    with pytest.raises(ValueError, match=r"^correlation_id: "):
        store.record_completion(
            started, worker_id="worker-1", execution_time_ms=1.0, correlation_id="someone-else"
        )
    assert store.get_by_job_id("101") == [started]


def test_an_unknown_or_unstored_record_is_refused(store: HistoryStore) -> None:
    unstored = HistoryStore(None).record_start(
        job_id="1", task_identifier="app.jobs.Report", worker_id="worker-1"
    )

    with pytest.raises(LookupError):
        store.record_completion(987654, worker_id="worker-1", execution_time_ms=1.0)
    with pytest.raises(ValueError, match=r"^record: .*never stored"):
        store.record_completion(unstored, worker_id="worker-1", execution_time_ms=1.0)
    assert store.recent() == []


# -- reading the database ----------------------------------------------------------------


def test_get_by_job_id_is_newest_first(store: HistoryStore) -> None:
    older = start(store, started_at=later(10))
    newer = start(store, started_at=later(20), attempt=2)
    start(store, "202")

    assert [entry.id for entry in store.get_by_job_id("101")] == [newer.id, older.id]
    assert store.get_by_job_id("missing") == []


def test_get_by_correlation_id_lists_every_attempt_of_an_occurrence(
    store: HistoryStore,
) -> None:
    first = start(store, correlation_id="occ-1", started_at=later(10))
    second = start(store, correlation_id="occ-1", started_at=later(20), attempt=2)
    start(store, correlation_id="occ-2")

    assert [entry.id for entry in store.get_by_correlation_id("occ-1")] == [second.id, first.id]


def test_query_filters_by_window_task_and_status_newest_first(store: HistoryStore) -> None:
    entries = [
        start(store, str(n), started_at=later(60 * n), task_identifier=f"app.jobs.T{n % 2}")
        for n in range(6)
    ]
    store.record_completion(entries[4], worker_id="worker-1", execution_time_ms=1.0)

    def ids(found: list[HistoryEntry]) -> list[str]:
        return [entry.job_id for entry in found]

    assert ids(store.query()) == ["5", "4", "3", "2", "1", "0"]
    assert ids(store.query(from_=later(60), to=later(240))) == ["3", "2", "1"]
    assert ids(store.query(task_identifier="app.jobs.T0")) == ["4", "2", "0"]
    assert ids(store.query(status="completed")) == ["4"]
    assert ids(store.query(status="started", limit=2)) == ["5", "3"]


@pytest.mark.parametrize("status", ["done", "COMPLETED", "partial-success"])
def test_query_refuses_an_unknown_status_naming_status(store: HistoryStore, status: str) -> None:
    with pytest.raises(ValueError, match=r"^status: .*partial_success"):
        store.query(status=status)


def test_expire_deletes_only_rows_past_their_expiry(
    make_store: StoreFactory, clock: ManualClock
) -> None:
    store = make_store()
    short = start(store, "1", retention=timedelta(hours=1))
    kept = start(store, "2")
    clock.advance(hours=2)

    assert store.expire() == 1
    assert store.query() == [kept]
    assert store.expire(now=short.expires_at) == 0


def test_observe_fills_the_buffer_without_writing_the_database(store: HistoryStore) -> None:
    entry = start(HistoryStore(None))

    store.observe(entry)

    assert store.recent() == [entry]
    assert store.get_by_job_id(entry.job_id) == []


# -- without a database ------------------------------------------------------------------


def test_a_store_without_database_completes_entries_in_the_buffer(
    memory_store: HistoryStore,
) -> None:
    started = start(memory_store)

    done = memory_store.record_completion(started, worker_id="worker-1", execution_time_ms=2.0)

    assert started.id is None
    assert (done.status, done.finished_at, done.job_id) == (HistoryStatus.COMPLETED, T0, "101")
    assert memory_store.recent() == [done]
    assert memory_store.expire() == 0


def test_a_store_without_database_refuses_database_reads(memory_store: HistoryStore) -> None:
    with pytest.raises(ConfigurationError, match="no database"):
        memory_store.get_by_job_id("101")
    with pytest.raises(ConfigurationError, match="no database"):
        memory_store.query()
    with pytest.raises(ConfigurationError, match=r"^record: "):
        memory_store.record_completion(5, worker_id="worker-1", execution_time_ms=1.0)


def test_recent_returns_the_last_entries_in_insertion_order(memory_store: HistoryStore) -> None:
    entries = [start(memory_store, str(n)) for n in range(5)]
    for entry in entries:
        memory_store.observe(entry)

    assert memory_store.recent() == entries[2:]
    assert memory_store.recent(2) == entries[3:]
    assert memory_store.recent(10) == entries[2:]
    assert memory_store.recent(0) == []


def test_the_buffer_stays_bounded_under_concurrent_writers(clock: ManualClock) -> None:
    store = HistoryStore(None, buffer_size=100, clock=clock)
    entry = start(store)
    barrier = threading.Barrier(8)

    def observe_many() -> None:
        barrier.wait(timeout=10)
        for _ in range(500):
            store.observe(entry)

    threads = [threading.Thread(target=observe_many) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(store.recent()) == 100


# -- bad input ---------------------------------------------------------------------------


def test_naive_datetimes_are_refused(memory_store: HistoryStore) -> None:
    naive = datetime(2025, 3, 1, 10)
    with pytest.raises(ValueError, match=r"^run_at: naive"):
        start(memory_store, run_at=naive)
    with pytest.raises(ValueError, match=r"^started_at: naive"):
        start(memory_store, started_at=naive)
    with pytest.raises(ValueError, match=r"^finished_at: naive"):
        memory_store.record_completion(
            start(memory_store), worker_id="w", execution_time_ms=1.0, finished_at=naive
        )


def test_bad_numbers_are_refused(memory_store: HistoryStore) -> None:
    with pytest.raises(ValueError, match=r"^attempt: "):
        start(memory_store, attempt=0)
    with pytest.raises(ValueError, match=r"^execution_time_ms: "):
        memory_store.record_completion(start(memory_store), worker_id="w", execution_time_ms=-1)
    with pytest.raises(ValueError, match=r"^n: "):
        memory_store.recent(-1)


@pytest.mark.parametrize(
    ("options", "field"),
    [({"buffer_size": -1}, "buffer_size"), ({"retention": timedelta(0)}, "retention")],
)
def test_bad_store_settings_are_refused(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"^{field}: "):
        HistoryStore(None, **options)
