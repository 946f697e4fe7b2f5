"""Overlap ``skip`` across real worker processes: a schedule whose job outlasts its interval.

Two worker processes share one schedule (interval 1 s, a 2.5 s job, TTR 3 s). Each run
writes its own start and end lines (``tests.jobs:log_interval_then_sleep``), so the check is
on what really ran, not only on what the worker recorded. The numbers are the issue's
(interval 2 s, a 5 s job, 20 s) scaled down to keep the test near 15 s.
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from postburner_py import Postburner
from postburner_py.store.dispatch_records import DispatchRecord
from tests.factories import make_schedule
from tests.test_worker import _wait_for, _worker_process

MakePostburner = Callable[..., Postburner]

JOB_SECONDS = 2.5
TTR = 3


@dataclass(frozen=True)
class Run:
    """One run of the job as the job itself recorded it (``end`` None: it was killed)."""

    pid: int
    start: float
    end: float | None


def read_runs(path: Path) -> list[Run]:
    """The runs in ``path``, by start; a run's end is the next ``E`` line of its process."""
    started: dict[int, float] = {}
    runs: list[Run] = []
    lines = path.read_text().splitlines() if path.exists() else []
    for line in lines:
        kind, pid, stamp = line.split()[:3]
        if kind == "S":
            started[int(pid)] = float(stamp)
        elif int(pid) in started:
            runs.append(Run(int(pid), started.pop(int(pid)), float(stamp)))
    runs.extend(Run(pid, start, None) for pid, start in started.items())
    return sorted(runs, key=lambda run: run.start)


def overlaps(runs: list[Run], ended: dict[int, float]) -> list[tuple[Run, Run]]:
    """Pairs of runs that were running at once. A run with no end line ran until its
    process's entry in ``ended`` (it was killed then), or is still running."""

    def end_of(run: Run) -> float:
        return run.end if run.end is not None else ended.get(run.pid, float("inf"))

    return [
        (first, second)
        for index, first in enumerate(runs)
        for second in runs[index + 1 :]
        if second.start < end_of(first)
    ]


def test_the_overlap_checker_sees_two_runs_at_once() -> None:
    """The checker the process test relies on finds what overlap ``allow`` produces."""
    runs = [Run(1, 0.0, 2.5), Run(2, 1.0, 3.5), Run(1, 3.0, None), Run(2, 4.0, None)]
    assert overlaps(runs, {}) == [(runs[0], runs[1]), (runs[1], runs[2]), (runs[2], runs[3])]
    assert overlaps(runs[2:], {1: 3.9}) == []


def _schedule(pb: Postburner, log: Path, overlap: str) -> str:
    name = f"overlap-{uuid.uuid4().hex[:8]}"
    anchor = (datetime.now(UTC) + timedelta(seconds=3)).replace(microsecond=0)
    with pb.session() as session:
        session.add(
            make_schedule(
                name=name,
                job_class="tests.jobs:log_interval_then_sleep",
                args=[str(log), JOB_SECONDS],
                kwargs={},
                cron=None,
                anchor=anchor,
                interval=1,
                interval_unit="seconds",
                ttr=TTR,
                overlap=overlap,
            )
        )
        session.commit()
    return name


@contextmanager
def _workers(pb: Postburner, count: int) -> Iterator[dict[int, subprocess.Popen[bytes]]]:
    processes = [_worker_process(pb) for _ in range(count)]
    try:
        yield {process.pid: process for process in processes}
    finally:
        for process in processes:
            process.kill()
            process.wait(timeout=10)


def _ended(runs: list[Run], run: Run) -> bool:
    return any(other.start == run.start and other.end is not None for other in runs)


def _dispatch_rows(pb: Postburner, key: str) -> list[Any]:
    with pb.session() as session:
        statement = select(DispatchRecord).where(DispatchRecord.key == key)
        return list(session.scalars(statement.order_by(DispatchRecord.fire_time)))


def test_overlap_skip_never_runs_two_at_once_in_two_processes_and_a_killed_run_blocks_its_lease(
    make_postburner: MakePostburner, postgres_url: str, tmp_path: Path
) -> None:
    pb = make_postburner(database_url=postgres_url)
    log = tmp_path / "runs.txt"
    key = _schedule(pb, log, overlap="skip")
    with _workers(pb, 2) as workers:
        # Two whole runs and the start of a third: occurrences fell due during each.
        try:
            _wait_for(lambda: len(read_runs(log)) >= 3, timeout=30)
        except AssertionError:
            print(log.read_text() if log.exists() else "no log")
            for row in _dispatch_rows(pb, key):
                print(
                    row.fire_time,
                    row.status,
                    row.attempt,
                    row.running_key,
                    row.lease_expires_at,
                    row.updated_at,
                )
            raise
        running = read_runs(log)[-1]
        time.sleep(0.5)  # mid-run
        victim = workers[running.pid]
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        killed_at = time.time()
        [held] = [row for row in _dispatch_rows(pb, key) if row.running_key is not None]
        lease_end = held.lease_expires_at.timestamp()
        # The survivor runs the schedule again once the dead run's lease lapsed.
        _wait_for(lambda: read_runs(log)[-1].start > running.start, timeout=TTR + 15)
        again = read_runs(log)[-1]
        _wait_for(lambda: _ended(read_runs(log), again), timeout=JOB_SECONDS + 10)

    runs = read_runs(log)
    assert overlaps(runs, {running.pid: killed_at}) == []
    assert again.pid != running.pid
    # Not before the killed run's lease lapsed (at most a TTR after its last renewal) ...
    assert again.start >= lease_end > killed_at
    assert lease_end - killed_at <= TTR
    # ... and not much later: within a TTR and a grid point or two of the kill.
    assert again.start - killed_at < TTR + 3
    statuses = [row.status for row in _dispatch_rows(pb, key)]
    assert statuses.count("skipped_overlap") >= 2, statuses
    assert len(runs) >= 4


def test_overlap_allow_across_processes_runs_two_at_once(
    make_postburner: MakePostburner, postgres_url: str, tmp_path: Path
) -> None:
    """The same schedule under ``allow`` (the old behaviour): the checker above sees two
    runs at once, so the skip test would fail without the overlap policy."""
    pb = make_postburner(database_url=postgres_url)
    log = tmp_path / "runs.txt"
    key = _schedule(pb, log, overlap="allow")
    with _workers(pb, 2):
        _wait_for(lambda: overlaps(read_runs(log), {}) != [], timeout=30)
    assert "skipped_overlap" not in [row.status for row in _dispatch_rows(pb, key)]
