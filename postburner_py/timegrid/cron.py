"""Cron expressions: the syntax, its validation, and the parsed fields. Pure, no I/O.

Five fields ``minute hour day-of-month month day-of-week``, or six with a leading seconds
field (Quartz, croner and APScheduler order; croniter's six-field form puts seconds last and
is read differently), or a macro. See :func:`validate_cron` for the syntax and
:mod:`postburner_py.timegrid.days` for the day fields' extensions and how they combine.
"""

from __future__ import annotations

import calendar
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import lru_cache

from postburner_py.errors import ScheduleValidationError
from postburner_py.timegrid.days import (
    DayOfMonthRule,
    DayOfWeekRule,
    DaySelection,
    LastDay,
    LastWeekday,
    LastWeekdayOf,
    NearestWeekday,
    NthWeekday,
)

_CRON_EXAMPLE = "example: '*/15 * * * *' (every 15 minutes) or '30 2 * * 1-5' (02:30 on weekdays)"
_PLAIN_SYNTAX = "numbers, '*', ranges 'a-b', steps '*/n' and lists 'a,b'"


class CronSyntaxError(Exception):
    """Why one cron field is invalid; turned into a ScheduleValidationError by the parser."""


@dataclass(frozen=True)
class _FieldKind:
    name: str
    low: int
    high: int
    names: dict[str, int] = field(default_factory=dict)
    is_day_field: bool = False


_MONTH_NAMES = {name.upper(): number for number, name in enumerate(calendar.month_abbr) if name}
_DAY_NAMES = {"SUN": 0, "MON": 1, "TUE": 2, "WED": 3, "THU": 4, "FRI": 5, "SAT": 6}
_SECOND, _MINUTE, _HOUR = (
    _FieldKind(n, 0, h) for n, h in (("second", 59), ("minute", 59), ("hour", 23))
)
_DAY_OF_MONTH = _FieldKind("day-of-month", 1, 31, is_day_field=True)
_MONTH = _FieldKind("month", 1, 12, _MONTH_NAMES)
_DAY_OF_WEEK = _FieldKind("day-of-week", 0, 7, _DAY_NAMES, is_day_field=True)
_FIELD_KINDS = (_SECOND, _MINUTE, _HOUR, _DAY_OF_MONTH, _MONTH, _DAY_OF_WEEK)

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
#: Years whose months show every (length, first weekday) a month of 1901-2099 can have.
_CALENDAR_CYCLE = range(2000, 2028)


@dataclass(frozen=True, eq=False)
class CronSpec:
    """The parsed fields of a cron expression, matched against local wall times."""

    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    months: tuple[int, ...]
    days: DaySelection

    @property
    def every_hour(self) -> bool:
        """The hour field matches all 24 hours: the schedule is hourly or faster."""
        return len(self.hours) == 24

    def first_match(self, start: datetime, end: datetime) -> datetime | None:
        """The first matching wall time ``w`` with ``start <= w < end``."""
        if start >= end:
            return None
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
        year, month, first = day.year, day.month, day.day
        while (year, month) <= (last_day.year, last_day.month):
            if month in self.months:
                days = self.days.days_of(year, month)
                index = bisect_left(days, first)
                if index < len(days):
                    found = date(year, month, days[index])
                    return found if found <= last_day else None
            year, month = self._next_month(year, month)
            first = 1
        return None

    def _next_month(self, year: int, month: int) -> tuple[int, int]:
        index = bisect_right(self.months, month)
        if index < len(self.months):
            return year, self.months[index]
        return year + 1, self.months[0]

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
    leading seconds field (``second minute hour ...``, as Quartz, croner and APScheduler
    order them; croniter's seconds-last form is refused or read differently); the macros
    ``@yearly @annually @monthly @weekly @daily @midnight @hourly``. Fields take numbers,
    month and weekday names (``JAN``, ``MON``), ``*``, ranges ``a-b``, steps ``*/n``,
    ``a-b/n`` and ``a/n`` (``a/n`` runs to the field's top: ``MON/2`` in day-of-week
    reaches 7, Sunday), and lists ``a,b``; day-of-week 0 and 7 are Sunday, and ``SUN`` ends
    a range as 7 (``MON-SUN``); ``?`` means ``*`` in the day fields. Day-of-month also takes
    ``L``, ``L-n``, ``LW`` and ``nW``; day-of-week ``dL``/``d#L`` and ``d#k`` (see
    :mod:`postburner_py.timegrid.days`, which also gives the Vixie rule joining the two day
    fields). ``H`` (hashed) and ``R`` (random) values are refused.

    The normal form collapses whitespace, lower-cases macros and upper-cases names.
    Raises :class:`ScheduleValidationError` (field ``cron``) saying what is wrong and, for a
    six-field expression that reads correctly with its last field moved first, that six
    fields mean seconds first.
    """
    if not isinstance(expression, str):
        raise ScheduleValidationError(
            "cron", f"expected a cron expression string, got {expression!r}"
        )
    return parse_cron(expression)[0]


@lru_cache(maxsize=1024)
def parse_cron(expression: str) -> tuple[str, CronSpec]:
    """The normal form and the parsed fields of ``expression`` (see :func:`validate_cron`)."""
    try:
        normalised, texts = _split_cron(expression)
        spec = _build_spec(texts)
    except CronSyntaxError as error:
        raise ScheduleValidationError(
            "cron",
            f"{expression!r} is not a valid cron expression: {error}"
            f"{_seconds_last_hint(expression)}; {_CRON_EXAMPLE}",
        ) from None
    return normalised, spec


def _build_spec(texts: list[str]) -> CronSpec:
    second, minute, hour, day_text, month, weekday_text = texts
    month_days, month_rules = _parse_day_field(day_text, _DAY_OF_MONTH)
    weekdays, weekday_rules = _parse_day_field(weekday_text, _DAY_OF_WEEK)
    days = DaySelection(
        month_days=frozenset(month_days),
        month_rules=tuple(month_rules),  # type: ignore[arg-type]
        weekdays=frozenset(weekdays),
        weekday_rules=tuple(weekday_rules),  # type: ignore[arg-type]
        either=not _unrestricted(day_text) and not _unrestricted(weekday_text),
    )
    spec = CronSpec(
        seconds=_sorted_field(second, _SECOND),
        minutes=_sorted_field(minute, _MINUTE),
        hours=_sorted_field(hour, _HOUR),
        months=_sorted_field(month, _MONTH),
        days=days,
    )
    _check_fires(spec, day_text, weekday_text)
    return spec


def _unrestricted(text: str) -> bool:
    """Vixie's rule: a day field beginning with ``*`` (or ``?``) does not restrict the OR."""
    return text.startswith(("*", "?"))


def _split_cron(expression: str) -> tuple[str, list[str]]:
    """Normal form and the six field texts (seconds first) of an expression."""
    text = " ".join(expression.split())
    if not text:
        raise CronSyntaxError("it is empty")
    if text.startswith("@"):
        macro = text.lower()
        if macro not in MACROS:
            raise CronSyntaxError(f"unknown macro {text!r}, use one of {', '.join(MACROS)}")
        return macro, ["0", *MACROS[macro].split()]
    texts = text.upper().split()
    if len(texts) == 5:
        return " ".join(texts), ["0", *texts]
    if len(texts) == 6:
        return " ".join(texts), texts
    raise CronSyntaxError(
        f"it has {len(texts)} fields, expected 5 (minute hour day-of-month month day-of-week) "
        "or 6 (a leading seconds field, then those five)"
    )


def _seconds_last_hint(expression: str) -> str:
    """For a six-field expression that parses with its last field moved first: say so."""
    fields = expression.split()
    if len(fields) != 6:
        return ""
    rotated = " ".join([fields[-1], *fields[:-1]])
    try:
        _build_spec(_split_cron(rotated)[1])
    except CronSyntaxError:
        return ""
    return (
        "; six fields are read seconds first (second minute hour day-of-month month "
        f"day-of-week): if the last field is the seconds (croniter's form), write {rotated!r}"
    )


# --------------------------------------------------------------------------- fields


def _sorted_field(text: str, kind: _FieldKind) -> tuple[int, ...]:
    values: set[int] = set()
    for item in _items(text, kind):
        _refuse_extensions(item, kind)
        values |= _parse_item(item, text, kind)
    return tuple(sorted(values))


def _items(text: str, kind: _FieldKind) -> list[str]:
    items = text.split(",")
    if any(not item for item in items):
        raise CronSyntaxError(f"{kind.name} field {text!r} has an empty list item")
    return items


def _refuse_extensions(item: str, kind: _FieldKind) -> None:
    base = item.split("/", 1)[0]
    if base in ("H", "R") or base.startswith(("H(", "R(")):
        raise CronSyntaxError(
            f"{kind.name} {item!r}: H (hashed) and R (random) values are not supported, "
            "write the value you want"
        )
    if not kind.is_day_field and any(mark in _without_names(item, kind) for mark in "LW#"):
        raise CronSyntaxError(
            f"{kind.name} {item!r}: L, W and # belong in the day fields only "
            "(L, L-n, LW, nW in day-of-month; dL, d#k in day-of-week)"
        )


def _without_names(item: str, kind: _FieldKind) -> str:
    """``item`` without the field's names (JUL holds an L, WED a W)."""
    for name in kind.names:
        item = item.replace(name, "")
    return item


def _parse_day_field(
    text: str, kind: _FieldKind
) -> tuple[set[int], list[DayOfMonthRule | DayOfWeekRule]]:
    values: set[int] = set()
    rules: list[DayOfMonthRule | DayOfWeekRule] = []
    for item in _items(text, kind):
        _refuse_extensions(item, kind)
        rule = _month_rule(item) if kind is _DAY_OF_MONTH else _weekday_rule(item)
        if rule is not None:
            rules.append(rule)
        else:
            values |= _parse_item(item, text, kind)
    if kind is _DAY_OF_WEEK and 7 in values:  # day-of-week 7 is Sunday too
        values = (values - {7}) | {0}
    return values, rules


def _month_rule(item: str) -> DayOfMonthRule | None:
    """``L``, ``L-n``, ``LW`` or ``nW`` in day-of-month (None for a plain item)."""
    if "#" in item:
        raise CronSyntaxError(
            f"day-of-month {item!r}: # belongs in day-of-week (MON#1 is the first Monday)"
        )
    if item == "LW":
        return LastWeekday()
    if item == "L":
        return LastDay()
    if item.startswith("L-") and _is_number(item[2:]):
        before = int(item[2:])
        if before > 30:
            raise CronSyntaxError(f"day-of-month {item!r}: L-n takes n from 0 to 30")
        return LastDay(before)
    if item.endswith("W") and _is_number(item[:-1]):
        day = int(item[:-1])
        if not 1 <= day <= 31:
            raise CronSyntaxError(f"day-of-month {item!r}: nW takes a day from 1 to 31")
        return NearestWeekday(day)
    if "L" in item or "W" in item:
        raise CronSyntaxError(
            f"day-of-month {item!r} is not understood: L is the last day, L-n n days before "
            "it, LW the last weekday, nW the weekday nearest day n (one day number, "
            "not a range, step or list)"
        )
    return None


def _weekday_rule(item: str) -> DayOfWeekRule | None:
    """``dL``, ``d#L`` or ``d#k`` in day-of-week (None for a plain item)."""
    if "W" in _without_names(item, _DAY_OF_WEEK):
        raise CronSyntaxError(f"day-of-week {item!r}: W belongs in day-of-month (15W, LW)")
    if item == "L":
        raise CronSyntaxError(
            "day-of-week 'L' alone is ambiguous (Quartz reads it as Saturday): write FRIL or "
            "5L for the last Friday of the month, or L in day-of-month for the last day"
        )
    if "#" in item:
        weekday_text, _, nth_text = item.partition("#")
        weekday = _single_weekday(weekday_text, item)
        if nth_text == "L":
            return LastWeekdayOf(weekday)
        if not (_is_number(nth_text) and 1 <= int(nth_text) <= 5):
            raise CronSyntaxError(
                f"day-of-week {item!r}: d#k takes k from 1 to 5 (MON#1 is the first Monday) "
                "or L (FRI#L is the last Friday)"
            )
        return NthWeekday(weekday, int(nth_text))
    if item.endswith("L"):
        return LastWeekdayOf(_single_weekday(item[:-1], item))
    return None


def _single_weekday(text: str, item: str) -> int:
    if _is_number(text) and int(text) <= 7:
        return int(text) % 7
    if text in _DAY_NAMES:
        return _DAY_NAMES[text]
    raise CronSyntaxError(
        f"day-of-week {item!r}: L and # follow one weekday (a number 0-7 or a name such as "
        "FRI), not a range or step; list several instead, e.g. MON#1,MON#3"
    )


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _parse_item(item: str, text: str, kind: _FieldKind) -> set[int]:
    base, has_step, step_text = item.partition("/")
    step = _parse_step(step_text, kind) if has_step else 1
    if base == "*" or (base == "?" and kind.is_day_field and not has_step):
        low, high = kind.low, kind.high
    elif "-" in base:
        low_text, high_text = base.split("-", 1)
        low, high = _parse_value(low_text, kind), _parse_value(high_text, kind)
        if kind is _DAY_OF_WEEK and high_text == "SUN" and low > 0:
            high = 7  # MON-SUN: Sunday as 7 ends a range
        if low > high:
            raise CronSyntaxError(
                f"{kind.name} range {base} runs backwards, write the low value first"
            )
    else:
        low = _parse_value(base, kind)
        high = kind.high if has_step else low
    return set(range(low, high + 1, step))


def _parse_step(text: str, kind: _FieldKind) -> int:
    if not _is_number(text) or int(text) == 0:
        raise CronSyntaxError(f"{kind.name} step {text!r} must be a positive whole number")
    return int(text)


def _parse_value(text: str, kind: _FieldKind) -> int:
    if _is_number(text):
        value = int(text)
    elif text in kind.names:
        value = kind.names[text]
    else:
        names = f", names ({', '.join(kind.names)})" if kind.names else ""
        extensions = (
            " (and L, L-n, LW, nW here)"
            if kind is _DAY_OF_MONTH
            else " (and dL, d#k here)"
            if kind is _DAY_OF_WEEK
            else ""
        )
        raise CronSyntaxError(
            f"{kind.name} value {text!r} is not understood; use {_PLAIN_SYNTAX}{names}{extensions}"
        )
    if not kind.low <= value <= kind.high:
        raise CronSyntaxError(f"{kind.name} {value} is out of range {kind.low}-{kind.high}")
    return value


def _check_fires(spec: CronSpec, day_text: str, weekday_text: str) -> None:
    """Refuse day fields that never select a day of the months, like ``0 0 30 2 *``."""
    for year in _CALENDAR_CYCLE:
        if any(spec.days.days_of(year, month) for month in spec.months):
            return
    months = ", ".join(calendar.month_abbr[month] for month in spec.months)
    raise CronSyntaxError(
        f"day-of-month {day_text} with day-of-week {weekday_text} never occurs in {months}, "
        "it would never fire"
    )
