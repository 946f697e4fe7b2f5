"""The ledger: group commit of many threads' writes, against real PostgreSQL and SQLite."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg
import pytest
from sqlalchemy import Column, Connection, MetaData, String, Table, func, insert, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from postburner_py import Postburner
from postburner_py.worker.answer import Answer
from postburner_py.worker.ledger import UNDECIDED, Ledger, LedgerClosedError

MakePostburner = Callable[..., Postburner]
WAIT = 5.0

_METADATA = MetaData()
PROBES = Table("ledger_probes", _METADATA, Column("name", String(50), primary_key=True))


# --- batch handlers -----------------------------------------------------------------------


class Store:
    """Inserts each item as a probe row; records the items of every call it gets."""

    def __init__(self, *, refuse: str | None = None) -> None:
        self.refuse = refuse
        self.calls: list[list[str]] = []

    def __call__(self, connection: Connection, names: Sequence[str]) -> list[str]:
        self.calls.append(list(names))
        connection.execute(insert(PROBES), [{"name": name} for name in names])
        if self.refuse in names:
            raise ValueError(f"{self.refuse} is refused")
        return [f"stored {name}" for name in names]


class Gate(Store):
    """A :class:`Store` that holds its transaction open until :attr:`opened` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.opened = threading.Event()

    def __call__(self, connection: Connection, names: Sequence[str]) -> list[str]:
        answers = super().__call__(connection, names)
        self.entered.set()
        if not self.opened.wait(WAIT):
            raise TimeoutError("the gate was never opened")
        return answers


class FastStore:
    """A fast path that stores the items of ``store`` named ``fast...`` itself (one commit)
    and leaves the rest; with ``fail``, it fails before writing anything."""

    def __init__(self, store: Store, *, fail: bool = False) -> None:
        self.store = store
        self.fail = fail
        self.calls = 0

    def __call__(self, connection: Connection, requests: Sequence[tuple[Any, Any]]) -> list[Any]:
        self.calls += 1
        if self.fail:
            raise RuntimeError("the fast path is down")
        mine = [item for handler, item in requests if handler is self.store and _fast(item)]
        if mine:
            connection.execute(insert(PROBES), [{"name": name} for name in mine])
            connection.commit()
        return [
            f"fast {item}" if handler is self.store and _fast(item) else UNDECIDED
            for handler, item in requests
        ]


def _fast(item: Any) -> bool:
    return isinstance(item, str) and item.startswith("fast")


def count_probes(connection: Connection, items: Sequence[object]) -> list[int]:
    """How many probe rows this transaction sees, once per item."""
    seen = int(connection.scalar(select(func.count()).select_from(PROBES)) or 0)
    return [seen for _ in items]


def backend_pid(connection: Connection, items: Sequence[object]) -> list[int]:
    """The PostgreSQL backend serving the ledger's connection, once per item."""
    pid = int(connection.scalar(text("SELECT pg_backend_pid()")) or 0)
    return [pid for _ in items]


# --- fixtures and helpers -----------------------------------------------------------------


@pytest.fixture
def pb(make_postburner: MakePostburner, database_url: str) -> Postburner:
    postburner = make_postburner()
    _METADATA.create_all(postburner.engine)
    return postburner


@pytest.fixture
def make_ledger(pb: Postburner) -> Iterator[Callable[..., Ledger]]:
    """``make_ledger(**options)`` on ``pb.writer_engine``; each is closed at teardown."""
    ledgers: list[Ledger] = []

    def make(**options: Any) -> Ledger:
        ledger = Ledger(pb.writer_engine, **options)
        ledgers.append(ledger)
        return ledger

    yield make
    for ledger in ledgers:
        ledger.close()


def names_in(pb: Postburner) -> set[str]:
    """The probe rows committed, as another connection sees them."""
    with pb.engine.connect() as connection:
        return set(connection.scalars(select(PROBES.c.name)))


def hold(ledger: Ledger) -> tuple[Gate, Answer]:
    """Keep the ledger busy in a transaction, so requests submitted now wait together."""
    gate = Gate()
    future = ledger.submit(gate, "gate")
    assert gate.entered.wait(WAIT), "the ledger never ran the gate"
    return gate, future


def results(futures: Sequence[Answer]) -> list[Any]:
    return [future.result(WAIT) for future in futures]


# --- tests --------------------------------------------------------------------------------


def test_an_answer_arrives_only_once_its_write_is_visible_to_other_connections(
    pb: Postburner, make_ledger: Callable[..., Ledger]
) -> None:
    ledger = make_ledger()
    gate = Gate()
    seen_at_answer: list[set[str]] = []
    answered = threading.Event()

    def look(_: Answer) -> None:  # runs on the ledger's thread as the answer is set
        seen_at_answer.append(names_in(pb))
        answered.set()

    future = ledger.submit(gate, "first")
    future.add_done_callback(look)
    assert gate.entered.wait(WAIT)
    assert not future.done()
    assert names_in(pb) == set()
    gate.opened.set()
    assert future.result(WAIT) == "stored first"
    assert answered.wait(WAIT)
    assert seen_at_answer == [{"first"}]


def test_requests_waiting_together_run_in_one_handler_call_and_one_commit(
    pb: Postburner, make_ledger: Callable[..., Ledger]
) -> None:
    ledger = make_ledger()
    gate, held = hold(ledger)
    store = Store()
    futures = [ledger.submit(store, name) for name in ("a", "b", "c")]
    gate.opened.set()
    assert results([held, *futures]) == ["stored gate", "stored a", "stored b", "stored c"]
    assert store.calls == [["a", "b", "c"]]
    assert (ledger.batches, ledger.requests) == (2, 4)
    assert names_in(pb) == {"gate", "a", "b", "c"}


def test_a_batch_takes_at_most_max_batch_requests(make_ledger: Callable[..., Ledger]) -> None:
    ledger = make_ledger(max_batch=2)
    gate, held = hold(ledger)
    store = Store()
    futures = [ledger.submit(store, name) for name in "abcde"]
    gate.opened.set()
    results([held, *futures])
    assert store.calls == [["a", "b"], ["c", "d"], ["e"]]
    assert (ledger.batches, ledger.requests) == (4, 6)


def test_max_batch_below_one_is_refused(pb: Postburner) -> None:
    with pytest.raises(ValueError, match="max_batch"):
        Ledger(pb.writer_engine, max_batch=0)


def test_handlers_of_one_batch_run_in_order_of_first_request_and_answer_in_place(
    make_ledger: Callable[..., Ledger],
) -> None:
    ledger = make_ledger()
    gate, held = hold(ledger)
    store = Store()
    futures = [
        ledger.submit(store, "a"),
        ledger.submit(count_probes, None),
        ledger.submit(store, "b"),
    ]
    gate.opened.set()
    # The count runs after both inserts (the store's group came first) in the same transaction.
    assert results([held, *futures]) == ["stored gate", "stored a", 3, "stored b"]
    assert store.calls == [["a", "b"]]
    assert ledger.batches == 2


def test_a_failing_request_fails_alone_and_the_rest_of_its_batch_commits(
    pb: Postburner, make_ledger: Callable[..., Ledger]
) -> None:
    ledger = make_ledger()
    gate, held = hold(ledger)
    store = Store(refuse="bad")
    good_a, bad, good_c = (ledger.submit(store, name) for name in ("a", "bad", "c"))
    gate.opened.set()
    assert results([held, good_a, good_c]) == ["stored gate", "stored a", "stored c"]
    with pytest.raises(ValueError, match="bad is refused"):
        bad.result(WAIT)
    # The batch's inserts were rolled back: "a" and "c" went in again, alone, without conflict.
    assert store.calls == [["a", "bad", "c"], ["a"], ["bad"], ["c"]]
    assert names_in(pb) == {"gate", "a", "c"}
    assert (ledger.batches, ledger.requests) == (3, 3)


def test_a_constraint_violation_fails_its_request_and_the_connection_serves_the_next_batch(
    pb: Postburner, make_ledger: Callable[..., Ledger]
) -> None:
    ledger = make_ledger()
    store = Store()
    assert ledger.call(store, "taken") == "stored taken"
    gate, held = hold(ledger)
    futures = [ledger.submit(store, name) for name in ("a", "taken", "c")]
    gate.opened.set()
    assert results([held, futures[0], futures[2]]) == ["stored gate", "stored a", "stored c"]
    with pytest.raises(IntegrityError):
        futures[1].result(WAIT)
    assert ledger.call(store, "after") == "stored after"
    assert names_in(pb) == {"taken", "gate", "a", "c", "after"}


def _submit_until_refused(ledger: Ledger, store: Store) -> list[Answer]:
    """Submit requests until the ledger refuses one; the ones it accepted."""
    accepted: list[Answer] = []
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            accepted.append(ledger.submit(store, f"late-{len(accepted)}"))
        except LedgerClosedError:
            return accepted
        time.sleep(0.001)
    pytest.fail("the ledger kept accepting requests after close()")


def test_close_commits_what_is_queued_then_refuses_new_requests(
    pb: Postburner, make_ledger: Callable[..., Ledger]
) -> None:
    ledger = make_ledger()
    gate, held = hold(ledger)
    store = Store()
    queued = [ledger.submit(store, name) for name in ("a", "b")]
    closer = threading.Thread(target=ledger.close)
    closer.start()
    late = _submit_until_refused(ledger, store)
    assert closer.is_alive(), "close() returned with requests still queued"
    gate.opened.set()
    closer.join(WAIT)
    assert not closer.is_alive()
    assert all(future.done() for future in [held, *queued, *late])
    assert names_in(pb) == {"gate", "a", "b"} | {f"late-{i}" for i in range(len(late))}
    with pytest.raises(LedgerClosedError):
        ledger.submit(store, "too late")
    ledger.close()  # a second close is harmless


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_lost_connection_fails_its_batch_and_the_next_request_runs_on_a_new_connection(
    pb: Postburner, make_ledger: Callable[..., Ledger], pg_server: Any
) -> None:
    ledger = make_ledger()
    first_pid = ledger.call(backend_pid, None)
    gate, held = hold(ledger)
    with psycopg.connect(pg_server.admin_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (first_pid,))
    following = ledger.submit(backend_pid, None)
    gate.opened.set()
    with pytest.raises(DBAPIError) as lost:
        held.result(WAIT)
    assert lost.value.connection_invalidated
    assert following.result(WAIT) != first_pid
    assert ledger.call(Store(), "after") == "stored after"
    assert names_in(pb) == {"after"}


def test_the_fast_path_answers_what_it_decides_and_the_handler_takes_the_rest(
    pb: Postburner, make_ledger: Callable[..., Ledger]
) -> None:
    store = Store()
    fast = FastStore(store)
    ledger = make_ledger(fast_path=fast)
    gate, held = hold(ledger)
    futures = [ledger.submit(store, name) for name in ("fast-a", "b", "fast-c")]
    gate.opened.set()
    assert results([held, *futures]) == ["stored gate", "fast fast-a", "stored b", "fast fast-c"]
    assert store.calls == [["b"]]
    assert fast.calls == 2  # the gate's batch, then this one
    assert ledger.fast_answers == 2
    assert names_in(pb) == {"gate", "fast-a", "b", "fast-c"}


def test_a_failing_fast_path_leaves_the_whole_batch_to_the_handlers(
    pb: Postburner, make_ledger: Callable[..., Ledger]
) -> None:
    store = Store()
    ledger = make_ledger(fast_path=FastStore(store, fail=True))
    gate, held = hold(ledger)
    futures = [ledger.submit(store, name) for name in ("fast-a", "b")]
    gate.opened.set()
    assert results([held, *futures]) == ["stored gate", "stored fast-a", "stored b"]
    assert store.calls == [["fast-a", "b"]]
    assert ledger.fast_answers == 0
    assert names_in(pb) == {"gate", "fast-a", "b"}


def application_name(connection: Connection, items: Sequence[object]) -> list[str]:
    name = str(connection.scalar(text("SELECT current_setting('application_name')")))
    return [name for _ in items]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_connection_setup_runs_on_every_connection_the_ledger_opens(
    pb: Postburner, make_ledger: Callable[..., Ledger], pg_server: Any
) -> None:
    ledger = make_ledger(
        prepare_connection=lambda connection: connection.exec_driver_sql(
            "SET application_name = 'postburner-ledger'"
        )
    )
    assert ledger.call(application_name, None) == "postburner-ledger"
    pid = ledger.call(backend_pid, None)
    with psycopg.connect(pg_server.admin_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(DBAPIError):
        ledger.call(backend_pid, None)
    assert ledger.call(application_name, None) == "postburner-ledger"
    assert ledger.call(backend_pid, None) != pid


def test_a_request_nobody_waits_for_lingers_for_one_somebody_waits_for(
    pb: Postburner, make_ledger: Callable[..., Ledger]
) -> None:
    ledger = make_ledger(linger=2.0)
    store = Store()
    began = time.monotonic()
    outcome = ledger.submit(store, "outcome")
    assert ledger.call(store, "admission") == "stored admission"
    assert outcome.result(WAIT) == "stored outcome"
    assert store.calls == [["outcome", "admission"]]
    assert time.monotonic() - began < 1.5, "the waited request ended the linger"


def test_a_lingering_request_commits_after_the_linger_alone(
    pb: Postburner, make_ledger: Callable[..., Ledger]
) -> None:
    ledger = make_ledger(linger=0.05)
    store = Store()
    began = time.monotonic()
    assert ledger.submit(store, "alone").result(WAIT) == "stored alone"
    assert time.monotonic() - began >= 0.045
    assert store.calls == [["alone"]]


def test_a_negative_linger_is_refused(pb: Postburner) -> None:
    with pytest.raises(ValueError, match="linger"):
        Ledger(pb.writer_engine, linger=-1)


def test_before_transaction_runs_before_each_transaction_and_before_the_pool_gets_it_back(
    pb: Postburner,
) -> None:
    seen: list[str] = []
    ledger = Ledger(pb.writer_engine, before_transaction=lambda _c: seen.append("reset"))
    try:
        assert ledger.call(Store(), "a") == "stored a"
        assert seen == ["reset"]
    finally:
        ledger.close()
    assert seen == ["reset", "reset"]
