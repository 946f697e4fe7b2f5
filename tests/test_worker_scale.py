"""Scale: two worker processes' worth of threads over 500 occurrences (PostgreSQL)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from postburner_py import Postburner
from postburner_py.store.dispatch_log import SqlDispatchRegistry
from postburner_py.worker.process import Worker
from tests import jobs
from tests.factories import make_schedule
from tests.test_worker import _run_until

MakePostburner = Callable[..., Postburner]


@pytest.mark.slow
def test_two_workers_run_500_occurrences_each_exactly_once(
    make_postburner: MakePostburner, postgres_url: str
) -> None:
    pb = make_postburner(database_url=postgres_url)
    anchor = (datetime.now(UTC) + timedelta(seconds=5)).replace(microsecond=0)
    markers = [uuid.uuid4().hex for _ in range(500)]
    with pb.session() as session:
        session.add_all(
            make_schedule(cron=None, anchor=anchor, interval=1, interval_unit="days", args=[m])
            for m in markers
        )
        session.commit()
    assert datetime.now(UTC) < anchor, "creating 500 schedules took longer than 5 s"
    other = make_postburner(database_url=postgres_url, node_id="second-node")
    registry = SqlDispatchRegistry(pb.session_factory)

    def all_completed() -> bool:
        return len(registry.find_by_status("completed", limit=1000)) == 500

    second = Worker(other, concurrency=2, reserve_timeout=0.2)
    thread = threading.Thread(target=second.run)
    thread.start()
    try:
        _run_until(pb, all_completed, timeout=60, concurrency=2)
    finally:
        second.stop()
        thread.join(timeout=30)
    assert [jobs.runs_with(m) for m in markers] == [1] * 500
    nodes = {
        entry.node_id.split("/")[0] for entry in registry.find_by_status("completed", limit=1000)
    }
    assert len(nodes) == 2
