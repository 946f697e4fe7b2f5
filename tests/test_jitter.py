"""Jitter: an occurrence starts at its grid point plus an offset derived from (key, run_at)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from postburner_py import Postburner
from postburner_py.store.history import HistoryStore
from postburner_py.timegrid.jitter import jitter_offset, start_instant
from tests import jobs
from tests.factories import make_schedule
from tests.test_worker import _run_until

MakePostburner = Callable[..., Postburner]
REPO = Path(__file__).resolve().parent.parent
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _named_with_offset(run_at: datetime, jitter: float, low: float, high: float) -> str:
    """A schedule name whose occurrence at ``run_at`` has an offset in ``[low, high)``."""
    for _ in range(10_000):
        name = f"jitter-{uuid.uuid4().hex[:10]}"
        if low <= jitter_offset(name, run_at, jitter).total_seconds() < high:
            return name
    raise AssertionError("no name found")  # pragma: no cover - 10,000 draws


def test_the_offset_is_in_range_deterministic_and_spread_over_occurrences() -> None:
    points = [T0 + timedelta(minutes=minute) for minute in range(200)]
    offsets = [jitter_offset("reports:daily", point, 30).total_seconds() for point in points]
    assert all(0 <= offset < 30 for offset in offsets)
    assert offsets == [jitter_offset("reports:daily", p, 30).total_seconds() for p in points]
    assert len(set(offsets)) == len(offsets)  # spread, not one offset for all
    assert min(offsets) < 10 and max(offsets) > 20
    assert jitter_offset("other", T0, 30) != jitter_offset("reports:daily", T0, 30)
    assert jitter_offset("reports:daily", T0, None) == timedelta(0)
    assert jitter_offset("reports:daily", T0, 0) == timedelta(0)
    assert start_instant("reports:daily", T0, 30) == T0 + jitter_offset("reports:daily", T0, 30)


def test_the_offset_is_the_same_in_another_process_with_another_hash_seed() -> None:
    code = (
        "from datetime import datetime\n"
        "from postburner_py.timegrid.jitter import jitter_offset\n"
        f"print(jitter_offset('reports:daily', datetime.fromisoformat('{T0.isoformat()}'), 30)"
        ".total_seconds())\n"
    )
    env = {"PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) == jitter_offset("reports:daily", T0, 30).total_seconds()


@pytest.mark.usefixtures("database_url")
def test_a_jittered_occurrence_is_put_delayed_to_its_offset(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner()
    run_at = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    name = _named_with_offset(run_at, 60, 20, 59)
    with pb.session() as session:
        schedule = make_schedule(
            name=name, cron=None, anchor=run_at, interval=1, interval_unit="days", jitter=60
        )
        session.add(schedule)
        session.commit()
        put_at = datetime.now(UTC)
        [execution] = schedule.future_live()
    assert execution.run_at == run_at  # the grid point stays the occurrence's identity
    stats = pb.queue.stats_job(execution.beanstalk_job_id)
    assert stats is not None
    expected = (start_instant(name, run_at, 60) - put_at).total_seconds()
    assert abs(int(stats["delay"]) - expected) <= 2, (stats["delay"], expected)


@pytest.mark.usefixtures("database_url")
def test_a_jittered_occurrence_starts_at_its_offset_and_its_lateness_is_measured_from_it(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner()
    run_at = (datetime.now(UTC) + timedelta(seconds=2)).replace(microsecond=0)
    name = _named_with_offset(run_at, 3, 1.2, 2.5)
    marker = uuid.uuid4().hex
    with pb.session() as session:
        schedule = make_schedule(
            name=name,
            cron=None,
            anchor=run_at,
            interval=1,
            interval_unit="days",
            jitter=3,
            args=[marker],
            kwargs={},
        )
        session.add(schedule)
        session.commit()
        [execution] = schedule.future_live()
    _run_until(pb, lambda: jobs.runs_with(marker) == 1, timeout=20)
    [record] = HistoryStore(pb.session_factory).get_by_job_id(str(execution.id))
    start_at = start_instant(name, run_at, 3)
    assert record.run_at == run_at
    assert record.started_at >= start_at > run_at + timedelta(seconds=1.2)
    lateness_ms = (record.started_at - start_at).total_seconds() * 1000
    assert record.queue_time_ms is not None
    assert abs(record.queue_time_ms - lateness_ms) <= 2, (record.queue_time_ms, lateness_ms)
