"""Group commit for a worker process: the database writes of all its threads, batched.

Each worker thread hands its admission and settlement writes to one :class:`Ledger` thread
and waits for the answer. The ledger takes whatever requests are waiting (up to
``max_batch``), runs each kind's batch handler inside **one** transaction, commits, and only
then answers the waiting threads: a thread never acts on a write that is not durable yet
(a job is deleted from Beanstalkd only after its outcome committed).

When a batch fails (a deadlock, a constraint, a lost connection), it is rolled back and each
request is retried in a transaction of its own, so one bad request fails alone.

A ledger may have a *fast path* (the worker's on PostgreSQL: :mod:`postburner_py.worker.fast_path`):
it sees the whole batch first and settles what it can in one statement that commits by
itself; the requests it leaves :data:`UNDECIDED` then go through their handlers' transaction.
If the fast path fails, nothing of it committed and the whole batch takes the handlers' way.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from postburner_py.worker.answer import Answer

log = logging.getLogger("postburner_py.worker")


#: A batch handler: runs a list of requests of one kind inside the open transaction and
#: answers each, in order. It must only write to the database (a failed batch is replayed).
BatchHandler = Callable[[Connection, Sequence[Any]], Sequence[Any]]


class _Undecided:
    def __repr__(self) -> str:
        return "UNDECIDED"


#: A fast path's answer for a request it leaves to its handler.
UNDECIDED: Any = _Undecided()

#: A fast path: given ``(handler, item)`` for every request of a batch, on an idle connection
#: (no transaction open), commits what it decides itself and answers each request in order,
#: :data:`UNDECIDED` for those its handler must take. It must be all or nothing.
FastPath = Callable[[Connection, Sequence[tuple[BatchHandler, Any]]], Sequence[Any]]

DEFAULT_MAX_BATCH = 64


@dataclass
class _Request:
    handler: BatchHandler
    item: Any
    #: Somebody waits for the answer right away (:meth:`Ledger.call`).
    waited: bool = False
    future: Answer = field(default_factory=Answer)


class LedgerClosedError(RuntimeError):
    """A request reached a ledger that was closed."""


class Ledger:
    """One thread and one database connection that commit the writes of many threads."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        name: str = "ledger",
        fast_path: FastPath | None = None,
        prepare_connection: Callable[[Connection], None] | None = None,
        linger: float = 0.0,
        before_transaction: Callable[[Connection], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch: must be >= 1, got {max_batch!r}")
        if linger < 0:
            raise ValueError(f"linger: must be >= 0 seconds, got {linger!r}")
        self._linger = linger
        # Runs before every transaction and before the connection goes back to the pool:
        # undoes connection state the fast path leaves behind.
        self._before_transaction = before_transaction
        self._engine = engine
        self._max_batch = max_batch
        self._fast_path = fast_path
        self._prepare_connection = prepare_connection
        self.fast_answers = 0
        self._requests: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._connection: Connection | None = None
        self._closed = False
        self._lock = threading.Lock()
        self.batches = 0
        self.requests = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def has_fast_path(self) -> bool:
        """Whether batches go through a fast path first (what its requests may prepare for)."""
        return self._fast_path is not None

    def submit(self, handler: BatchHandler, item: Any, *, waited: bool = False) -> Answer:
        """Queue ``item`` for ``handler``; the future resolves once its batch committed.

        A batch of requests nobody waits for yet (``waited`` False) is held back up to the
        ledger's ``linger`` seconds for one somebody waits for, so both share a commit.
        """
        request: _Request = _Request(handler, item, waited)
        with self._lock:
            if self._closed:
                raise LedgerClosedError("the worker's ledger is closed")
            self._requests.put(request)
        return request.future

    def call(self, handler: BatchHandler, item: Any) -> Any:
        """:meth:`submit` and wait for the committed answer (or the exception)."""
        return self.submit(handler, item, waited=True).result()

    def close(self, *, until: float | None = None) -> None:
        """Commit what is queued, stop the thread, close the connection. With ``until`` (a
        monotonic instant) wait no longer than that for the thread (it is a daemon: a
        database that does not answer cannot hold a stopping worker)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._requests.put(None)
        self._thread.join(None if until is None else max(0.0, until - time.monotonic()))

    def _run(self) -> None:
        try:
            while True:
                batch, stop = self._next_batch()
                if batch:
                    self._process(batch)
                if stop:
                    return
        except BaseException as exc:
            self._fail_waiting(exc)
            raise
        finally:
            if self._connection is not None:
                self._release_connection()

    def _fail_waiting(self, exc: BaseException) -> None:
        """The thread is dying: refuse new requests and answer every waiting one."""
        log.critical("the worker's ledger stopped: %r", exc)
        with self._lock:
            self._closed = True
        failure = LedgerClosedError(f"the worker's ledger stopped: {exc!r}")
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return
            if request is not None and not request.future.done():
                request.future.set_exception(failure)

    def _next_batch(self) -> tuple[list[_Request], bool]:
        first = self._requests.get()
        if first is None:
            return [], True
        batch = [first]
        stop = self._take_waiting(batch)
        if not stop and self._linger and not any(request.waited for request in batch):
            stop = self._linger_for_waited(batch)
        return batch, stop

    def _take_waiting(self, batch: list[_Request]) -> bool:
        """Add the requests already queued (up to ``max_batch``); True when told to stop."""
        while len(batch) < self._max_batch:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return False
            if request is None:
                return True
            batch.append(request)
        return False

    def _linger_for_waited(self, batch: list[_Request]) -> bool:
        """Hold a batch nobody waits for until a waited request joins it, at most ``linger``
        seconds: a worker thread's outcome and its next admission then share one commit."""
        deadline = time.monotonic() + self._linger
        while len(batch) < self._max_batch:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                request = self._requests.get(timeout=remaining)
            except queue.Empty:
                return False
            if request is None:
                return True
            batch.append(request)
            if request.waited:
                return self._take_waiting(batch)
        return False

    def _process(self, batch: list[_Request]) -> None:
        rest = self._fast(batch) if self._fast_path is not None else batch
        if rest:
            self._process_in_transaction(rest)

    def _fast(self, batch: list[_Request]) -> list[_Request]:
        """Run the fast path; answer what it decided, return what it left (all, if it failed)."""
        assert self._fast_path is not None
        try:
            connection = self._connect()
            answers = self._fast_path(connection, [(r.handler, r.item) for r in batch])
        except Exception as exc:
            # The fast path may work below SQLAlchemy (on the raw driver connection), where a
            # lost connection goes unnoticed: the handlers start over on a fresh one.
            self._discard_connection()
            log.warning(
                "the fast path failed on %d writes (%s); taking each handler", len(batch), exc
            )
            return batch
        except BaseException as exc:  # the thread dies: nobody may wait forever
            for request in batch:
                request.future.set_exception(exc)
            raise
        rest = []
        for request, answer in zip(batch, answers, strict=True):
            if answer is UNDECIDED:
                rest.append(request)
            else:
                request.future.set_result(answer)
                self.fast_answers += 1
        if len(rest) < len(batch):
            self.batches += 1
            self.requests += len(batch) - len(rest)
        return rest

    def _process_in_transaction(self, batch: list[_Request]) -> None:
        try:
            answers = self._commit(batch)
        except Exception as exc:
            if len(batch) == 1:
                batch[0].future.set_exception(exc)
                return
            log.warning("a batch of %d writes failed (%s); retrying each alone", len(batch), exc)
            for request in batch:
                self._process_in_transaction([request])
            return
        except BaseException as exc:  # the thread dies: nobody may wait forever
            for request in batch:
                request.future.set_exception(exc)
            raise
        self.batches += 1
        self.requests += len(batch)
        for request, answer in zip(batch, answers, strict=True):
            request.future.set_result(answer)

    def _commit(self, batch: list[_Request]) -> list[Any]:
        """Run the batch grouped by handler, in the order each handler first appears."""
        groups: dict[BatchHandler, list[int]] = {}
        for position, request in enumerate(batch):
            groups.setdefault(request.handler, []).append(position)
        answers: list[Any] = [None] * len(batch)
        ordered = sorted(groups.items(), key=lambda group: getattr(group[0], "batch_order", 0))
        with self._transaction() as connection:
            for handler, positions in ordered:
                items = [batch[position].item for position in positions]
                results = handler(connection, items)
                for position, result in zip(positions, results, strict=True):
                    answers[position] = result
        return answers

    def _connect(self) -> Connection:
        """The ledger's connection; a dropped one is replaced (and set up again)."""
        if self._connection is None or self._connection.closed:
            connection = self._engine.connect()
            if self._prepare_connection is not None:
                self._prepare_connection(connection)
            connection.commit()
            self._connection = connection
        return self._connection

    def _drop_if_invalidated(self, exc: BaseException) -> None:
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            self._discard_connection()

    def _release_connection(self) -> None:
        """Give the connection back to the pool as the pool gave it."""
        assert self._connection is not None
        try:
            if self._before_transaction is not None and not self._connection.invalidated:
                self._before_transaction(self._connection)
        except Exception:
            self._connection.invalidate()
        self._connection.close()
        self._connection = None

    def _discard_connection(self) -> None:
        if self._connection is not None:
            self._connection.invalidate()
            self._connection.close()
            self._connection = None

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """One transaction on the ledger's connection; a dropped connection is replaced."""
        connection = self._connect()
        try:
            if self._before_transaction is not None:
                self._before_transaction(connection)
            with connection.begin():
                yield connection
        except DBAPIError as exc:
            self._drop_if_invalidated(exc)
            raise
