"""Time grids: the instants at which a schedule fires. Pure time math, no I/O.

A schedule fires on a *grid*, built by :func:`make_grid` from either a cron expression
(:class:`CronGrid`) or an anchor plus a fixed interval (:class:`IntervalGrid`), in the
schedule's IANA timezone, with the schedule's DST policy
(:class:`~postburner_py.timegrid.dst.DstPolicy`). Every grid answers the same four
questions (:class:`TimeGrid`): the next point after an instant, the next *n* points, the
points in a range, and whether an instant is a point. Inputs must be timezone-aware (naive
datetimes raise ``ValueError``); outputs are aware UTC. Grid points are whole seconds.

DST, for cron and for calendar intervals (days, weeks, months, years):

* *Hourly-or-faster* crons (the hour field matches all 24 hours: ``*/30 * * * *``,
  ``7 * * * *``) follow elapsed time: they fire at every instant the local clock shows a
  matching time. Through a fold both occurrences fire; in a gap the skipped times do not,
  so the spacing in elapsed time stays what it is on any other day.
* Every other schedule has fixed hours and follows its policy: a time a gap skips fires at
  the first instant after the gap (``dst_gap="shift"``, several such times fire once) or
  not that day (``"skip"``); a time a fold repeats fires at its first occurrence
  (``dst_fold="first"``), its second (``"last"``) or both (``"both"``).

Cron grids find the next matching local wall time one stretch of constant UTC offset at a
time, so they never fire an instant twice (croniter alone fires ``30 2 * * *`` twice on a
fold).
"""

from __future__ import annotations

import calendar
from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

from postburner_py.errors import ScheduleValidationError
from postburner_py.timegrid.cron import MACROS, parse_cron, validate_cron
from postburner_py.timegrid.dst import DEFAULT_DST_FOLD, DEFAULT_DST_GAP, DstPolicy
from postburner_py.timegrid.instants import (
    DAY,
    instant,
    instant_seconds,
    naive,
    wall_seconds,
)
from postburner_py.timegrid.zones import (
    Transition,
    local_wall,
    next_transition,
    offset_at,
    previous_transition,
    validate_timezone,
    wall_instants,
)

__all__ = [
    "INTERVAL_UNITS",
    "MACROS",
    "CronGrid",
    "IntervalGrid",
    "TimeGrid",
    "make_grid",
    "validate_cron",
    "validate_timezone",
]

INTERVAL_UNITS: tuple[str, ...] = (
    "seconds",
    "minutes",
    "hours",
    "days",
    "weeks",
    "months",
    "years",
)

_ELAPSED_UNIT_SECONDS = {"seconds": 1, "minutes": 60, "hours": 3600}
_CALENDAR_UNIT_DAYS = {"days": 1, "weeks": 7}
_CALENDAR_UNIT_MONTHS = {"months": 1, "years": 12}

_SEARCH_WINDOW = 366 * DAY  # a cron search looks at most this far ahead per step
_LAST_SEARCHABLE = wall_seconds(datetime(9998, 1, 1))
#: The Gregorian calendar repeats every 400 years (146,097 days, a whole number of weeks), so
#: a cron without a point in a longer span has none at all: every matching time falls in a
#: DST gap its ``dst_gap="skip"`` drops (``30 2 * 3 SUNL`` in Europe/Prague).
_NEVER_AFTER = 146_097 * DAY + _SEARCH_WINDOW
_FOLD_LOOKBACK = 2 * DAY  # longer than any fold in tzdata


@runtime_checkable
class TimeGrid(Protocol):
    """The instants at which a schedule fires. Inputs aware (any zone), outputs aware UTC."""

    def next_after(self, after: datetime) -> datetime:
        """The first grid point strictly after ``after``."""
        ...

    def upcoming(self, count: int, after: datetime) -> list[datetime]:
        """The first ``count`` grid points strictly after ``after``, ascending."""
        ...

    def between(self, start: datetime, end: datetime) -> Iterator[datetime]:
        """Grid points ``p`` with ``start < p <= end``, ascending."""
        ...

    def is_on_grid(self, instant: datetime) -> bool:
        """True when ``instant`` is exactly a grid point."""
        ...


class _Grid(ABC):
    """TimeGrid implemented over one primitive: the first point at or after a UTC second."""

    @abstractmethod
    def _first_at_or_after(self, moment: int) -> int:
        """The first grid point (UTC seconds) ``>= moment``."""

    def next_after(self, after: datetime) -> datetime:
        """The first grid point strictly after ``after`` (aware; naive raises ValueError)."""
        return instant(self._first_at_or_after(instant_seconds(after, "after") + 1))

    def upcoming(self, count: int, after: datetime) -> list[datetime]:
        """The first ``count`` grid points strictly after ``after``, ascending."""
        if count < 0:
            raise ValueError(f"count must not be negative, got {count}")
        moment = instant_seconds(after, "after") + 1
        points: list[datetime] = []
        for _ in range(count):
            point = self._first_at_or_after(moment)
            points.append(instant(point))
            moment = point + 1
        return points

    def between(self, start: datetime, end: datetime) -> Iterator[datetime]:
        """Grid points ``p`` with ``start < p <= end``, ascending (lazily computed)."""
        first = instant_seconds(start, "start") + 1
        last = instant_seconds(end, "end")
        return self._points(first, last)

    def _points(self, first: int, last: int) -> Iterator[datetime]:
        point = self._first_at_or_after(first)
        while point <= last:
            yield instant(point)
            point = self._first_at_or_after(point + 1)

    def is_on_grid(self, instant: datetime) -> bool:
        """True when ``instant`` is exactly a grid point (so never with a fraction of a second)."""
        seconds = instant_seconds(instant, "instant")
        if instant - _instant(seconds):
            return False
        return self._first_at_or_after(seconds) == seconds


_instant = instant


class CronGrid(_Grid):
    """Points of a cron expression evaluated in an IANA timezone, by the module's DST rules.

    See :func:`validate_cron` for the accepted syntax; six fields mean a leading seconds
    field. ``dst_gap`` and ``dst_fold`` apply when the hour field names fixed hours
    (:attr:`hourly_or_faster` is False). Raises :class:`ScheduleValidationError` for a bad
    expression, timezone or policy.
    """

    def __init__(
        self,
        expression: str,
        timezone: str = "UTC",
        *,
        dst_gap: str = DEFAULT_DST_GAP,
        dst_fold: str = DEFAULT_DST_FOLD,
    ) -> None:
        self.expression, self._spec = parse_cron(validate_cron(expression))
        self._zone = validate_timezone(timezone)
        self.timezone = timezone
        self.policy = DstPolicy(dst_gap, dst_fold)
        self.hourly_or_faster = self._spec.every_hour
        elapsed = self.hourly_or_faster
        self._first_of_fold = elapsed or self.policy.fires_first_occurrence
        self._second_of_fold = elapsed or self.policy.fires_second_occurrence
        self._shift_gaps = not elapsed and self.policy.shifts_gaps

    def __repr__(self) -> str:
        policy = (
            ""
            if self.policy == DstPolicy()
            else (f", dst_gap={self.policy.gap!r}, dst_fold={self.policy.fold!r}")
        )
        return f"CronGrid({self.expression!r}, timezone={self.timezone!r}{policy})"

    def _first_at_or_after(self, moment: int) -> int:
        # Walk stretches of constant UTC offset; in each, the first matching wall time at
        # or after `floor` (local seconds) is the answer. Offset changes decide what the
        # wall times they skip (gap) or repeat (fold) do.
        position = moment - 1  # every instant after `position` is still a candidate
        offset = offset_at(self._zone, position)
        floor = moment + offset
        if not self._second_of_fold:
            floor = self._skip_repeated_walls(position, floor)
        give_up = min(_LAST_SEARCHABLE, moment + _NEVER_AFTER)
        while position < give_up:
            change = next_transition(self._zone, position, position + _SEARCH_WINDOW)
            boundary = change.at if change else position + _SEARCH_WINDOW
            wall = self._spec.first_match(
                naive(floor), naive(self._stretch_end(change, boundary, offset))
            )
            if wall is not None:
                return wall_seconds(wall) - offset
            if change is not None and self._fires_in_gap(change):
                return change.at
            floor = boundary + self._resume_offset(change, offset)
            position, offset = boundary, (change.after if change else offset)
        if give_up < _LAST_SEARCHABLE:
            raise ScheduleValidationError(
                "dst_gap",
                f"{self.expression!r} in {self.timezone} never fires with 'skip': every time "
                "it matches falls in a DST gap; use 'shift' or another time",
            )
        raise ValueError(f"{self!r} has no point before year 9998")

    def _stretch_end(self, change: Transition | None, boundary: int, offset: int) -> int:
        """The first wall time (local seconds) not to look for before ``change``."""
        if change is not None and not change.is_gap and not self._first_of_fold:
            return change.at + change.after  # the walls a fold repeats fire the second time
        return boundary + offset

    def _skip_repeated_walls(self, position: int, floor: int) -> int:
        """Raise ``floor`` past wall times a recent fold repeats: they fired the first time."""
        change = previous_transition(self._zone, position, position - _FOLD_LOOKBACK)
        if change is None or change.is_gap:
            return floor
        return max(floor, change.at + change.before)

    def _fires_in_gap(self, change: Transition) -> bool:
        if not change.is_gap or not self._shift_gaps:
            return False
        skipped_from = naive(change.at + change.before)
        return self._spec.first_match(skipped_from, naive(change.at + change.after)) is not None

    def _resume_offset(self, change: Transition | None, offset: int) -> int:
        """Offset giving the first wall time to search after ``change`` (None: no change)."""
        if change is None:
            return offset
        if not change.is_gap and not self._second_of_fold:
            return change.before  # skip the walls a fold repeats: they fired already
        return change.after


class IntervalGrid(_Grid):
    """Points ``anchor + N * interval`` for every integer N, negative ones included.

    ``seconds``, ``minutes`` and ``hours`` are elapsed time. ``days``, ``weeks``, ``months``
    and ``years`` are calendar steps of the anchor's local wall time in ``timezone``, always
    counted from the anchor (Jan 31 + 1 month = Feb 28, + 2 months = Mar 31), with the DST
    policy (``dst_gap``, ``dst_fold``) applied to the wall time reached; the anchor itself
    is always a point. The anchor is truncated to the whole second.
    Raises :class:`ScheduleValidationError` naming the offending argument.
    """

    def __init__(
        self,
        anchor: datetime,
        interval: int,
        unit: str,
        timezone: str = "UTC",
        *,
        dst_gap: str = DEFAULT_DST_GAP,
        dst_fold: str = DEFAULT_DST_FOLD,
    ) -> None:
        self._anchor = _anchor_seconds(anchor)
        self.interval = _checked_interval(interval)
        self.unit = _checked_unit(unit)
        self._zone = validate_timezone(timezone)
        self.timezone = timezone
        self.policy = DstPolicy(dst_gap, dst_fold)
        self.anchor = instant(self._anchor)
        self._step = interval * _ELAPSED_UNIT_SECONDS.get(unit, 0)
        self.hourly_or_faster = bool(self._step)
        self._days = interval * _CALENDAR_UNIT_DAYS.get(unit, 0)
        self._months = interval * _CALENDAR_UNIT_MONTHS.get(unit, 0)
        self._anchor_wall = local_wall(self._zone, self._anchor)

    def __repr__(self) -> str:
        return (
            f"IntervalGrid({self.anchor.isoformat()!r}, {self.interval}, {self.unit!r}, "
            f"timezone={self.timezone!r})"
        )

    def _first_at_or_after(self, moment: int) -> int:
        if self._step:
            return self._anchor - (self._anchor - moment) // self._step * self._step
        index = self._estimate_index(moment)
        while self._latest(index - 1) >= moment:
            index -= 1
        while True:
            for point in self._points_of(index):
                if point >= moment:
                    return point
            index += 1

    def _estimate_index(self, moment: int) -> int:
        wall, anchor = local_wall(self._zone, moment), self._anchor_wall
        if self._days:
            return (wall.date() - anchor.date()).days // self._days
        return ((wall.year - anchor.year) * 12 + wall.month - anchor.month) // self._months

    def _latest(self, index: int) -> int:
        """The last instant showing step ``index``'s wall time (or ending its gap): an upper
        bound of its points that grows with ``index``."""
        if index == 0:
            return max(self._anchor, *self._points_of(0))
        found = wall_instants(self._zone, self._wall(index))
        return found.shown[-1] if found.shown else found.after_gap or 0

    def _points_of(self, index: int) -> tuple[int, ...]:
        """The points of step ``index``, ascending: none, one, or two (a fold, ``both``)."""
        if index == 0:
            return self._anchor_points()
        return self.policy.instants(wall_instants(self._zone, self._wall(index)))

    def _anchor_points(self) -> tuple[int, ...]:
        if self.policy.fold != "both":
            return (self._anchor,)
        shown = wall_instants(self._zone, self._anchor_wall).shown
        return tuple(sorted({self._anchor, *shown}))

    def _wall(self, index: int) -> datetime:
        try:
            if self._days:
                return self._anchor_wall + timedelta(days=index * self._days)
            return _add_months(self._anchor_wall, index * self._months)
        except (OverflowError, ValueError):
            raise ValueError(f"{self!r} has no point {index} within years 1-9999") from None


def _add_months(wall: datetime, months: int) -> datetime:
    """``wall`` moved by whole months, the day clamped to the target month's length."""
    year, month_index = divmod(wall.year * 12 + wall.month - 1 + months, 12)
    day = min(wall.day, calendar.monthrange(year, month_index + 1)[1])
    return wall.replace(year=year, month=month_index + 1, day=day)


def _anchor_seconds(anchor: object) -> int:
    if not isinstance(anchor, datetime):
        raise ScheduleValidationError(
            "anchor", f"expected an aware datetime, got {type(anchor).__name__}"
        )
    if anchor.tzinfo is None or anchor.utcoffset() is None:
        raise ScheduleValidationError(
            "anchor",
            f"naive datetime {anchor.isoformat()} refused: pass an aware datetime, "
            "e.g. datetime(2025, 1, 31, 10, 0, tzinfo=UTC)",
        )
    return instant_seconds(anchor, "anchor")


def _checked_interval(interval: object) -> int:
    if isinstance(interval, bool) or not isinstance(interval, int):
        raise ScheduleValidationError(
            "interval", f"expected a positive whole number of interval units, got {interval!r}"
        )
    if interval <= 0:
        raise ScheduleValidationError(
            "interval", f"must be a positive whole number, got {interval}"
        )
    return interval


def _checked_unit(unit: object) -> str:
    if isinstance(unit, str) and unit in INTERVAL_UNITS:
        return unit
    hint = ""
    if isinstance(unit, str) and f"{unit.strip().lower()}s" in INTERVAL_UNITS:
        hint = f" (did you mean {unit.strip().lower() + 's'!r}?)"
    raise ScheduleValidationError(
        "interval_unit", f"unknown unit {unit!r}{hint}; use one of: {', '.join(INTERVAL_UNITS)}"
    )


def make_grid(
    *,
    cron: str | None,
    anchor: datetime | None,
    interval: int | None,
    interval_unit: str | None,
    timezone: str = "UTC",
    dst_gap: str = DEFAULT_DST_GAP,
    dst_fold: str = DEFAULT_DST_FOLD,
) -> TimeGrid:
    """The grid of a schedule: a :class:`CronGrid` or an :class:`IntervalGrid`.

    Give either ``cron`` or ``anchor`` + ``interval`` + ``interval_unit``. Everything is
    validated; :class:`ScheduleValidationError` names the field to fix (``cron``,
    ``timezone``, ``anchor``, ``interval``, ``interval_unit``, ``dst_gap`` or ``dst_fold``).
    """
    interval_given = anchor is not None or interval is not None or interval_unit is not None
    if cron is not None and interval_given:
        raise ScheduleValidationError(
            "cron", "give either cron or anchor+interval+interval_unit, not both"
        )
    if cron is not None:
        return CronGrid(cron, timezone, dst_gap=dst_gap, dst_fold=dst_fold)
    if not interval_given:
        raise ScheduleValidationError(
            "cron", "give either cron or anchor+interval+interval_unit; neither was given"
        )
    if anchor is None:
        raise ScheduleValidationError(
            "anchor",
            "an interval schedule needs an anchor, the aware datetime its grid counts from",
        )
    if interval is None:
        raise ScheduleValidationError(
            "interval", "an interval schedule needs an interval, a positive whole number"
        )
    if interval_unit is None:
        raise ScheduleValidationError(
            "interval_unit",
            f"an interval schedule needs a unit, one of: {', '.join(INTERVAL_UNITS)}",
        )
    return IntervalGrid(
        anchor, interval, interval_unit, timezone, dst_gap=dst_gap, dst_fold=dst_fold
    )
