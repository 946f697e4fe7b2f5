"""Time grids: the instants at which a schedule fires. Pure time math, no I/O.

A schedule fires on a *grid*, built by :func:`make_grid` from either a cron expression
(:class:`CronGrid`) or an anchor plus a fixed interval (:class:`IntervalGrid`), in the
schedule's IANA timezone. Every grid answers the same four questions (:class:`TimeGrid`):
the next point after an instant, the next *n* points, the points in a range, and whether
an instant is a point. Inputs must be timezone-aware (naive datetimes raise ``ValueError``);
outputs are aware UTC. Grid points are whole seconds.

DST policy, the same for cron and for calendar intervals (days, weeks, months, years):

* A local time that does not exist (the spring gap) fires once, at the first instant after
  the gap: ``30 2 * * *`` in Europe/Prague fires at 03:00+02:00 on 2025-03-30. Several
  wall times inside one gap collapse into that one instant, which fires once.
* A local time that happens twice (the autumn fold) fires once, at its first occurrence,
  when the schedule names fixed hours: ``30 2 * * *`` fires at 02:30+02:00 on 2025-10-26,
  not again at 02:30+01:00.
* A cron whose hour field matches every hour (``*/30 * * * *``, ``0 * * * *``) follows real
  elapsed time instead: through the fold both occurrences fire, so points stay evenly
  spaced in elapsed time.

Cron grids find the next matching local wall time one stretch of constant UTC offset at a
time, so they never fire an instant twice (croniter alone fires ``30 2 * * *`` twice on a
fold). The offset changes of a zone are found by sampling it daily and bisecting, cached per
zone and year: exact because no tzdata zone since 1900 changes offset twice within a day
(the closest pair is four days apart).
"""

from __future__ import annotations

import calendar
import difflib
from abc import ABC, abstractmethod
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import NamedTuple, Protocol, runtime_checkable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from postburner_py.errors import ScheduleValidationError

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

_SECOND = timedelta(seconds=1)
_DAY = 86_400
_EPOCH = datetime(1970, 1, 1)  # naive: epoch of UTC seconds and of local wall-clock seconds
_EPOCH_UTC = _EPOCH.replace(tzinfo=UTC)
_SEARCH_WINDOW = 366 * _DAY  # a cron search looks at most this far ahead per step
_LAST_SEARCHABLE = (datetime(9998, 1, 1) - _EPOCH) // _SECOND
_FOLD_LOOKBACK = 2 * _DAY  # longer than any fold in tzdata

_CRON_EXAMPLE = "example: '*/15 * * * *' (every 15 minutes) or '30 2 * * 1-5' (02:30 on weekdays)"
_ZONE_EXAMPLE = "use an IANA name such as 'Europe/Prague', 'America/New_York' or 'UTC'"


# --------------------------------------------------------------------------- instants


def _seconds(wall: datetime) -> int:
    """Whole seconds of a naive datetime since the naive epoch (floor)."""
    return (wall - _EPOCH) // _SECOND


def _naive(seconds: int) -> datetime:
    return _EPOCH + timedelta(seconds=seconds)


def _instant(seconds: int) -> datetime:
    """Aware UTC datetime of a UTC-seconds value."""
    return _EPOCH_UTC + timedelta(seconds=seconds)


def _instant_seconds(value: object, name: str) -> int:
    """UTC seconds of an aware datetime, rounded down; naive datetimes are refused."""
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be an aware datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"naive datetime {value.isoformat()} refused as {name}: "
            "pass an aware datetime, e.g. datetime.now(UTC)"
        )
    return (value - _EPOCH_UTC) // _SECOND


# --------------------------------------------------------------------------- timezones


def validate_timezone(name: str) -> ZoneInfo:
    """Load the IANA timezone ``name``.

    Raises :class:`ScheduleValidationError` (field ``timezone``) for anything that is not
    a known IANA name, suggesting the closest known name when there is one.
    """
    return _load_zone(name)


def _load_zone(name: object) -> ZoneInfo:
    if not isinstance(name, str) or not name.strip():
        raise ScheduleValidationError(
            "timezone", f"expected a timezone name, got {name!r}; {_ZONE_EXAMPLE}"
        )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ScheduleValidationError(
            "timezone", f"unknown timezone {name!r}{_zone_hint(name)}; {_ZONE_EXAMPLE}"
        ) from None


def _zone_hint(name: str) -> str:
    by_folded = {key.casefold(): key for key in _known_zones()}
    close = difflib.get_close_matches(name.strip().casefold(), list(by_folded), n=1)
    return f" (did you mean {by_folded[close[0]]!r}?)" if close else ""


@lru_cache(maxsize=1)
def _known_zones() -> frozenset[str]:
    return frozenset(available_timezones())


def _offset_at(zone: ZoneInfo, instant: int) -> int:
    """UTC offset in seconds in force at ``instant`` (UTC seconds)."""
    offset = datetime.fromtimestamp(instant, zone).utcoffset()
    assert offset is not None  # a ZoneInfo always knows its offset
    return offset // _SECOND


def _local_wall(zone: ZoneInfo, instant: int) -> datetime:
    return _naive(instant + _offset_at(zone, instant))


class _Transition(NamedTuple):
    """A change of UTC offset: ``before`` is in force until ``at``, ``after`` from ``at`` on."""

    at: int
    before: int
    after: int


@lru_cache(maxsize=4096)
def _transitions_in_year(zone: ZoneInfo, year: int) -> tuple[_Transition, ...]:
    """Offset changes in (Jan 1 of ``year``, Jan 1 of the next year], UTC."""
    if not 2 <= year <= 9998:
        return ()
    start = _seconds(datetime(year, 1, 1))
    end = start + (366 if calendar.isleap(year) else 365) * _DAY
    found: list[_Transition] = []
    low, low_offset = start, _offset_at(zone, start)
    for sample in range(start + _DAY, end + 1, _DAY):
        offset = _offset_at(zone, sample)
        if offset != low_offset:
            at = _first_change(zone, low, sample, low_offset)
            found.append(_Transition(at, low_offset, _offset_at(zone, at)))
        low, low_offset = sample, offset
    return tuple(found)


def _first_change(zone: ZoneInfo, low: int, high: int, low_offset: int) -> int:
    """Smallest instant in (low, high] whose offset differs from ``low_offset`` (one change)."""
    while high - low > 1:
        middle = (low + high) // 2
        if _offset_at(zone, middle) == low_offset:
            low = middle
        else:
            high = middle
    return high


def _utc_year(instant: int) -> int:
    return _naive(instant).year


def _next_transition(zone: ZoneInfo, after: int, limit: int) -> _Transition | None:
    """First offset change at an instant in (after, limit]."""
    for year in range(_utc_year(after), _utc_year(limit) + 1):
        for change in _transitions_in_year(zone, year):
            if change.at > after:
                return change if change.at <= limit else None
    return None


def _previous_transition(zone: ZoneInfo, at_or_before: int, since: int) -> _Transition | None:
    """Last offset change at an instant in (since, at_or_before]."""
    for year in range(_utc_year(at_or_before), _utc_year(since) - 2, -1):
        for change in reversed(_transitions_in_year(zone, year)):
            if change.at <= at_or_before:
                return change if change.at > since else None
    return None


def _wall_to_instant(zone: ZoneInfo, wall: datetime) -> int:
    """UTC seconds at which the local ``wall`` time fires, by the DST policy.

    A wall time repeated by a fold maps to its first occurrence; one skipped by a gap maps
    to the first instant after the gap.
    """
    local = wall.replace(tzinfo=zone, fold=0)
    first = local.utcoffset()
    second = local.replace(fold=1).utcoffset()
    assert first is not None and second is not None  # a ZoneInfo always knows its offset
    base = _seconds(wall)
    if first >= second:
        return base - first // _SECOND
    return _first_change(zone, base - second // _SECOND, base - first // _SECOND, first // _SECOND)


# --------------------------------------------------------------------------- cron parsing


class _CronSyntaxError(Exception):
    """Why one cron field is invalid; turned into a ScheduleValidationError by the parser."""


@dataclass(frozen=True)
class _FieldKind:
    name: str
    low: int
    high: int
    names: dict[str, int] = field(default_factory=dict)
    allows_question_mark: bool = False


_MONTH_NAMES = {name.upper(): number for number, name in enumerate(calendar.month_abbr) if name}
_DAY_NAMES = {"SUN": 0, "MON": 1, "TUE": 2, "WED": 3, "THU": 4, "FRI": 5, "SAT": 6}
_FIELD_KINDS = (
    _FieldKind("second", 0, 59),
    _FieldKind("minute", 0, 59),
    _FieldKind("hour", 0, 23),
    _FieldKind("day-of-month", 1, 31, allows_question_mark=True),
    _FieldKind("month", 1, 12, _MONTH_NAMES),
    _FieldKind("day-of-week", 0, 7, _DAY_NAMES, allows_question_mark=True),
)
#: Cron macros and the five fields each stands for.
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_LONGEST_MONTH = {month: calendar.monthrange(2024, month)[1] for month in range(1, 13)}


@dataclass(frozen=True)
class _CronSpec:
    """The parsed fields of a cron expression, matched against local wall times."""

    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: tuple[int, ...]
    weekdays: frozenset[int]  # 0 is Sunday
    either_day: bool  # both day fields restricted: a day matches when either one does

    @property
    def every_hour(self) -> bool:
        return len(self.hours) == 24

    def day_matches(self, day: date) -> bool:
        in_days = day.day in self.days
        in_weekdays = day.isoweekday() % 7 in self.weekdays
        return (in_days or in_weekdays) if self.either_day else (in_days and in_weekdays)

    def first_match(self, start: datetime, end: datetime) -> datetime | None:
        """The first matching wall time ``w`` with ``start <= w < end``."""
        day, clock = start.date(), start.time()
        last_day = end.date()
        while day <= last_day:
            matching = self._first_day(day, last_day)
            if matching is None:
                return None
            hit = self._first_clock(clock if matching == day else time())
            if hit is not None:
                found = datetime.combine(matching, hit)
                return found if found < end else None
            day, clock = matching + timedelta(days=1), time()
        return None

    def _first_day(self, day: date, last_day: date) -> date | None:
        while day <= last_day:
            if day.month not in self.months:
                day = self._next_month_start(day)
            elif self.day_matches(day):
                return day
            else:
                day += timedelta(days=1)
        return None

    def _next_month_start(self, day: date) -> date:
        index = bisect_right(self.months, day.month)
        if index < len(self.months):
            return date(day.year, self.months[index], 1)
        return date(day.year + 1, self.months[0], 1)

    def _first_clock(self, clock: time) -> time | None:
        """The first matching time of day at or after ``clock``."""
        hours, minutes, seconds = self.hours, self.minutes, self.seconds
        h = bisect_left(hours, clock.hour)
        if h == len(hours):
            return None
        if hours[h] > clock.hour:
            return time(hours[h], minutes[0], seconds[0])
        m = bisect_left(minutes, clock.minute)
        if m < len(minutes) and minutes[m] > clock.minute:
            return time(clock.hour, minutes[m], seconds[0])
        if m < len(minutes):
            s = bisect_left(seconds, clock.second)
            if s < len(seconds):
                return time(clock.hour, clock.minute, seconds[s])
            if m + 1 < len(minutes):
                return time(clock.hour, minutes[m + 1], seconds[0])
        if h + 1 < len(hours):
            return time(hours[h + 1], minutes[0], seconds[0])
        return None


def validate_cron(expression: str) -> str:
    """Check a cron expression and return it normalised.

    Accepted: five fields ``minute hour day-of-month month day-of-week``; six fields with a
    leading seconds field (``second minute hour ...``, as Quartz and APScheduler order them);
    the macros ``@yearly @annually @monthly @weekly @daily @midnight @hourly``. Fields take
    numbers, month and weekday names (``JAN``, ``MON``), ``*``, ranges ``a-b``, steps
    ``*/n``, ``a-b/n`` and ``a/n``, and lists ``a,b``; day-of-week 0 and 7 are Sunday; ``?``
    means ``*`` in the day fields. When both day fields are restricted (neither is ``*``),
    a day matches when either one does, as in POSIX cron and croniter.

    The normal form collapses whitespace, lower-cases macros and upper-cases names.
    Raises :class:`ScheduleValidationError` (field ``cron``) saying what is wrong.
    """
    if not isinstance(expression, str):
        raise ScheduleValidationError(
            "cron", f"expected a cron expression string, got {expression!r}"
        )
    return _parse_cron(expression)[0]


@lru_cache(maxsize=1024)
def _parse_cron(expression: str) -> tuple[str, _CronSpec]:
    try:
        normalised, texts = _split_cron(expression)
        values = [_parse_field(text, kind) for text, kind in zip(texts, _FIELD_KINDS, strict=True)]
        spec = _CronSpec(
            seconds=tuple(sorted(values[0])),
            minutes=tuple(sorted(values[1])),
            hours=tuple(sorted(values[2])),
            days=frozenset(values[3]),
            months=tuple(sorted(values[4])),
            weekdays=frozenset(values[5]),
            either_day=texts[3] not in ("*", "?") and texts[5] not in ("*", "?"),
        )
        _check_fires(spec, texts[3])
    except _CronSyntaxError as error:
        raise ScheduleValidationError(
            "cron", f"{expression!r} is not a valid cron expression: {error}; {_CRON_EXAMPLE}"
        ) from None
    return normalised, spec


def _split_cron(expression: str) -> tuple[str, list[str]]:
    """Normal form and the six field texts (seconds first) of an expression."""
    text = " ".join(expression.split())
    if not text:
        raise _CronSyntaxError("it is empty")
    if text.startswith("@"):
        macro = text.lower()
        if macro not in MACROS:
            raise _CronSyntaxError(f"unknown macro {text!r}, use one of {', '.join(MACROS)}")
        return macro, ["0", *MACROS[macro].split()]
    texts = text.upper().split()
    if len(texts) == 5:
        return " ".join(texts), ["0", *texts]
    if len(texts) == 6:
        return " ".join(texts), texts
    raise _CronSyntaxError(
        f"it has {len(texts)} fields, expected 5 (minute hour day-of-month month day-of-week) "
        "or 6 (a leading seconds field, then those five)"
    )


def _parse_field(text: str, kind: _FieldKind) -> set[int]:
    values: set[int] = set()
    for item in text.split(","):
        values |= _parse_item(item, text, kind)
    if kind.high == 7 and 7 in values:  # day-of-week 7 is Sunday too
        values = (values - {7}) | {0}
    return values


def _parse_item(item: str, text: str, kind: _FieldKind) -> set[int]:
    if not item:
        raise _CronSyntaxError(f"{kind.name} field {text!r} has an empty list item")
    base, has_step, step_text = item.partition("/")
    step = _parse_step(step_text, kind) if has_step else 1
    if base == "*" or (base == "?" and kind.allows_question_mark and not has_step):
        low, high = kind.low, kind.high
    elif "-" in base:
        low, high = (_parse_value(part, kind) for part in base.split("-", 1))
        if low > high:
            raise _CronSyntaxError(
                f"{kind.name} range {base} runs backwards, write the low value first"
            )
    else:
        low = _parse_value(base, kind)
        high = kind.high if has_step else low
    return set(range(low, high + 1, step))


def _parse_step(text: str, kind: _FieldKind) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) == 0:
        raise _CronSyntaxError(f"{kind.name} step {text!r} must be a positive whole number")
    return int(text)


def _parse_value(text: str, kind: _FieldKind) -> int:
    if text.isascii() and text.isdigit():
        value = int(text)
    elif text in kind.names:
        value = kind.names[text]
    else:
        names = f", names ({', '.join(kind.names)})" if kind.names else ""
        raise _CronSyntaxError(
            f"{kind.name} value {text!r} is not understood; use numbers{names}, '*', ranges "
            "'a-b', steps '*/n' and lists 'a,b' (the L, W, # and H extensions are not supported)"
        )
    if not kind.low <= value <= kind.high:
        raise _CronSyntaxError(f"{kind.name} {value} is out of range {kind.low}-{kind.high}")
    return value


def _check_fires(spec: _CronSpec, day_text: str) -> None:
    """Refuse day-of-month/month combinations that never happen, like ``0 0 30 2 *``."""
    if spec.either_day or len(spec.weekdays) < 7:
        return
    if not any(min(spec.days) <= _LONGEST_MONTH[month] for month in spec.months):
        months = ", ".join(calendar.month_abbr[month] for month in spec.months)
        raise _CronSyntaxError(
            f"day-of-month {day_text} never occurs in {months}, it would never fire"
        )


# --------------------------------------------------------------------------- grids


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
        return _instant(self._first_at_or_after(_instant_seconds(after, "after") + 1))

    def upcoming(self, count: int, after: datetime) -> list[datetime]:
        """The first ``count`` grid points strictly after ``after``, ascending."""
        if count < 0:
            raise ValueError(f"count must not be negative, got {count}")
        moment = _instant_seconds(after, "after") + 1
        points: list[datetime] = []
        for _ in range(count):
            point = self._first_at_or_after(moment)
            points.append(_instant(point))
            moment = point + 1
        return points

    def between(self, start: datetime, end: datetime) -> Iterator[datetime]:
        """Grid points ``p`` with ``start < p <= end``, ascending (lazily computed)."""
        first = _instant_seconds(start, "start") + 1
        last = _instant_seconds(end, "end")
        return self._points(first, last)

    def _points(self, first: int, last: int) -> Iterator[datetime]:
        point = self._first_at_or_after(first)
        while point <= last:
            yield _instant(point)
            point = self._first_at_or_after(point + 1)

    def is_on_grid(self, instant: datetime) -> bool:
        """True when ``instant`` is exactly a grid point (so never with a fraction of a second)."""
        seconds = _instant_seconds(instant, "instant")
        if instant - _instant(seconds):
            return False
        return self._first_at_or_after(seconds) == seconds


class CronGrid(_Grid):
    """Points of a cron expression evaluated in an IANA timezone, by the module's DST policy.

    See :func:`validate_cron` for the accepted syntax; six fields mean a leading seconds
    field. Raises :class:`ScheduleValidationError` for a bad expression or timezone.
    """

    def __init__(self, expression: str, timezone: str = "UTC") -> None:
        self.expression = validate_cron(expression)
        self._spec = _parse_cron(expression)[1]
        self._zone = validate_timezone(timezone)
        self.timezone = timezone

    def __repr__(self) -> str:
        return f"CronGrid({self.expression!r}, timezone={self.timezone!r})"

    def _first_at_or_after(self, moment: int) -> int:
        # Walk stretches of constant UTC offset; in each, the first matching wall time at
        # or after `floor` (local seconds) is the answer. Offset changes decide what the
        # wall times they skip (gap) or repeat (fold) do.
        position = moment - 1  # every instant after `position` is still a candidate
        offset = _offset_at(self._zone, position)
        floor = moment + offset
        if not self._spec.every_hour:
            floor = self._skip_repeated_walls(position, floor)
        while position < _LAST_SEARCHABLE:
            change = _next_transition(self._zone, position, position + _SEARCH_WINDOW)
            boundary = change.at if change else position + _SEARCH_WINDOW
            wall = self._spec.first_match(_naive(floor), _naive(boundary + offset))
            if wall is not None:
                return _seconds(wall) - offset
            if change is not None and self._fires_in_gap(change):
                return change.at
            floor = boundary + self._resume_offset(change, offset)
            position, offset = boundary, (change.after if change else offset)
        raise ValueError(f"{self!r} has no point before year 9998")

    def _skip_repeated_walls(self, position: int, floor: int) -> int:
        """Raise ``floor`` past wall times a recent fold repeats: they fired the first time."""
        change = _previous_transition(self._zone, position, position - _FOLD_LOOKBACK)
        if change is None or change.after >= change.before:
            return floor
        return max(floor, change.at + change.before)

    def _fires_in_gap(self, change: _Transition) -> bool:
        if change.after <= change.before:
            return False
        skipped_from = _naive(change.at + change.before)
        return self._spec.first_match(skipped_from, _naive(change.at + change.after)) is not None

    def _resume_offset(self, change: _Transition | None, offset: int) -> int:
        """Offset giving the first wall time to search after ``change`` (None: no change)."""
        if change is None:
            return offset
        if change.after < change.before and not self._spec.every_hour:
            return change.before  # skip the walls a fold repeats: they fired already
        return change.after


class IntervalGrid(_Grid):
    """Points ``anchor + N * interval`` for every integer N, negative ones included.

    ``seconds``, ``minutes`` and ``hours`` are elapsed time. ``days``, ``weeks``, ``months``
    and ``years`` are calendar steps of the anchor's local wall time in ``timezone``, always
    counted from the anchor (Jan 31 + 1 month = Feb 28, + 2 months = Mar 31), with the
    module's DST policy applied to the wall time reached; the anchor itself is always a
    point. The anchor is truncated to the whole second.
    Raises :class:`ScheduleValidationError` naming the offending argument.
    """

    def __init__(self, anchor: datetime, interval: int, unit: str, timezone: str = "UTC") -> None:
        self._anchor = _anchor_seconds(anchor)
        self.interval = _checked_interval(interval)
        self.unit = _checked_unit(unit)
        self._zone = validate_timezone(timezone)
        self.timezone = timezone
        self.anchor = _instant(self._anchor)
        self._step = interval * _ELAPSED_UNIT_SECONDS.get(unit, 0)
        self._days = interval * _CALENDAR_UNIT_DAYS.get(unit, 0)
        self._months = interval * _CALENDAR_UNIT_MONTHS.get(unit, 0)
        self._anchor_wall = _local_wall(self._zone, self._anchor)

    def __repr__(self) -> str:
        return (
            f"IntervalGrid({self.anchor.isoformat()!r}, {self.interval}, {self.unit!r}, "
            f"timezone={self.timezone!r})"
        )

    def _first_at_or_after(self, moment: int) -> int:
        if self._step:
            return self._anchor - (self._anchor - moment) // self._step * self._step
        index = self._estimate_index(moment)
        while self._point(index - 1) >= moment:
            index -= 1
        while self._point(index) < moment:
            index += 1
        return self._point(index)

    def _estimate_index(self, moment: int) -> int:
        wall, anchor = _local_wall(self._zone, moment), self._anchor_wall
        if self._days:
            return (wall.date() - anchor.date()).days // self._days
        return ((wall.year - anchor.year) * 12 + wall.month - anchor.month) // self._months

    def _point(self, index: int) -> int:
        if index == 0:
            return self._anchor
        return _wall_to_instant(self._zone, self._wall(index))

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
    return _instant_seconds(anchor, "anchor")


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
) -> TimeGrid:
    """The grid of a schedule: a :class:`CronGrid` or an :class:`IntervalGrid`.

    Give either ``cron`` or ``anchor`` + ``interval`` + ``interval_unit``. Everything is
    validated; :class:`ScheduleValidationError` names the field to fix (``cron``,
    ``timezone``, ``anchor``, ``interval`` or ``interval_unit``).
    """
    interval_given = anchor is not None or interval is not None or interval_unit is not None
    if cron is not None and interval_given:
        raise ScheduleValidationError(
            "cron", "give either cron or anchor+interval+interval_unit, not both"
        )
    if cron is not None:
        return CronGrid(cron, timezone)
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
    return IntervalGrid(anchor, interval, interval_unit, timezone)
