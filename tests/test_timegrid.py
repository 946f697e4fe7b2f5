"""Time grids: cron and interval points, the DST policy, and validation of schedule fields."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import cache
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postburner_py.errors import ScheduleValidationError
from postburner_py.timegrid.dst import DST_FOLD_CHOICES, DST_GAP_CHOICES
from postburner_py.timegrid.grid import (
    INTERVAL_UNITS,
    CronGrid,
    IntervalGrid,
    TimeGrid,
    make_grid,
    validate_cron,
    validate_timezone,
)

PRAGUE = ZoneInfo("Europe/Prague")
ZONES = ("UTC", "Europe/Prague", "America/New_York", "Australia/Lord_Howe")
DST_ZONES = (*ZONES[1:], "America/Santiago", "Pacific/Chatham")
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MINUTE = timedelta(minutes=1)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def local(
    zone: str, year: int, month: int, day: int, hour: int = 0, minute: int = 0, *, fold: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(zone), fold=fold)


def in_prague(points: list[datetime]) -> list[str]:
    return [point.astimezone(PRAGUE).isoformat() for point in points]


# --------------------------------------------------------------------------- strategies

MINUTE_FIELDS = ("0", "30", "45", "*/15", "*/30", "0,30", "10-20/5", "5/20", "*")
HOURS_EVERY = ("*", "0-23", "*/1")
HOURS_FIXED = ("2", "1", "0", "23", "1-3", "*/2", "2,14", "0-23/3")
DAY_FIELDS = ("*", "*", "*", "1", "15,30", "31", "1-7")
MONTH_FIELDS = ("*", "*", "*", "1-6", "*/2", "JAN,MAR")
WEEKDAY_FIELDS = ("*", "*", "*", "MON-FRI", "0", "7", "SUN,WED", "*/2")


def cron_expressions(*, seconds: bool = True, sparse_days: bool = True) -> st.SearchStrategy[str]:
    """Cron expressions croniter agrees with, biased to hours around DST changes."""
    hour = st.sampled_from(HOURS_EVERY + HOURS_FIXED)
    days = st.sampled_from(DAY_FIELDS) if sparse_days else st.just("*")
    months = st.sampled_from(MONTH_FIELDS) if sparse_days else st.just("*")
    weekdays = st.sampled_from(WEEKDAY_FIELDS) if sparse_days else st.just("*")
    five = st.tuples(st.sampled_from(MINUTE_FIELDS), hour, days, months, weekdays).map(" ".join)
    if not seconds:
        return five
    six = st.tuples(st.sampled_from(("0", "*/20", "15,45")), five).map(" ".join)
    return st.one_of(five, six)


def instants(low: int = 2020, high: int = 2032) -> st.SearchStrategy[datetime]:
    return st.datetimes(datetime(low, 1, 1), datetime(high, 1, 1), timezones=st.just(UTC))


@cache
def offset_changes(zone_name: str, year: int) -> tuple[datetime, ...]:
    """Instants at which ``zone_name`` changes offset in ``year``, found by brute force."""
    zone, changes = ZoneInfo(zone_name), []
    hour = utc(year, 1, 1)
    while hour.year == year:
        following = hour + timedelta(hours=1)
        if hour.astimezone(zone).utcoffset() != following.astimezone(zone).utcoffset():
            minute = hour
            while minute.astimezone(zone).utcoffset() == hour.astimezone(zone).utcoffset():
                minute += MINUTE
            changes.append(minute)
        hour = following
    return tuple(changes)


@st.composite
def near_offset_change(draw: st.DrawFn, zone_name: str) -> datetime:
    """An instant within a few hours of one of the zone's offset changes (any instant in UTC)."""
    year = draw(st.integers(2024, 2030))
    changes = offset_changes(zone_name, year) or (utc(year, 3, 30, 1),)
    change = draw(st.sampled_from(changes))
    return change + timedelta(seconds=draw(st.integers(-4 * 3600, 4 * 3600)))


EXTENDED_DAY_FIELDS = ("L", "L-3", "LW", "15W", "1W", "31W", "1,L", "*/1", "?")
EXTENDED_WEEKDAY_FIELDS = ("FRIL", "5#L", "MON#1", "MON#1,MON#3", "SUN#5", "MON-SUN", "SAT-SUN")


def extended_cron_expressions() -> st.SearchStrategy[str]:
    """Expressions with the L, W and # day extensions and Vixie's ``*``-prefixed fields."""
    days = st.sampled_from(EXTENDED_DAY_FIELDS + DAY_FIELDS)
    weekdays = st.sampled_from(EXTENDED_WEEKDAY_FIELDS + WEEKDAY_FIELDS)
    hour = st.sampled_from(HOURS_EVERY + HOURS_FIXED)
    minute = st.sampled_from(MINUTE_FIELDS)
    return st.tuples(minute, hour, days, st.sampled_from(MONTH_FIELDS), weekdays).map(" ".join)


@st.composite
def grids(draw: st.DrawFn) -> tuple[TimeGrid, str]:
    """Any grid: cron (plain or extended syntax) or interval, in a DST zone, any policy."""
    zone = draw(st.sampled_from(ZONES))
    policy = {
        "dst_gap": draw(st.sampled_from(DST_GAP_CHOICES)),
        "dst_fold": draw(st.sampled_from(DST_FOLD_CHOICES)),
    }
    if draw(st.booleans()):
        expressions = st.one_of(cron_expressions(sparse_days=False), extended_cron_expressions())
        return CronGrid(draw(expressions), zone, **policy), zone
    unit = draw(st.sampled_from(INTERVAL_UNITS))
    interval = draw(st.integers(1, 3) if unit in ("months", "years") else st.integers(1, 90))
    anchor = draw(near_offset_change(zone))
    return IntervalGrid(anchor, interval, unit, zone, **policy), zone


# --------------------------------------------------------------------------- oracles


def vixie_day_or(expression: str) -> bool:
    """Vixie's rule, which croniter 7 does not follow: a day field starting with ``*`` makes
    a day match both fields (croniter's ``day_or=False``)."""
    *_, day, _month, weekday = expression.split()
    return not day.startswith("*") and not weekday.startswith("*")


def croniter_points(expression: str, after: datetime, count: int) -> list[datetime]:
    """The next ``count`` points croniter computes, in UTC (where there is no DST)."""
    six = len(expression.split()) == 6
    start = after.astimezone(UTC).replace(tzinfo=None)
    day_or = vixie_day_or(expression)
    iterator = croniter(expression, start, second_at_beginning=six, day_or=day_or)
    return [iterator.get_next(datetime).replace(tzinfo=UTC) for _ in range(count)]


def policy_points(
    expression: str,
    zone_name: str,
    start: datetime,
    end: datetime,
    *,
    gap: str = "shift",
    fold: str = "first",
) -> list[datetime]:
    """Points in (start, end] by the DST policy, brute force: every UTC minute is looked at.

    Matching wall times come from croniter on naive local times (no DST involved); each
    maps to the UTC minutes that show it. Hourly-or-faster (the hour field matches every
    hour): all of them, so a fold fires twice and a gap never. Fixed hours: one, or for a
    fold the first, the last or both (``fold``), and for a gap the first instant showing a
    later wall time (``gap="shift"``) or nothing (``"skip"``).
    """
    zone = ZoneInfo(zone_name)
    every_hour = expression.split()[-4] in HOURS_EVERY
    minutes = [start + MINUTE * n for n in range(int((end - start) / MINUTE) + 180)]
    walls: dict[datetime, list[datetime]] = defaultdict(list)
    for minute in minutes:
        walls[minute.astimezone(zone).replace(tzinfo=None)].append(minute)
    first_wall = (start - timedelta(hours=3)).astimezone(zone).replace(tzinfo=None)
    matches = croniter(expression, first_wall - MINUTE, day_or=vixie_day_or(expression))
    last_wall = (end + timedelta(hours=3)).astimezone(zone).replace(tzinfo=None)
    chosen = {"first": slice(0, 1), "last": slice(-1, None), "both": slice(None)}[fold]
    points: set[datetime] = set()
    while (wall := matches.get_next(datetime)) < last_wall:
        shown_at = walls.get(wall)
        if shown_at:
            points.update(shown_at if every_hour else shown_at[chosen])
            continue
        if every_hour or gap == "skip":
            continue
        after_gap = (m for m in minutes if m.astimezone(zone).replace(tzinfo=None) > wall)
        points.update(m for m in [next(after_gap, None)] if m is not None)
    return sorted(point for point in points if start < point <= end)


def resolve_wall(
    wall: datetime, zone: ZoneInfo, *, gap: str = "shift", fold: str = "first"
) -> list[datetime]:
    """The instants a calendar wall time fires at: the first, last or both occurrences of a
    repeated one; the end of its gap (``shift``) or none (``skip``) for a skipped one."""
    occurrences = sorted(
        {
            wall.replace(tzinfo=zone, fold=f).astimezone(UTC)
            for f in (0, 1)
            if wall.replace(tzinfo=zone, fold=f)
            .astimezone(UTC)
            .astimezone(zone)
            .replace(tzinfo=None)
            == wall
        }
    )
    if occurrences:
        return {"first": occurrences[:1], "last": occurrences[-1:], "both": occurrences}[fold]
    if gap == "skip":
        return []
    moment = wall.replace(tzinfo=zone, fold=1).astimezone(UTC).replace(second=0)
    while moment.astimezone(zone).replace(tzinfo=None) <= wall:
        moment += MINUTE
    return [moment]


def stepped_walls(
    anchor_wall: datetime, interval: int, unit: str, count: int
) -> Iterator[datetime]:
    """Calendar steps from the anchor, one at a time (the slow way the grid must agree with)."""
    for index in range(-count, count + 1):
        if unit in ("days", "weeks"):
            yield anchor_wall + timedelta(days=index * interval * (7 if unit == "weeks" else 1))
            continue
        months = index * interval * (12 if unit == "years" else 1)
        year, month = divmod(anchor_wall.month - 1 + months, 12)
        year += anchor_wall.year
        for day in range(anchor_wall.day, 0, -1):
            try:
                yield anchor_wall.replace(year=year, month=month + 1, day=day)
                break
            except ValueError:
                continue


# --------------------------------------------------------------------------- cron: worked examples


def test_daily_cron_in_spring_gap_fires_once_at_the_end_of_the_gap() -> None:
    grid = CronGrid("30 2 * * *", "Europe/Prague")

    points = grid.upcoming(3, utc(2025, 3, 28, 12))

    assert in_prague(points) == [
        "2025-03-29T02:30:00+01:00",
        "2025-03-30T03:00:00+02:00",
        "2025-03-31T02:30:00+02:00",
    ]


def test_daily_cron_in_autumn_fold_fires_only_at_the_first_occurrence() -> None:
    grid = CronGrid("30 2 * * *", "Europe/Prague")

    points = list(grid.between(utc(2025, 10, 25, 12), utc(2025, 10, 27, 12)))

    assert in_prague(points) == ["2025-10-26T02:30:00+02:00", "2025-10-27T02:30:00+01:00"]
    assert not grid.is_on_grid(local("Europe/Prague", 2025, 10, 26, 2, 30, fold=1))


def test_half_hourly_cron_keeps_elapsed_spacing_through_the_fold() -> None:
    grid = CronGrid("*/30 * * * *", "Europe/Prague")
    start = local("Europe/Prague", 2025, 10, 26, 1, 15)

    points = list(grid.between(start, local("Europe/Prague", 2025, 10, 26, 3, 0, fold=1)))

    assert in_prague(points) == [
        "2025-10-26T01:30:00+02:00",
        "2025-10-26T02:00:00+02:00",
        "2025-10-26T02:30:00+02:00",
        "2025-10-26T02:00:00+01:00",
        "2025-10-26T02:30:00+01:00",
        "2025-10-26T03:00:00+01:00",
    ]
    assert {later - earlier for earlier, later in pairwise(points)} == {timedelta(minutes=30)}


def test_hourly_cron_through_spring_gap_has_no_duplicate() -> None:
    grid = CronGrid("0 * * * *", "Europe/Prague")

    points = grid.upcoming(4, local("Europe/Prague", 2025, 3, 30, 0, 30))

    assert in_prague(points) == [
        "2025-03-30T01:00:00+01:00",
        "2025-03-30T03:00:00+02:00",
        "2025-03-30T04:00:00+02:00",
        "2025-03-30T05:00:00+02:00",
    ]


def test_several_wall_times_in_one_gap_collapse_into_one_point() -> None:
    grid = CronGrid("0,20,40 2 * * *", "Europe/Prague")

    points = grid.upcoming(2, utc(2025, 3, 29, 12))

    assert in_prague(points) == ["2025-03-30T03:00:00+02:00", "2025-03-31T02:00:00+02:00"]


def test_half_hour_dst_zone_keeps_elapsed_spacing_through_its_fold() -> None:
    grid = CronGrid("*/30 * * * *", "Australia/Lord_Howe")
    start = local("Australia/Lord_Howe", 2025, 4, 6, 0, 45)

    points = grid.upcoming(5, start)

    assert {later - earlier for earlier, later in pairwise(points)} == {timedelta(minutes=30)}
    assert [p.astimezone(ZoneInfo("Australia/Lord_Howe")).strftime("%H:%M%z") for p in points] == [
        "01:00+1100",
        "01:30+1100",
        "01:30+1030",
        "02:00+1030",
        "02:30+1030",
    ]


def test_midnight_cron_on_a_midnight_gap_fires_once_after_it() -> None:
    grid = CronGrid("0 0 * * *", "America/Santiago")

    points = grid.upcoming(2, utc(2025, 9, 6, 12))

    zone = ZoneInfo("America/Santiago")
    assert [p.astimezone(zone).isoformat() for p in points] == [
        "2025-09-07T01:00:00-03:00",
        "2025-09-08T00:00:00-03:00",
    ]


@pytest.mark.parametrize(
    ("macro", "fields"),
    [
        ("@hourly", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
    ],
)
def test_macro_fires_like_its_five_fields(macro: str, fields: str) -> None:
    after = utc(2025, 3, 29, 17, 45)

    points = CronGrid(macro, "Europe/Prague").upcoming(4, after)

    assert points == CronGrid(fields, "Europe/Prague").upcoming(4, after)


def test_six_fields_put_seconds_first() -> None:
    grid = CronGrid("*/20 5 10 * * *")

    points = grid.upcoming(4, utc(2025, 1, 1))

    assert points == [
        utc(2025, 1, 1, 10, 5, 0),
        utc(2025, 1, 1, 10, 5, 20),
        utc(2025, 1, 1, 10, 5, 40),
        utc(2025, 1, 2, 10, 5, 0),
    ]


def test_restricting_both_day_fields_fires_when_either_matches() -> None:
    grid = CronGrid("0 0 13 * 5")

    points = grid.upcoming(3, utc(2025, 6, 1))

    assert points == [utc(2025, 6, 6), utc(2025, 6, 13), utc(2025, 6, 20)]


def test_leap_day_cron_waits_for_the_next_leap_year() -> None:
    assert CronGrid("0 0 29 2 *").next_after(utc(2025, 1, 1)) == utc(2028, 2, 29)


def test_next_after_a_fraction_of_a_second_is_the_next_whole_second() -> None:
    grid = CronGrid("* * * * * *")
    after = utc(2025, 1, 1, 10) + timedelta(microseconds=500_000)

    assert grid.next_after(after) == utc(2025, 1, 1, 10, 0, 1)
    assert not grid.is_on_grid(after)


def test_inputs_in_any_zone_give_utc_points() -> None:
    point = CronGrid("0 12 * * *").next_after(local("America/New_York", 2025, 1, 1, 8))

    assert point == utc(2025, 1, 2, 12)
    assert point.tzinfo is UTC


@pytest.mark.parametrize(
    "call",
    [
        lambda grid, naive: grid.next_after(naive),
        lambda grid, naive: grid.upcoming(2, naive),
        lambda grid, naive: grid.between(naive, naive),
        lambda grid, naive: grid.between(utc(2025, 1, 1), naive),
        lambda grid, naive: grid.is_on_grid(naive),
    ],
)
def test_naive_datetimes_are_refused(call: Callable[[TimeGrid, datetime], Any]) -> None:
    grid = CronGrid("*/5 * * * *")

    with pytest.raises(ValueError, match="aware datetime"):
        call(grid, datetime(2025, 1, 1, 12))


def test_cron_grid_search_is_fast_far_from_daily_points() -> None:
    grid = CronGrid("0 9 1 1 *", "Europe/Prague")

    points = grid.upcoming(3, utc(2150, 6, 1))

    assert in_prague(points)[0] == "2151-01-01T09:00:00+01:00"
    assert len(points) == 3


# --------------------------------------------------------------------------- intervals: examples


def test_monthly_interval_counts_from_the_anchor_and_clamps_month_ends() -> None:
    anchor = utc(2025, 1, 31, 10)
    grid = IntervalGrid(anchor, 1, "months")

    assert grid.upcoming(3, anchor) == [
        utc(2025, 2, 28, 10),
        utc(2025, 3, 31, 10),
        utc(2025, 4, 30, 10),
    ]
    assert grid.next_after(utc(2026, 2, 1)) == utc(2026, 2, 28, 10)
    assert grid.next_after(utc(2024, 11, 1)) == utc(2024, 11, 30, 10)


def test_ninety_second_interval_is_elapsed_time_from_the_anchor() -> None:
    anchor = utc(2025, 1, 1, 0, 0, 10)
    grid = IntervalGrid(anchor, 90, "seconds", "Europe/Prague")

    assert grid.upcoming(2, anchor - timedelta(seconds=1)) == [
        anchor,
        anchor + timedelta(seconds=90),
    ]
    far = grid.next_after(utc(2125, 6, 1, 12, 0, 1))
    assert (far - anchor) % timedelta(seconds=90) == timedelta(0)
    assert far - timedelta(seconds=90) <= utc(2125, 6, 1, 12, 0, 1) < far


def test_hourly_interval_ignores_dst() -> None:
    grid = IntervalGrid(local("Europe/Prague", 2025, 3, 30, 0, 30), 1, "hours", "Europe/Prague")

    points = grid.upcoming(3, utc(2025, 3, 29, 23, 0))

    assert points == [utc(2025, 3, 29, 23, 30), utc(2025, 3, 30, 0, 30), utc(2025, 3, 30, 1, 30)]


def test_weekly_interval_in_a_dst_zone_keeps_local_wall_time() -> None:
    grid = IntervalGrid(local("Europe/Prague", 2025, 3, 20, 9), 1, "weeks", "Europe/Prague")

    points = grid.upcoming(3, utc(2025, 3, 21))

    assert in_prague(points) == [
        "2025-03-27T09:00:00+01:00",
        "2025-04-03T09:00:00+02:00",
        "2025-04-10T09:00:00+02:00",
    ]


def test_daily_interval_follows_the_dst_policy() -> None:
    grid = IntervalGrid(local("Europe/Prague", 2025, 1, 1, 2, 30), 1, "days", "Europe/Prague")

    spring = grid.upcoming(2, utc(2025, 3, 29, 12))
    autumn = list(grid.between(utc(2025, 10, 25, 12), utc(2025, 10, 27, 12)))

    assert in_prague(spring) == ["2025-03-30T03:00:00+02:00", "2025-03-31T02:30:00+02:00"]
    assert in_prague(autumn) == ["2025-10-26T02:30:00+02:00", "2025-10-27T02:30:00+01:00"]


def test_anchor_is_a_point_even_on_the_second_occurrence_of_a_fold() -> None:
    anchor = local("Europe/Prague", 2025, 10, 26, 2, 30, fold=1)

    grid = IntervalGrid(anchor, 1, "days", "Europe/Prague")

    assert grid.is_on_grid(anchor)
    assert in_prague(grid.upcoming(1, anchor)) == ["2025-10-27T02:30:00+01:00"]


def test_anchor_is_truncated_to_the_whole_second() -> None:
    grid = IntervalGrid(utc(2025, 1, 1) + timedelta(microseconds=999_999), 1, "minutes")

    assert grid.anchor == utc(2025, 1, 1)
    assert grid.is_on_grid(utc(2025, 1, 1, 0, 1))


def test_calendar_interval_far_from_the_anchor_is_exact() -> None:
    grid = IntervalGrid(utc(1970, 1, 31, 6), 1, "months", "America/New_York")

    point = grid.next_after(utc(2199, 2, 1))

    assert point.astimezone(ZoneInfo("America/New_York")).isoformat() == "2199-02-28T01:00:00-05:00"


def test_interval_points_exist_before_the_anchor() -> None:
    anchor = utc(2025, 6, 1)
    grid = IntervalGrid(anchor, 1, "days")

    assert grid.next_after(utc(2025, 5, 1, 12)) == utc(2025, 5, 2)


# --------------------------------------------------------------------------- properties


@PROPERTY
@given(grid_and_zone=grids(), data=st.data())
def test_points_strictly_increase_and_chain(
    grid_and_zone: tuple[TimeGrid, str], data: st.DataObject
) -> None:
    grid, zone = grid_and_zone
    after = data.draw(st.one_of(instants(), near_offset_change(zone)))

    points = grid.upcoming(6, after)

    assert points[0] > after
    assert all(earlier < later for earlier, later in pairwise(points))
    assert [grid.next_after(point) for point in points[:-1]] == points[1:]
    assert all(grid.is_on_grid(point) for point in points)
    assert not any(grid.is_on_grid(point + timedelta(microseconds=1)) for point in points)


@PROPERTY
@given(grid_and_zone=grids(), data=st.data())
def test_same_points_however_a_range_is_split(
    grid_and_zone: tuple[TimeGrid, str], data: st.DataObject
) -> None:
    grid, zone = grid_and_zone
    start = data.draw(near_offset_change(zone))
    middle = start + data.draw(st.timedeltas(timedelta(0), timedelta(hours=30)))
    end = middle + data.draw(st.timedeltas(timedelta(0), timedelta(hours=30)))

    whole = list(grid.between(start, end))

    assert whole == list(grid.between(start, middle)) + list(grid.between(middle, end))
    assert len(set(whole)) == len(whole)


@PROPERTY
@given(grid_and_zone=grids(), data=st.data())
def test_upcoming_chained_equals_between(
    grid_and_zone: tuple[TimeGrid, str], data: st.DataObject
) -> None:
    grid, zone = grid_and_zone
    start = data.draw(near_offset_change(zone))

    first = grid.upcoming(3, start)
    rest = grid.upcoming(4, first[-1])

    assert first + rest == grid.upcoming(7, start)
    assert list(grid.between(start, rest[-1])) == first + rest


@PROPERTY
@given(expression=cron_expressions(), after=instants(1995, 2090))
def test_cron_in_utc_matches_croniter(expression: str, after: datetime) -> None:
    after = after.replace(microsecond=0)

    assert CronGrid(expression).upcoming(5, after) == croniter_points(expression, after, 5)


@PROPERTY
@given(
    expression=cron_expressions(seconds=False, sparse_days=False),
    zone=st.sampled_from(DST_ZONES),
    gap=st.sampled_from(DST_GAP_CHOICES),
    fold=st.sampled_from(DST_FOLD_CHOICES),
    data=st.data(),
)
def test_cron_follows_the_dst_policy_around_offset_changes(
    expression: str, zone: str, gap: str, fold: str, data: st.DataObject
) -> None:
    change = data.draw(near_offset_change(zone)).replace(second=0)
    start, end = change - timedelta(hours=20), change + timedelta(hours=20)

    points = list(CronGrid(expression, zone, dst_gap=gap, dst_fold=fold).between(start, end))

    assert points == policy_points(expression, zone, start, end, gap=gap, fold=fold)


@PROPERTY
@given(
    zone=st.sampled_from(DST_ZONES),
    unit=st.sampled_from(("days", "weeks", "months", "years")),
    interval=st.integers(1, 3),
    gap=st.sampled_from(DST_GAP_CHOICES),
    fold=st.sampled_from(DST_FOLD_CHOICES),
    data=st.data(),
)
def test_calendar_interval_agrees_with_stepping_from_the_anchor(
    zone: str, unit: str, interval: int, gap: str, fold: str, data: st.DataObject
) -> None:
    anchor = data.draw(near_offset_change(zone)).replace(microsecond=0)
    grid = IntervalGrid(anchor, interval, unit, zone, dst_gap=gap, dst_fold=fold)
    anchor_wall = anchor.astimezone(ZoneInfo(zone)).replace(tzinfo=None, fold=0)

    walls = list(stepped_walls(anchor_wall, interval, unit, 12))
    expected = {anchor}
    for wall in walls:
        if wall != anchor_wall or fold == "both":
            expected.update(resolve_wall(wall, ZoneInfo(zone), gap=gap, fold=fold))
    ordered = sorted(expected)

    for earlier, later in pairwise(ordered):
        assert grid.next_after(earlier) == later
        assert grid.next_after(later - timedelta(microseconds=1)) == later


#: Zones whose offset changes by whole hours, and Lord_Howe's half hour with minute fields
#: that repeat every half hour.
WHOLE_HOUR_ZONES = (
    "Europe/London",
    "Europe/Prague",
    "America/New_York",
    "America/Santiago",
    "Australia/Sydney",
    "Pacific/Chatham",
)
HALF_HOURLY_MINUTES = ("0,30", "*/30", "*/15", "*/10", "15,45", "*")


@st.composite
def hourly_or_faster(draw: st.DrawFn) -> tuple[str, str]:
    """An every-hour expression (day fields ``*``) and a zone its spacing must survive."""
    if draw(st.booleans()):
        zone, minute = "Australia/Lord_Howe", draw(st.sampled_from(HALF_HOURLY_MINUTES))
    else:
        zone, minute = draw(st.sampled_from(WHOLE_HOUR_ZONES)), draw(st.sampled_from(MINUTE_FIELDS))
    seconds = draw(st.sampled_from(("", "0 ", "*/20 ", "15,45 ")))
    return f"{seconds}{minute} {draw(st.sampled_from(HOURS_EVERY))} * * *", zone


@PROPERTY
@given(case=hourly_or_faster(), data=st.data())
def test_hourly_or_faster_spacing_across_a_change_is_the_spacing_of_a_day_without_one(
    case: tuple[str, str], data: st.DataObject
) -> None:
    expression, zone = case
    change = data.draw(near_offset_change(zone)).replace(second=0)
    if not offset_changes(zone, change.year):
        return
    grid = CronGrid(expression, zone)

    def spacing(middle: datetime) -> list[timedelta]:
        points = list(grid.between(middle - timedelta(hours=12), middle + timedelta(hours=12)))
        return [later - earlier for earlier, later in pairwise(points)]

    assert spacing(change) == spacing(change - timedelta(days=2))


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "* 24 * * *"}, "cron"),
        ({"cron": "0 0 0 * *"}, "cron"),
        ({"cron": "0 0 * 13 *"}, "cron"),
        ({"cron": "0 0 * * 8"}, "cron"),
        ({"cron": "0 0 * * FUNDAY"}, "cron"),
        ({"cron": "*/0 * * * *"}, "cron"),
        ({"cron": "5-1 * * * *"}, "cron"),
        ({"cron": "1,,2 * * * *"}, "cron"),
        ({"cron": "0 0 * * L"}, "cron"),
        ({"cron": "0 0 H * *"}, "cron"),
        ({"cron": "* * * *"}, "cron"),
        ({"cron": "0 0 1 1 * 2030 x"}, "cron"),
        ({"cron": ""}, "cron"),
        ({"cron": "@reboot"}, "cron"),
        ({"cron": "0 0 30 2 *"}, "cron"),
        ({"cron": "0 0 31 4,6 *"}, "cron"),
        ({"cron": "? * * * *"}, "cron"),
        ({"cron": "0 0 * * *", "timezone": "Mars/Olympus"}, "timezone"),
        ({"cron": "0 0 * * *", "timezone": ""}, "timezone"),
        ({"cron": "0 0 * * *", "timezone": "../../etc/passwd"}, "timezone"),
        ({"cron": "0 0 * * *", "interval": 5, "interval_unit": "minutes"}, "cron"),
        ({"cron": "0 0 * * *", "anchor": utc(2025, 1, 1)}, "cron"),
        ({}, "cron"),
        ({"interval": 5, "interval_unit": "minutes"}, "anchor"),
        ({"anchor": datetime(2025, 1, 1), "interval": 5, "interval_unit": "minutes"}, "anchor"),
        ({"anchor": "2025-01-01", "interval": 5, "interval_unit": "minutes"}, "anchor"),
        ({"anchor": utc(2025, 1, 1), "interval_unit": "minutes"}, "interval"),
        ({"anchor": utc(2025, 1, 1), "interval": 0, "interval_unit": "minutes"}, "interval"),
        ({"anchor": utc(2025, 1, 1), "interval": -3, "interval_unit": "minutes"}, "interval"),
        ({"anchor": utc(2025, 1, 1), "interval": True, "interval_unit": "minutes"}, "interval"),
        ({"anchor": utc(2025, 1, 1), "interval": 1.5, "interval_unit": "minutes"}, "interval"),
        ({"anchor": utc(2025, 1, 1), "interval": 5}, "interval_unit"),
        (
            {"anchor": utc(2025, 1, 1), "interval": 5, "interval_unit": "fortnights"},
            "interval_unit",
        ),
        (
            {
                "anchor": utc(2025, 1, 1),
                "interval": 5,
                "interval_unit": "minutes",
                "timezone": "Nowhere",
            },
            "timezone",
        ),
    ],
)
def test_bad_schedule_fields_are_refused_naming_the_field(
    kwargs: dict[str, Any], field: str
) -> None:
    arguments: dict[str, Any] = {
        "cron": None,
        "anchor": None,
        "interval": None,
        "interval_unit": None,
    }

    with pytest.raises(ScheduleValidationError) as raised:
        make_grid(**(arguments | kwargs))

    assert raised.value.field == field
    assert str(raised.value).startswith(f"{field}: ")


def test_cron_error_says_what_is_wrong_and_shows_an_example() -> None:
    with pytest.raises(ScheduleValidationError) as raised:
        validate_cron("61 * * * *")

    assert "minute 61 is out of range 0-59" in raised.value.message
    assert "example: '*/15 * * * *'" in raised.value.message


def test_unknown_timezone_suggests_the_closest_name() -> None:
    with pytest.raises(ScheduleValidationError, match="did you mean 'Europe/Prague'"):
        validate_timezone("europe/prag")


def test_singular_interval_unit_suggests_the_plural() -> None:
    with pytest.raises(ScheduleValidationError, match=r"did you mean 'days'.*seconds, minutes"):
        make_grid(cron=None, anchor=utc(2025, 1, 1), interval=1, interval_unit="day")


def test_both_or_neither_kind_of_schedule_is_refused_with_the_fix() -> None:
    with pytest.raises(
        ScheduleValidationError, match="either cron or anchor\\+interval\\+interval_unit"
    ):
        make_grid(cron="* * * * *", anchor=utc(2025, 1, 1), interval=1, interval_unit="days")


@pytest.mark.parametrize(
    ("expression", "normal"),
    [
        ("  */5   *  * * mon-fri ", "*/5 * * * MON-FRI"),
        ("@Daily", "@daily"),
        ("0 30 2 * jan *", "0 30 2 * JAN *"),
    ],
)
def test_validate_cron_returns_the_normal_form(expression: str, normal: str) -> None:
    assert validate_cron(expression) == normal


def test_make_grid_builds_the_kind_of_grid_asked_for() -> None:
    cron = make_grid(
        cron="0 * * * *", anchor=None, interval=None, interval_unit=None, timezone="Europe/Prague"
    )
    interval = make_grid(cron=None, anchor=utc(2025, 1, 1), interval=2, interval_unit="weeks")

    assert isinstance(cron, CronGrid) and cron.timezone == "Europe/Prague"
    assert isinstance(interval, IntervalGrid) and interval.unit == "weeks"
    assert isinstance(cron, TimeGrid) and isinstance(interval, TimeGrid)


def test_upcoming_refuses_a_negative_count() -> None:
    with pytest.raises(ValueError, match="count"):
        CronGrid("* * * * *").upcoming(-1, utc(2025, 1, 1))
