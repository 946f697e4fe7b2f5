"""Planning a stored schedule row, which may hold what the API would have refused.

The API validates every field, but a row can be changed behind its back (raw SQL, another
application), and a timezone one host knows may be missing from another host's tzdata. The
time grid then raises while a pass, a worker's chaining or ``postburner status`` plans the
row. :func:`planning` turns whatever planning raises into one
:class:`~postburner_py.errors.UnplannableScheduleError` naming the schedule, so the caller
can set that row aside and go on with the others.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from postburner_py.errors import UnplannableScheduleError
from postburner_py.store import store_for
from postburner_py.timegrid.grid import TimeGrid, make_grid

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
