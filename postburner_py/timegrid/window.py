"""A grid restricted to a run window ``[starts_at, ends_at]``, and finding grid points around
an instant. Pure: no I/O.

A schedule with ``starts_at`` / ``ends_at`` fires only at the points of its grid inside the
window (both ends included). Past the window there is no next point: :class:`WindowEnded`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

from postburner_py.timegrid.grid import TimeGrid

_EPSILON = timedelta(microseconds=1)
#: How far back :func:`point_before` looks before it gives up (a grid has at most a few
#: points a year, e.g. ``0 0 29 2 *``: leap days).
_LOOK_BACK_LIMIT = timedelta(days=366 * 9)


class WindowEnded(Exception):
    """The grid has no point after the instant asked for: its window has ended.

    Deliberately not a ``ValueError``: an ended schedule is not a row that cannot be planned.
    """

    def __init__(self, ends_at: datetime) -> None:
        self.ends_at = ends_at
        super().__init__(f"no occurrence after ends_at {ends_at.isoformat()}")


class WindowedGrid:
    """The points of ``grid`` that are at or after ``starts_at`` and at or before ``ends_at``
    (either None: unbounded on that side). A :class:`TimeGrid`, except that
    :meth:`next_after` raises :class:`WindowEnded` once no point is left."""

    def __init__(
        self, grid: TimeGrid, starts_at: datetime | None, ends_at: datetime | None
    ) -> None:
        self.grid = grid
        self.starts_at = starts_at
        self.ends_at = ends_at

    def __repr__(self) -> str:
        return f"WindowedGrid({self.grid!r}, {self.starts_at}, {self.ends_at})"

    def next_after(self, after: datetime) -> datetime:
        """The first point strictly after ``after`` inside the window."""
        if self.starts_at is not None and after < self.starts_at:
            after = self.starts_at - _EPSILON
        point = self.grid.next_after(after)
        if self.ends_at is not None and point > self.ends_at:
            raise WindowEnded(self.ends_at)
        return point

    def upcoming(self, count: int, after: datetime) -> list[datetime]:
        """Up to ``count`` points after ``after``, ascending (fewer once the window ends)."""
        points: list[datetime] = []
        try:
            while len(points) < count:
                after = self.next_after(after)
                points.append(after)
        except WindowEnded:
            pass
        return points

    def between(self, start: datetime, end: datetime) -> Iterator[datetime]:
        """Points ``p`` with ``start < p <= end`` inside the window, ascending."""
        if self.starts_at is not None and start < self.starts_at:
            start = self.starts_at - _EPSILON
        if self.ends_at is not None and end > self.ends_at:
            end = self.ends_at
        if end <= start:
            return iter(())
        return self.grid.between(start, end)

    def is_on_grid(self, instant: datetime) -> bool:
        """True when ``instant`` is a point of the grid inside the window."""
        return self.contains(instant) and self.grid.is_on_grid(instant)

    def contains(self, instant: datetime) -> bool:
        """True when ``instant`` is inside the window (whether or not on the grid)."""
        early = self.starts_at is not None and instant < self.starts_at
        late = self.ends_at is not None and instant > self.ends_at
        return not (early or late)


def point_before(grid: TimeGrid, instant: datetime) -> datetime | None:
    """The last grid point strictly before ``instant``, or None when there is none in the
    years :data:`_LOOK_BACK_LIMIT` covers. Looks back over spans that double each time."""
    span = timedelta(minutes=1)
    while span <= _LOOK_BACK_LIMIT * 2:
        start = instant - min(span, _LOOK_BACK_LIMIT)
        last = None
        for point in grid.between(start, instant - _EPSILON):
            last = point
        if last is not None:
            return last
        if span >= _LOOK_BACK_LIMIT:
            return None
        span *= 4
    return None
