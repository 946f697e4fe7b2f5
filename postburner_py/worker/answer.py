"""The answer to one ledger request: set once by the ledger's thread, read by the requester.

A worker asks the ledger twice per job, so this is on the hot path: one lock, released when
the answer arrives, instead of :class:`concurrent.futures.Future`'s condition variable (a
lock, a waiter lock per wait and a notification per answer).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

# Guards callbacks against an answer arriving while one is added (callbacks are rare).
_CALLBACKS = threading.Lock()


class Answer:
    """What :meth:`postburner_py.worker.ledger.Ledger.submit` returns."""

    __slots__ = ("_callbacks", "_error", "_pending", "_value")

    def __init__(self) -> None:
        self._pending = threading.Lock()
        self._pending.acquire()
        self._value: Any = None
        self._error: BaseException | None = None
        self._callbacks: list[Callable[[Answer], None]] = []

    def done(self) -> bool:
        """True once the answer (or the error) is in."""
        return not self._pending.locked()

    def result(self, timeout: float | None = None) -> Any:
        """The answer, waiting up to ``timeout`` seconds (forever when None); the request's
        error is raised, :class:`TimeoutError` when the time ran out."""
        if self._pending.locked():
            if not self._pending.acquire(timeout=-1 if timeout is None else timeout):
                raise TimeoutError("the ledger has not answered yet")
            self._pending.release()
        if self._error is not None:
            raise self._error
        return self._value

    def add_done_callback(self, callback: Callable[[Answer], None]) -> None:
        """Call ``callback(answer)`` once the answer is in (at once if it is)."""
        with _CALLBACKS:
            if not self.done():
                self._callbacks.append(callback)
                return
        callback(self)

    def set_result(self, value: Any) -> None:
        """Answer (the ledger's thread, once)."""
        self._value = value
        self._finish()

    def set_exception(self, error: BaseException) -> None:
        """Answer with an error (the ledger's thread, once)."""
        self._error = error
        self._finish()

    def _finish(self) -> None:
        with _CALLBACKS:
            self._pending.release()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(self)
