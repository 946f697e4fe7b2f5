"""Which days of a month a cron expression's two day fields select. Pure, no I/O.

Plain values (numbers, ranges, steps, lists) and the Quartz/croner extensions: in
day-of-month ``L`` (the last day), ``L-n`` (n days before it), ``LW`` (the last weekday,
Monday to Friday) and ``nW`` (the weekday nearest day n, never crossing into another month);
in day-of-week ``dL`` or ``d#L`` (the last weekday d of the month) and ``d#k`` (the k-th).

The two fields combine as in Vixie cron: when either field starts with ``*`` (or is ``?``)
a day must match both, so ``0 0 */2 * MON`` is the odd-numbered Mondays and ``0 0 * * MON``
every Monday; otherwise a day matches when either field does, so ``0 0 13 * FRI`` is every
13th and every Friday.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field

#: Day-of-week numbers: 0 is Sunday, 6 Saturday.
SATURDAY, SUNDAY = 6, 0
_CACHED_MONTHS = 4096


@dataclass(frozen=True)
class MonthShape:
    """What the extensions need to know of one month: its length and its first weekday."""

    length: int
    first_weekday: int  # 0 is Sunday

    @staticmethod
    def of(year: int, month: int) -> MonthShape:
        monday_based, length = calendar.monthrange(year, month)
        return MonthShape(length, (monday_based + 1) % 7)

    def weekday(self, day: int) -> int:
        """The weekday (0 is Sunday) of ``day``."""
        return (self.first_weekday + day - 1) % 7


@dataclass(frozen=True)
class LastDay:
    """``L`` (``before`` = 0) or ``L-n``: the month's last day, ``before`` days earlier."""

    before: int = 0

    def day_in(self, month: MonthShape) -> int | None:
        day = month.length - self.before
        return day if day >= 1 else None


@dataclass(frozen=True)
class LastWeekday:
    """``LW``: the last Monday-to-Friday of the month."""

    def day_in(self, month: MonthShape) -> int | None:
        return _weekday_at_or_before(month, month.length)


@dataclass(frozen=True)
class NearestWeekday:
    """``nW``: the Monday-to-Friday nearest day ``n``, within the month (none if no day n).

    A Saturday moves to the Friday before, a Sunday to the Monday after, unless that leaves
    the month: ``1W`` on a Saturday is Monday the 3rd, ``31W`` on a Sunday is Friday the 29th.
    """

    day: int

    def day_in(self, month: MonthShape) -> int | None:
        if self.day > month.length:
            return None
        weekday = month.weekday(self.day)
        if weekday == SATURDAY:
            return self.day - 1 if self.day > 1 else self.day + 2
        if weekday == SUNDAY:
            return self.day + 1 if self.day < month.length else self.day - 2
        return self.day


@dataclass(frozen=True)
class NthWeekday:
    """``d#k``: the ``nth`` (1-5) weekday ``weekday`` of the month (none without a k-th)."""

    weekday: int
    nth: int

    def day_in(self, month: MonthShape) -> int | None:
        day = 1 + (self.weekday - month.first_weekday) % 7 + 7 * (self.nth - 1)
        return day if day <= month.length else None


@dataclass(frozen=True)
class LastWeekdayOf:
    """``dL`` or ``d#L``: the last weekday ``weekday`` of the month."""

    weekday: int

    def day_in(self, month: MonthShape) -> int | None:
        return month.length - (month.weekday(month.length) - self.weekday) % 7


def _weekday_at_or_before(month: MonthShape, day: int) -> int:
    weekday = month.weekday(day)
    return day - {SATURDAY: 1, SUNDAY: 2}.get(weekday, 0)


DayOfMonthRule = LastDay | LastWeekday | NearestWeekday
DayOfWeekRule = NthWeekday | LastWeekdayOf


@dataclass(frozen=True, eq=False)
class DaySelection:
    """The days both day fields select, combined by the Vixie rule; computed once per month."""

    month_days: frozenset[int]
    month_rules: tuple[DayOfMonthRule, ...]
    weekdays: frozenset[int]
    weekday_rules: tuple[DayOfWeekRule, ...]
    either: bool  # neither field starts with '*': a day matches when either field does
    _months: dict[int, tuple[int, ...]] = field(default_factory=dict, repr=False)

    def days_of(self, year: int, month: int) -> tuple[int, ...]:
        """The selected days of ``month`` in ``year``, ascending."""
        key = year * 12 + month
        days = self._months.get(key)
        if days is None:
            if len(self._months) >= _CACHED_MONTHS:
                self._months.clear()
            days = self._months[key] = self._compute(MonthShape.of(year, month))
        return days

    def _compute(self, month: MonthShape) -> tuple[int, ...]:
        by_month = {day for day in self.month_days if day <= month.length}
        by_month.update(d for d in (r.day_in(month) for r in self.month_rules) if d is not None)
        by_week = {day for day in range(1, month.length + 1) if month.weekday(day) in self.weekdays}
        by_week.update(d for d in (r.day_in(month) for r in self.weekday_rules) if d is not None)
        return tuple(sorted(by_month | by_week if self.either else by_month & by_week))
