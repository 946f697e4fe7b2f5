"""Planning a stored schedule row, which may hold what the API would have refused.

The API validates every field, but a row can be changed behind its back (raw SQL, another
application), and a timezone one host knows may be missing from another host's tzdata. The
time grid then raises while a pass, a worker's chaining or ``postburner status`` plans the
row. :func:`planning` turns whatever planning raises into one
:class:`~postburner_py.errors.UnplannableScheduleError` naming the schedule, so the caller
can set that row aside and go on with the others.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import islice
from typing import TYPE_CHECKING, Any

from postburner_py.errors import UnplannableScheduleError
from postburner_py.store import store_for
from postburner_py.timegrid.grid import TimeGrid, make_grid
from postburner_py.timegrid.occurrences import MAX_LISTED_MISSED, plan_next
from postburner_py.timegrid.window import WindowedGrid, WindowEnded

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

#: What the time grid raises for a bad stored value: ScheduleValidationError (a ValueError)
#: for a bad field, ValueError/OverflowError for a grid without a point in years 1-9999,
#: TypeError for a value of the wrong type (SQLite stores any type in any column).
PLANNING_ERRORS = (ValueError, ArithmeticError, TypeError)


@contextmanager
def planning(name: object) -> Iterator[None]:
    """Run the planning of the schedule ``name``; anything it raises because of the row
    becomes :class:`UnplannableScheduleError` (one line: the name and the reason)."""
    try:
        yield
    except UnplannableScheduleError:
        raise
    except PLANNING_ERRORS as exc:
        raise UnplannableScheduleError(str(name), reason(exc)) from None


def reason(exc: BaseException) -> str:
    """The first line of ``exc``'s message (its type when it has none)."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text or type(exc).__name__


def stored_grid(row: Any) -> TimeGrid:
    """The grid of a schedule row (a :class:`~postburner_py.store.models.Schedule` or a result row
    with its columns); raises :class:`UnplannableScheduleError` naming it."""
    with planning(row.name):
        return make_grid(
            cron=row.cron,
            anchor=row.anchor,
            interval=row.interval,
            interval_unit=row.interval_unit,
            timezone=row.timezone,
            dst_gap=row.dst_gap,
            dst_fold=row.dst_fold,
        )


def stored_window(row: Any) -> WindowedGrid:
    """The occurrence grid of a schedule row: its grid inside ``[starts_at, ends_at]``."""
    return WindowedGrid(stored_grid(row), row.starts_at, row.ends_at)


def catch_up_window(row: Any, default: timedelta) -> timedelta:
    """The row's own ``catch_up_window`` (seconds), else ``default`` (the global one)."""
    seconds = row.catch_up_window
    return default if seconds is None else timedelta(seconds=seconds)


def snapshot_window(snapshot: dict[str, Any]) -> timedelta | None:
    """The catch-up window a queued snapshot carries (None: the global one applies)."""
    seconds = snapshot.get("catch_up_window")
    return None if seconds is None else timedelta(seconds=seconds)


@dataclass(frozen=True)
class SchedulePlan:
    """What to queue next for one schedule, and what was missed before it.

    ``run_at`` None: the schedule's window has ended, nothing is queued. ``following`` is the
    point after ``run_at`` (the new execution's ``next_run_at``; None when none is left).
    """

    run_at: datetime | None
    following: datetime | None
    missed: list[datetime] = field(default_factory=list)
    missed_total: int = 0

    def is_due(self, now: datetime) -> bool:
        """True when ``run_at`` is not in the future: a missed occurrence caught up late."""
        return self.run_at is not None and self.run_at <= now


def plan_schedule(
    grid: WindowedGrid,
    *,
    baseline: datetime,
    now: datetime,
    catch_up: bool,
    window: timedelta,
    skipped: Collection[datetime] = (),
) -> SchedulePlan:
    """``plan_next`` on a windowed grid: the occurrence to queue after ``baseline`` as seen at
    ``now``, stepping over the points in ``skipped`` (skipped ahead by an operator). Once the
    window has ended every point since ``baseline`` is reported missed and nothing is next."""
    try:
        plan = plan_next(grid, baseline=baseline, now=now, catch_up=catch_up, window=window)
        run_at = plan.run_at
        while run_at in skipped:
            run_at = grid.next_after(run_at)
    except WindowEnded:
        points = grid.between(baseline, now)
        listed = list(islice(points, MAX_LISTED_MISSED))
        return SchedulePlan(None, None, listed, len(listed) + sum(1 for _ in points))
    try:
        following: datetime | None = grid.next_after(run_at)
    except WindowEnded:
        following = None
    return SchedulePlan(run_at, following, plan.missed, plan.missed_total)


def check_plannable(row: Any, now: datetime) -> None:
    """Raise :class:`UnplannableScheduleError` unless the row has a grid point after ``now``."""
    grid = stored_grid(row)
    with planning(row.name):
        grid.next_after(now)


class PlanChecker:
    """:func:`check_plannable` for many rows; rows sharing a time specification share it."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self._reasons: dict[tuple[Any, ...], str | None] = {}

    def reason(self, row: Any) -> str | None:
        """Why ``row`` cannot be planned, or None when it can."""
        spec = (
            row.cron,
            row.anchor,
            row.interval,
            row.interval_unit,
            row.timezone,
            row.dst_gap,
            row.dst_fold,
        )
        if spec not in self._reasons:
            try:
                check_plannable(row, self.now)
                self._reasons[spec] = None
            except UnplannableScheduleError as exc:
                self._reasons[spec] = exc.reason
        return self._reasons[spec]


def unloadable_schedules(
    session: Session, *, enabled_only: bool
) -> dict[int, UnplannableScheduleError]:
    """The schedules whose ``anchor`` or ``resumed_at`` holds something that is not an
    instant, in one query (only where instants are stored as text, i.e. SQLite; elsewhere the
    column types make this impossible: ``{}``).

    Such a row cannot be loaded, so it is found in SQL and set aside before the others are
    loaded in batches (``Store.unparsable_schedules``).
    """
    return store_for(session).unparsable_schedules(session, enabled_only=enabled_only)
