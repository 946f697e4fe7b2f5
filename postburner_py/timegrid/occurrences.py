"""Which occurrence of a schedule comes next, and which were missed. Pure: no I/O.

``baseline`` is the last instant the schedule is accounted for (its latest run, skip, or
the moment it was created, enabled or changed). Every grid point after the baseline and up
to ``now`` was missed: with ``catch_up`` the ones inside the window run now, oldest first,
and older ones are reported missed; without it they are all reported missed and the
schedule continues at the first grid point after ``now``. Lateness never shifts the grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import islice

from postburner_py.timegrid.grid import TimeGrid

#: At most this many missed instants are listed per plan; the total is always counted.
MAX_LISTED_MISSED = 10_000
_EPSILON = timedelta(microseconds=1)


@dataclass(frozen=True)
class NextOccurrence:
    """The plan for one schedule: the ``run_at`` to queue next and what was missed before it."""

    run_at: datetime
    missed: list[datetime] = field(default_factory=list)
    missed_total: int = 0

    def is_due(self, now: datetime) -> bool:
        """True when ``run_at`` is not in the future: a missed occurrence caught up late."""
        return self.run_at <= now


def plan_next(
    grid: TimeGrid,
    *,
    baseline: datetime,
    now: datetime,
    catch_up: bool,
    window: timedelta,
) -> NextOccurrence:
    """The next occurrence to queue after ``baseline`` as seen at ``now``."""
    first = grid.next_after(baseline)
    if first > now:
        return NextOccurrence(run_at=first)
    if not catch_up:
        return _missed_until(grid, baseline, now, resume_at=grid.next_after(now))
    window_start = now - window
    if first >= window_start:
        return NextOccurrence(run_at=first)
    oldest_in_window = grid.next_after(window_start - _EPSILON)
    missed_end = window_start - _EPSILON
    if oldest_in_window <= now:
        return _missed_until(grid, baseline, missed_end, resume_at=oldest_in_window)
    return _missed_until(grid, baseline, now, resume_at=oldest_in_window)


def _missed_until(
    grid: TimeGrid, baseline: datetime, end: datetime, *, resume_at: datetime
) -> NextOccurrence:
    points = grid.between(baseline, end)
    listed = list(islice(points, MAX_LISTED_MISSED))
    total = len(listed) + sum(1 for _ in points)
    return NextOccurrence(run_at=resume_at, missed=listed, missed_total=total)
