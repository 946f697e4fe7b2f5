"""Prefetch: threads beyond the concurrency admit jobs ahead of their run_at, never run more."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from postburner_py import Postburner
from postburner_py.store.history import HistoryStore
from postburner_py.worker.process import Worker
from tests import jobs
from tests.test_worker import _run_until

MakePostburner = Callable[..., Postburner]
pytestmark = pytest.mark.usefixtures("database_url")


def test_prefetched_jobs_never_run_more_than_the_concurrency_at_once(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner()
    marker = uuid.uuid4().hex
    now = datetime.now(UTC)
    for index in range(6):
        pb.enqueue_at(now, "tests.jobs:hold_for", [marker, 0.2], job_id=f"{marker}-{index}")
    _run_until(pb, lambda: jobs.runs_with(marker) == 6, concurrency=2, prefetch=3)
    assert jobs.MOST_AT_ONCE[marker] == 2


def test_occurrences_due_together_start_together_when_prefetched(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner()
    marker = uuid.uuid4().hex
    due = (datetime.now(UTC) + timedelta(seconds=2)).replace(microsecond=0)
    ids = [f"{marker}-{index}" for index in range(6)]
    for job_id in ids:
        pb.enqueue_at(due, "tests.jobs:record_run", [marker], job_id=job_id)
    _run_until(pb, lambda: jobs.runs_with(marker) == 6, concurrency=2, prefetch=4)
    history = HistoryStore(pb.session_factory)
    late = [entry.queue_time_ms for job_id in ids for entry in history.get_by_job_id(job_id)]
    assert len(late) == 6
    # Six threads admitted the six jobs before their instant; none started early.
    assert all(ms is not None and 0 <= ms < 100 for ms in late), late


def test_prefetch_must_not_be_negative(make_postburner: MakePostburner) -> None:
    with pytest.raises(ValueError, match="prefetch"):
        Worker(make_postburner(), concurrency=2, prefetch=-1)
