"""The dispatch log: one contract suite run against the memory, SQLite and PostgreSQL backends."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import sessionmaker

from postburner_py.keys import idempotency_key
from postburner_py.store.dispatch_log import (
    Claim,
    ClaimOutcome,
    DispatchRegistry,
    DispatchStatus,
    MemoryDispatchRegistry,
    SqlDispatchRegistry,
    insert_missed,
)
from tests.factories import ManualClock, at

T0 = at("2025-03-01 10:00")
LEASE = 60.0
KEY = "reports:daily"
BACKENDS = ["memory", "sqlite", "postgresql"]


@pytest.fixture
def make_engine() -> Iterator[Callable[[str], Engine]]:
    """``make_engine(url)``; every engine is disposed at teardown, before its database goes."""
    engines: list[Engine] = []

    def make(url: str) -> Engine:
        engine = create_engine(url)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.dispose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture(params=BACKENDS)
def registry(request: pytest.FixtureRequest, clock: ManualClock) -> Iterator[DispatchRegistry]:
    """A registry acting as ``node-a`` on the backend under test; ``for_node`` adds nodes."""
    if request.param == "memory":
        yield MemoryDispatchRegistry(node_id="node-a", clock=clock)
        return
    fixture = "postgres_url" if request.param == "postgresql" else "sqlite_url"
    engine = create_engine(str(request.getfixturevalue(fixture)))
    yield SqlDispatchRegistry(sessionmaker(engine), node_id="node-a", clock=clock)
    engine.dispose()


def claim(
    registry: DispatchRegistry,
    fire_time: datetime = T0,
    *,
    now: datetime | None = None,
    max_attempts: int = 3,
    lease_seconds: float = LEASE,
) -> Claim:
    """``registry.claim`` of ``KEY`` with a 60 s lease and 3 attempts, at ``now`` (default T0)."""
    return registry.claim(
        KEY,
        fire_time,
        lease_seconds=lease_seconds,
        max_attempts=max_attempts,
        now=T0 if now is None else now,
    )


def later(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# -- the gate ----------------------------------------------------------------------------


def test_first_claim_acquires_attempt_one_with_a_lease(registry: DispatchRegistry) -> None:
    result = claim(registry)

    assert (result.outcome, result.attempt, result.should_run) == (ClaimOutcome.ACQUIRED, 1, True)
    stored = registry.find_dispatch(KEY, T0)
    assert stored == result.entry
    assert stored is not None
    assert stored.status is DispatchStatus.DISPATCHED
    assert (stored.node_id, stored.dispatched_at) == ("node-a", T0)
    assert stored.lease_expires_at == later(LEASE)


def test_claim_while_the_lease_is_live_is_busy_and_must_not_run(
    registry: DispatchRegistry,
) -> None:
    claim(registry)

    result = claim(registry.for_node("node-b"), now=later(LEASE - 1))

    assert (result.outcome, result.should_run) == (ClaimOutcome.BUSY, False)
    assert (result.entry.node_id, result.attempt) == ("node-a", 1)


@pytest.mark.parametrize("finish", ["complete", "fail"])
def test_claim_of_a_finished_occurrence_is_refused_even_after_the_lease(
    registry: DispatchRegistry, finish: str
) -> None:
    claim(registry)
    assert getattr(registry, finish)(KEY, T0, attempt=1, now=later(5)) is True

    result = claim(registry, now=later(10 * LEASE))

    assert (result.outcome, result.should_run) == (ClaimOutcome.FINISHED, False)
    expected = DispatchStatus.COMPLETED if finish == "complete" else DispatchStatus.FAILED
    assert result.entry.status is expected
    assert result.entry.lease_expires_at is None


def test_expired_lease_is_taken_over_by_the_next_attempt(registry: DispatchRegistry) -> None:
    claim(registry)

    # The lease ends at T0 + 60 s: at that very instant it no longer protects the holder.
    result = claim(registry.for_node("node-b"), now=later(LEASE))

    assert (result.outcome, result.attempt, result.should_run) == (
        ClaimOutcome.TAKEN_OVER,
        2,
        True,
    )
    stored = registry.find_dispatch(KEY, T0)
    assert stored == result.entry
    assert stored is not None
    assert (stored.node_id, stored.dispatched_at) == ("node-b", later(LEASE))
    assert stored.lease_expires_at == later(2 * LEASE)


def test_expired_lease_with_every_attempt_used_is_exhausted_and_marked_failed(
    registry: DispatchRegistry,
) -> None:
    claim(registry, max_attempts=2)
    claim(registry, now=later(LEASE), max_attempts=2)

    result = claim(registry, now=later(3 * LEASE), max_attempts=2)

    assert (result.outcome, result.attempt, result.should_run) == (
        ClaimOutcome.EXHAUSTED,
        2,
        False,
    )
    assert result.entry.status is DispatchStatus.FAILED
    assert claim(registry, now=later(4 * LEASE)).outcome is ClaimOutcome.FINISHED


def test_superseded_attempt_can_no_longer_renew_complete_or_fail(
    registry: DispatchRegistry,
) -> None:
    claim(registry)
    claim(registry.for_node("node-b"), now=later(LEASE))

    assert registry.renew(KEY, T0, attempt=1, lease_seconds=LEASE, now=later(61)) is False
    assert registry.complete(KEY, T0, attempt=1, now=later(62)) is False
    assert registry.fail(KEY, T0, attempt=1, now=later(63)) is False
    stored = registry.find_dispatch(KEY, T0)
    assert stored is not None
    assert (stored.status, stored.attempt) == (DispatchStatus.DISPATCHED, 2)


def test_renewing_the_lease_keeps_other_deliveries_out(registry: DispatchRegistry) -> None:
    claim(registry)

    assert registry.renew(KEY, T0, attempt=1, lease_seconds=LEASE, now=later(50)) is True

    assert claim(registry, now=later(LEASE + 10)).outcome is ClaimOutcome.BUSY
    assert claim(registry, now=later(50 + LEASE)).outcome is ClaimOutcome.TAKEN_OVER


def test_release_for_retry_lets_the_next_delivery_take_over_at_once(
    registry: DispatchRegistry,
) -> None:
    claim(registry)

    assert registry.release_for_retry(KEY, T0, attempt=1, now=later(5)) is True

    result = claim(registry, now=later(5))
    assert (result.outcome, result.attempt) == (ClaimOutcome.TAKEN_OVER, 2)


def test_a_lease_that_expired_is_renewed_but_one_released_for_a_retry_is_not(
    registry: DispatchRegistry,
) -> None:
    claim(registry)
    # Expired (its holder could not reach the database): still its own, renewed.
    assert registry.renew(KEY, T0, attempt=1, lease_seconds=LEASE, now=later(LEASE + 5)) is True
    assert registry.release_for_retry(KEY, T0, attempt=1, now=later(LEASE + 6)) is True

    # A renewal racing its own attempt's release must not hold the retry off.
    assert registry.renew(KEY, T0, attempt=1, lease_seconds=LEASE, now=later(LEASE + 7)) is False
    result = claim(registry, now=later(LEASE + 8))
    assert (result.outcome, result.attempt) == (ClaimOutcome.TAKEN_OVER, 2)


def test_release_for_retry_of_the_last_attempt_marks_the_row_failed(
    registry: DispatchRegistry,
) -> None:
    claim(registry, max_attempts=1)

    released = registry.release_for_retry(KEY, T0, attempt=1, now=later(5), max_attempts=1)

    assert released is False
    stored = registry.find_dispatch(KEY, T0)
    assert stored is not None
    assert stored.status is DispatchStatus.FAILED


def test_released_last_attempt_ends_exhausted_at_the_next_claim(
    registry: DispatchRegistry,
) -> None:
    claim(registry, max_attempts=1)
    assert registry.release_for_retry(KEY, T0, attempt=1, now=later(5)) is True

    result = claim(registry, now=later(5), max_attempts=1)

    assert result.outcome is ClaimOutcome.EXHAUSTED
    assert result.entry.status is DispatchStatus.FAILED


def test_occurrences_with_different_fire_times_are_claimed_independently(
    registry: DispatchRegistry,
) -> None:
    assert claim(registry, T0).outcome is ClaimOutcome.ACQUIRED
    assert claim(registry, later(3600)).outcome is ClaimOutcome.ACQUIRED
    assert registry.claim("other", T0, lease_seconds=LEASE, max_attempts=3, now=T0).should_run


def test_the_same_instant_in_another_zone_is_the_same_occurrence(
    registry: DispatchRegistry,
) -> None:
    claim(registry)
    tokyo = T0.astimezone(timezone(timedelta(hours=9)))

    assert registry.claim(KEY, tokyo, lease_seconds=LEASE, max_attempts=3, now=T0).outcome is (
        ClaimOutcome.BUSY
    )
    assert registry.dispatched(KEY, tokyo) is True


def test_a_sql_claim_is_committed_before_it_returns(
    postgres_url: str, make_engine: Callable[[str], Engine]
) -> None:
    registry = SqlDispatchRegistry(sessionmaker(make_engine(postgres_url)), node_id="node-a")
    claim(registry)

    observer = SqlDispatchRegistry(sessionmaker(make_engine(postgres_url)), node_id="observer")
    stored = observer.find_dispatch(KEY, T0)
    assert stored is not None
    assert stored.node_id == "node-a"


# -- concurrency -------------------------------------------------------------------------


def run_together(count: int, action: Callable[[], Claim]) -> Counter[ClaimOutcome]:
    """Run ``action`` in ``count`` threads released at the same moment; count the outcomes."""
    barrier = threading.Barrier(count)
    outcomes: list[ClaimOutcome] = []
    errors: list[BaseException] = []

    def work() -> None:
        barrier.wait(timeout=10)
        try:
            outcomes.append(action().outcome)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    return Counter(outcomes)


def test_concurrent_deliveries_acquire_an_occurrence_exactly_once(
    registry: DispatchRegistry,
) -> None:
    outcomes = run_together(8, lambda: claim(registry))

    assert outcomes == Counter({ClaimOutcome.ACQUIRED: 1, ClaimOutcome.BUSY: 7})


def test_concurrent_take_overs_of_an_expired_lease_have_one_winner(
    registry: DispatchRegistry,
) -> None:
    claim(registry)

    outcomes = run_together(4, lambda: claim(registry, now=later(2 * LEASE)))

    assert outcomes == Counter({ClaimOutcome.TAKEN_OVER: 1, ClaimOutcome.BUSY: 3})
    stored = registry.find_dispatch(KEY, T0)
    assert stored is not None
    assert stored.attempt == 2


# -- missed occurrences ------------------------------------------------------------------


def test_record_missed_adds_missed_rows_and_skips_known_occurrences(
    registry: DispatchRegistry,
) -> None:
    claim(registry, T0)
    fire_times = [T0, later(3600), later(7200), later(7200)]

    added = registry.record_missed(KEY, fire_times, now=later(9000))

    assert added == 2
    assert [entry.status for entry in registry.find_by_key(KEY)] == [
        DispatchStatus.MISSED,
        DispatchStatus.MISSED,
        DispatchStatus.DISPATCHED,
    ]
    missed = registry.find_dispatch(KEY, later(3600))
    assert missed is not None
    assert (missed.attempt, missed.lease_expires_at) == (0, None)
    assert registry.dispatched(KEY, later(3600)) is False
    assert claim(registry, later(3600), now=later(9000)).outcome is ClaimOutcome.FINISHED


def test_record_missed_of_nothing_adds_nothing(registry: DispatchRegistry) -> None:
    assert registry.record_missed(KEY, [], now=T0) == 0
    assert registry.find_by_key(KEY) == []


def test_record_missed_handles_more_rows_than_one_statement_carries(
    registry: DispatchRegistry,
) -> None:
    fire_times = [later(60 * minute) for minute in range(2500)]

    assert registry.record_missed(KEY, fire_times, now=later(10**6)) == 2500
    assert len(registry.find_by_status("missed", limit=5000)) == 2500


def test_insert_missed_joins_the_callers_transaction(
    database_url: str, make_engine: Callable[[str], Engine]
) -> None:
    sessions = sessionmaker(make_engine(database_url))
    registry = SqlDispatchRegistry(sessions, node_id="node-a")

    with sessions() as session, session.begin():
        assert insert_missed(session, KEY, [T0, later(60)], node_id="reconcile", now=T0) == 2
        session.rollback()
    assert registry.find_by_key(KEY) == []

    with sessions() as session, session.begin():
        insert_missed(session, KEY, [T0], node_id="reconcile", now=T0)
    stored = registry.find_dispatch(KEY, T0)
    assert stored is not None
    assert (stored.status, stored.node_id) == (DispatchStatus.MISSED, "reconcile")


# -- queries -----------------------------------------------------------------------------


def test_find_by_key_is_newest_first_and_filters_status_window_and_limit(
    registry: DispatchRegistry,
) -> None:
    for hour in range(4):
        claim(registry, later(3600 * hour), now=later(3600 * hour))
    registry.complete(KEY, later(3600), attempt=1, now=later(3700))
    registry.claim("other", T0, lease_seconds=LEASE, max_attempts=3, now=T0)

    fire_times = [entry.fire_time for entry in registry.find_by_key(KEY)]
    assert fire_times == [later(3600 * hour) for hour in (3, 2, 1, 0)]
    completed = registry.find_by_key(KEY, status="completed")
    assert [entry.fire_time for entry in completed] == [later(3600)]
    window = registry.find_by_key(KEY, since=later(3600), until=later(3 * 3600))
    assert [entry.fire_time for entry in window] == [later(7200), later(3600)]
    assert [entry.fire_time for entry in registry.find_by_key(KEY, limit=1)] == [later(10800)]


def test_find_by_node_lists_the_node_of_the_latest_attempt(registry: DispatchRegistry) -> None:
    claim(registry, T0)
    claim(registry, later(3600), now=later(3600))
    claim(registry.for_node("node-b"), T0, now=later(LEASE))

    assert [entry.fire_time for entry in registry.find_by_node("node-a")] == [later(3600)]
    assert [entry.fire_time for entry in registry.find_by_node("node-b")] == [T0]
    assert registry.find_by_node("node-a", status="completed") == []


def test_find_by_status_lists_rows_of_every_key(registry: DispatchRegistry) -> None:
    claim(registry, T0)
    registry.claim("other", later(60), lease_seconds=LEASE, max_attempts=3, now=T0)
    registry.complete(KEY, T0, attempt=1, now=later(1))

    assert [entry.key for entry in registry.find_by_status("dispatched")] == ["other"]
    assert [entry.key for entry in registry.find_by_status("completed")] == [KEY]


@pytest.mark.parametrize("status", ["running", "DISPATCHED", ""])
def test_an_unknown_status_is_refused_naming_status(
    registry: DispatchRegistry, status: str
) -> None:
    with pytest.raises(ValueError, match=r"^status: "):
        registry.find_by_status(status)
    with pytest.raises(ValueError, match=r"^status: "):
        registry.find_by_key(KEY, status=status)


def test_find_dispatch_of_an_unknown_occurrence_is_none(registry: DispatchRegistry) -> None:
    assert registry.find_dispatch(KEY, T0) is None
    assert registry.dispatched(KEY, T0) is False


# -- cleanup -----------------------------------------------------------------------------


def test_cleanup_deletes_old_rows_but_never_a_live_lease(
    registry: DispatchRegistry, clock: ManualClock
) -> None:
    day = 86400
    claim(registry, T0)  # finished below: deletable once old
    registry.complete(KEY, T0, attempt=1, now=later(10))
    claim(registry, later(60), lease_seconds=10 * day)  # old but its attempt still holds a lease
    claim(registry, later(120))  # old, lease long expired: a dead attempt
    claim(registry, later(2 * day), now=later(2 * day))  # recent
    clock.advance(days=2, hours=1)

    deleted = registry.cleanup()

    assert deleted == 2
    remaining = {entry.fire_time for entry in registry.find_by_key(KEY)}
    assert remaining == {later(60), later(2 * day)}


def test_cleanup_window_is_configurable(registry: DispatchRegistry) -> None:
    claim(registry, T0)
    registry.complete(KEY, T0, attempt=1, now=later(1))

    assert registry.cleanup(recovery_window=7 * 86400, now=later(86400 * 2)) == 0
    assert registry.cleanup(recovery_window=3600, now=later(86400 * 2)) == 1


# -- bad input ---------------------------------------------------------------------------


def test_naive_datetimes_are_refused(registry: DispatchRegistry) -> None:
    naive = datetime(2025, 3, 1, 10)
    with pytest.raises(ValueError, match=r"^fire_time: naive"):
        registry.claim(KEY, naive, lease_seconds=LEASE, max_attempts=3, now=T0)
    with pytest.raises(ValueError, match=r"^now: naive"):
        registry.claim(KEY, T0, lease_seconds=LEASE, max_attempts=3, now=naive)
    with pytest.raises(ValueError, match=r"^fire_times: naive"):
        registry.record_missed(KEY, [naive], now=T0)
    assert registry.find_by_key(KEY) == []


@pytest.mark.parametrize(
    ("lease_seconds", "max_attempts", "field"),
    [(0, 3, "lease_seconds"), (-5, 3, "lease_seconds"), (60, 0, "max_attempts")],
)
def test_claim_refuses_a_bad_lease_or_attempt_limit(
    registry: DispatchRegistry, lease_seconds: float, max_attempts: int, field: str
) -> None:
    with pytest.raises(ValueError, match=rf"^{field}: "):
        claim(registry, lease_seconds=lease_seconds, max_attempts=max_attempts)
    assert registry.find_dispatch(KEY, T0) is None


def test_queries_refuse_a_limit_below_one(registry: DispatchRegistry) -> None:
    with pytest.raises(ValueError, match=r"^limit: "):
        registry.find_by_key(KEY, limit=0)


# -- memory backend and idempotency keys -------------------------------------------------


def test_memory_registry_can_be_sized_and_cleared() -> None:
    registry = MemoryDispatchRegistry(node_id="node-a")
    claim(registry, T0)
    registry.record_missed(KEY, [later(60), later(120)], now=T0)

    assert registry.size() == 3
    registry.clear()
    assert registry.size() == 0
    assert claim(registry).outcome is ClaimOutcome.ACQUIRED


def test_memory_registry_nodes_share_one_log() -> None:
    registry = MemoryDispatchRegistry(node_id="node-a")
    other = registry.for_node("node-b")
    claim(registry)

    assert claim(other).outcome is ClaimOutcome.BUSY
    assert other.size() == 1


def test_idempotency_key_is_the_same_for_the_same_occurrence_everywhere() -> None:
    key = idempotency_key("app", KEY, T0)

    assert key == idempotency_key("app", KEY, T0.astimezone(timezone(timedelta(hours=-5))))
    assert len(key) == 32
    assert int(key, 16) >= 0
    assert key != idempotency_key("app", KEY, later(1))
    assert key != idempotency_key("other-app", KEY, T0)
    assert key != idempotency_key("app", "reports:weekly", T0)


def test_idempotency_key_refuses_a_naive_fire_time() -> None:
    with pytest.raises(ValueError, match=r"^fire_time: naive"):
        idempotency_key("app", KEY, datetime(2025, 3, 1, 10))
