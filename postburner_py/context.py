"""What a running job can know about itself: :func:`current_execution`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from postburner_py.errors import PostburnerError


@dataclass(frozen=True)
class ExecutionContext:
    """The occurrence a job is running for.

    ``idempotency_key`` is the same for the same occurrence on every node and every attempt:
    hand it to downstream systems (payments, e-mail) that deduplicate.
    """

    execution_id: int | None
    job_id: str | None
    key: str
    run_at: datetime
    attempt: int
    idempotency_key: str


@dataclass(frozen=True)
class PartialSuccess:
    """Return this from a job that did part of its work: recorded as ``partial_success``."""

    results: Any


_current: ContextVar[ExecutionContext | None] = ContextVar("postburner_execution", default=None)


def current_execution() -> ExecutionContext:
    """The occurrence the calling job runs for; raises outside a job."""
    context = _current.get()
    if context is None:
        raise PostburnerError("current_execution() is only available inside a running job")
    return context


@contextmanager
def running(context: ExecutionContext) -> Iterator[None]:
    """Make ``context`` the current execution for the duration of the block."""
    token = _current.set(context)
    try:
        yield
    finally:
        _current.reset(token)
