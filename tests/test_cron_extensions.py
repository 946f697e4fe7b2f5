"""Cron syntax beyond POSIX: Vixie's day-field rule, SUN ending a range, L, W and #, the
seconds-first six-field form, and the errors for what stays refused."""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postburner_py.errors import ScheduleValidationError
from postburner_py.timegrid import CronGrid, validate_cron

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def utc(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


def days(expression: str, after: date, count: int = 6) -> list[str]:
    """The next ``count`` fire dates of a midnight expression, as ``Mon 2025-06-02``."""
    start = datetime(after.year, after.month, after.day, tzinfo=UTC) - timedelta(seconds=1)
    return [point.strftime("%a %Y-%m-%d") for point in CronGrid(expression).upcoming(count, start)]


# --------------------------------------------------------------------------- worked examples


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        # L: the last day; L-n: n days before it
        ("0 0 L * *", ["Fri 2025-02-28", "Mon 2025-03-31", "Wed 2025-04-30"]),
        ("0 0 L 2 *", ["Fri 2025-02-28", "Sat 2026-02-28", "Sun 2027-02-28", "Tue 2028-02-29"]),
        ("0 0 L-3 * *", ["Tue 2025-02-25", "Fri 2025-03-28", "Sun 2025-04-27"]),
        # LW: the last weekday; nW: the weekday nearest day n, never leaving the month
        ("0 0 LW * *", ["Fri 2025-02-28", "Mon 2025-03-31", "Wed 2025-04-30", "Fri 2025-05-30"]),
        ("0 0 15W * *", ["Fri 2025-02-14", "Fri 2025-03-14", "Tue 2025-04-15"]),
        ("0 0 1W 3 *", ["Mon 2025-03-03", "Mon 2026-03-02", "Mon 2027-03-01"]),  # Sat 1st: Mon 3rd
        ("0 0 31W 8 *", ["Fri 2025-08-29", "Mon 2026-08-31", "Tue 2027-08-31"]),  # Sun 31st: Fri
        ("0 0 31W * *", ["Mon 2025-03-31", "Fri 2025-05-30", "Thu 2025-07-31"]),  # no 31st: none
        # dL, d#L: the last weekday d; d#k: the k-th
        ("0 0 * * FRIL", ["Fri 2025-02-28", "Fri 2025-03-28", "Fri 2025-04-25"]),
        ("0 0 * * 5L", ["Fri 2025-02-28", "Fri 2025-03-28", "Fri 2025-04-25"]),
        ("0 0 * * FRI#L", ["Fri 2025-02-28", "Fri 2025-03-28", "Fri 2025-04-25"]),
        ("0 0 * * MON#1", ["Mon 2025-02-03", "Mon 2025-03-03", "Mon 2025-04-07"]),
        ("0 0 * * MON#1,MON#3", ["Mon 2025-02-03", "Mon 2025-02-17", "Mon 2025-03-03"]),
        ("0 0 * * SAT#5", ["Sat 2025-03-29", "Sat 2025-05-31", "Sat 2025-08-30"]),
        # both day fields restricted: either matches (L or Fridays)
        ("0 0 L * FRI", ["Fri 2025-02-07", "Fri 2025-02-14", "Fri 2025-02-21", "Fri 2025-02-28"]),
        # Vixie: a day field beginning with * restricts nothing of the other
        ("0 0 */1 * MON", ["Mon 2025-02-03", "Mon 2025-02-10", "Mon 2025-02-17"]),
        ("0 0 */2 * MON", ["Mon 2025-02-03", "Mon 2025-02-17", "Mon 2025-03-03"]),  # odd days
        ("0 0 1 * */2", ["Sat 2025-02-01", "Sat 2025-03-01", "Tue 2025-04-01"]),
        # SUN ends a range as 7; a/n in day-of-week runs to 7, Sunday
        ("0 0 * * MON-SUN", ["Sat 2025-02-01", "Sun 2025-02-02", "Mon 2025-02-03"]),
        ("0 0 * * SAT-SUN", ["Sat 2025-02-01", "Sun 2025-02-02", "Sat 2025-02-08"]),
        ("0 0 * * FRI/2", ["Sun 2025-02-02", "Fri 2025-02-07", "Sun 2025-02-09"]),
        ("0 0 * * MON/2", ["Sun 2025-02-02", "Mon 2025-02-03", "Wed 2025-02-05"]),
    ],
)
def test_day_field_examples(expression: str, expected: list[str]) -> None:
    assert days(expression, date(2025, 2, 1), len(expected)) == expected


def test_mon_through_sun_is_every_day_and_mon_slash_2_includes_sunday() -> None:
    every_day = CronGrid("0 0 * * *").upcoming(14, utc(2025, 2, 1))
    assert CronGrid("0 0 * * MON-SUN").upcoming(14, utc(2025, 2, 1)) == every_day
    assert CronGrid("0 0 * * MON-7").upcoming(14, utc(2025, 2, 1)) == every_day
    weekdays = {p.isoweekday() for p in CronGrid("0 0 * * MON/2").upcoming(20, utc(2025, 2, 1))}
    assert weekdays == {1, 3, 5, 7}


def test_a_fifth_monday_in_february_waits_for_a_leap_year_starting_on_monday() -> None:
    point = CronGrid("0 0 * 2 MON#5").next_after(utc(2025, 1, 1))

    assert point == utc(2044, 2, 29)
    assert date(2044, 2, 1).isoweekday() == 1


def test_six_fields_are_seconds_first_and_the_seconds_last_form_is_named_in_the_error() -> None:
    assert CronGrid("30 0 9 * * MON").upcoming(1, utc(2025, 2, 1)) == [
        datetime(2025, 2, 3, 9, 0, 30, tzinfo=UTC)
    ]
    with pytest.raises(ScheduleValidationError) as raised:
        validate_cron("0 9 * * 1 30")  # croniter: 09:00:30 on Mondays

    assert raised.value.field == "cron"
    assert "six fields are read seconds first" in raised.value.message
    assert "write '30 0 9 * * 1'" in raised.value.message


# --------------------------------------------------------------------------- refused


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("0 0 * * L", ("day-of-week 'L' alone", "FRIL")),
        ("0 0 1-5W * *", ("nW the weekday nearest day n", "one day number")),
        ("0 0 W * *", ("day-of-month 'W'",)),
        ("0 0 L-31 * *", ("L-n takes n from 0 to 30",)),
        ("0 0 32W * *", ("nW takes a day from 1 to 31",)),
        ("0 0 L/2 * *", ("day-of-month 'L/2'",)),
        ("0 0 LW-1 * *", ("day-of-month 'LW-1'",)),
        ("0 0 1#2 * *", ("# belongs in day-of-week",)),
        ("0 0 * * 15W", ("W belongs in day-of-month",)),
        ("0 0 * * MON#6", ("d#k takes k from 1 to 5",)),
        ("0 0 * * MON#0", ("d#k takes k from 1 to 5",)),
        ("0 0 * * MON-FRI#1", ("follow one weekday", "MON#1,MON#3")),
        ("0 0 * * 1-5L", ("follow one weekday",)),
        ("0 L * * *", ("hour 'L'", "day fields only")),
        ("0 0 * JUL#1 *", ("month 'JUL#1'", "day fields only")),
        ("H 0 * * *", ("H (hashed) and R (random)",)),
        ("0 R * * *", ("H (hashed) and R (random)",)),
        ("0 H/2 * * *", ("H (hashed) and R (random)",)),
        ("0 0 30W 2 *", ("never occurs in Feb", "never fire")),
        ("0 0 L-29 2 *", ("never occurs in Feb",)),
        ("0 0 * * FRI-0", ("runs backwards",)),
    ],
)
def test_invalid_extensions_are_refused_naming_the_field_and_the_fix(
    expression: str, words: tuple[str, ...]
) -> None:
    with pytest.raises(ScheduleValidationError) as raised:
        validate_cron(expression)

    assert raised.value.field == "cron"
    for word in words:
        assert word in raised.value.message


def test_month_and_weekday_names_holding_l_or_w_are_still_names() -> None:
    assert validate_cron("0 0 * jul,jun wed") == "0 0 * JUL,JUN WED"
    assert CronGrid("0 0 * JUL WEDL").next_after(utc(2025, 1, 1)) == utc(2025, 7, 30)


# --------------------------------------------------------------------------- against a slow oracle

DAY_ITEMS = ("1", "15", "31", "10-12", "L", "L-1", "L-6", "LW", "1W", "15W", "30W", "31W")
WEEKDAY_ITEMS = ("MON", "5", "SUN", "MON-WED", "FRIL", "1L", "0#1", "MON#2", "WED#5", "SAT#L")


def slow_day_of_month(item: str, day: date) -> bool:
    """One day-of-month item, from its definition."""
    last = calendar.monthrange(day.year, day.month)[1]
    weekdays = [d for d in range(1, last + 1) if date(day.year, day.month, d).isoweekday() < 6]
    if item == "L":
        return day.day == last
    if item.startswith("L-"):
        return day.day == last - int(item[2:])
    if item == "LW":
        return day.day == max(weekdays)
    if item.endswith("W"):
        wanted = int(item[:-1])
        return wanted <= last and day.day == min(weekdays, key=lambda d: abs(d - wanted))
    low, _, high = item.partition("-")
    return int(low) <= day.day <= int(high or low)


def slow_day_of_week(item: str, day: date) -> bool:
    """One day-of-week item, from its definition (0 and 7 are Sunday)."""
    names = {"SUN": 0, "MON": 1, "TUE": 2, "WED": 3, "THU": 4, "FRI": 5, "SAT": 6}
    weekday = day.isoweekday() % 7
    last = calendar.monthrange(day.year, day.month)[1]

    def number(text: str) -> int:
        return names[text] if text in names else int(text) % 7

    if "#" in item or item.endswith("L"):
        text, _, nth = item.rstrip("L").partition("#") if "#" in item else (item[:-1], "", "L")
        if number(text) != weekday:
            return False
        return day.day + 7 > last if nth in ("L", "") else (day.day - 1) // 7 + 1 == int(nth)
    low, _, high = item.partition("-")
    return number(low) <= weekday <= number(high or low)


@PROPERTY
@given(
    day_items=st.lists(st.sampled_from(DAY_ITEMS), min_size=1, max_size=3, unique=True),
    weekday_items=st.lists(st.sampled_from(WEEKDAY_ITEMS), min_size=1, max_size=3, unique=True),
    star=st.sampled_from(("none", "day", "weekday")),
    year=st.integers(2024, 2031),
)
def test_day_fields_select_the_days_their_definitions_give(
    day_items: list[str], weekday_items: list[str], star: str, year: int
) -> None:
    day_text = "*" if star == "day" else ",".join(day_items)
    weekday_text = "*" if star == "weekday" else ",".join(weekday_items)
    try:
        grid = CronGrid(f"0 0 {day_text} * {weekday_text}")
    except ScheduleValidationError:
        return  # never fires (checked by the refusal examples)
    start, end = utc(year, 1, 1) - timedelta(seconds=1), utc(year + 1, 1, 1) - timedelta(seconds=1)

    fired = {point.date() for point in grid.between(start, end)}

    def matches(day: date) -> bool:
        by_month = any(slow_day_of_month(item, day) for item in day_items)
        by_week = any(slow_day_of_week(item, day) for item in weekday_items)
        if star == "day":
            return by_week
        if star == "weekday":
            return by_month
        return by_month or by_week

    every_day = [date(year, 1, 1) + timedelta(days=n) for n in range(366)]
    assert fired == {day for day in every_day if day.year == year and matches(day)}


# --------------------------------------------------------------------------- in DST zones

ZONES = (
    "Europe/London",
    "Europe/Prague",
    "America/New_York",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "America/Santiago",
    "Australia/Sydney",
)
LOCAL_EXAMPLES = (
    "0 6 L * *",
    "0 6 L-2 * *",
    "0 6 LW * *",
    "0 6 15W * *",
    "0 6 * * FRIL",
    "0 6 * * MON#1",
    "0 6 */1 * MON",
    "0 6 * * SAT-SUN",
    "0 6 * * MON/3",
)


@pytest.mark.parametrize("zone", ZONES)
def test_the_day_fields_select_the_same_local_days_in_every_zone(zone: str) -> None:
    from zoneinfo import ZoneInfo

    for expression in LOCAL_EXAMPLES:
        local = CronGrid(expression, zone).upcoming(14, utc(2025, 1, 1))
        in_utc = CronGrid(expression).upcoming(14, utc(2025, 1, 1))
        walls = [point.astimezone(ZoneInfo(zone)).replace(tzinfo=None) for point in local]
        assert walls == [point.replace(tzinfo=None) for point in in_utc], expression


def shown(points: list[datetime], zone: str) -> list[str]:
    from zoneinfo import ZoneInfo

    return [point.astimezone(ZoneInfo(zone)).isoformat() for point in points]


def test_the_last_sunday_of_march_at_two_thirty_never_exists_in_prague() -> None:
    expression, after = "30 2 * 3 SUNL", utc(2025, 1, 1)

    shift = CronGrid(expression, "Europe/Prague").upcoming(2, after)

    assert shown(shift, "Europe/Prague") == [
        "2025-03-30T03:00:00+02:00",
        "2026-03-29T03:00:00+02:00",
    ]
    with pytest.raises(ScheduleValidationError) as never:
        CronGrid(expression, "Europe/Prague", dst_gap="skip").next_after(after)

    assert never.value.field == "dst_gap"
    assert "never fires with 'skip'" in never.value.message


def test_dst_days_named_with_the_extensions_follow_the_policy() -> None:
    fold = "30 1 * 10 SUNL"  # London's last Sunday of October: 01:30 happens twice
    both = CronGrid(fold, "Europe/London", dst_fold="both").upcoming(3, utc(2025, 10, 1))
    chile = "0 0 * 9 SUN#1"  # Santiago's first Sunday of September: midnight does not exist
    shift = CronGrid(chile, "America/Santiago").upcoming(1, utc(2025, 9, 1))
    skip = CronGrid(chile, "America/Santiago", dst_gap="skip").upcoming(1, utc(2025, 9, 1))

    assert shown(both, "Europe/London") == [
        "2025-10-26T01:30:00+01:00",
        "2025-10-26T01:30:00+00:00",
        "2026-10-25T01:30:00+01:00",
    ]
    assert shown(shift, "America/Santiago") == ["2025-09-07T01:00:00-03:00"]
    assert shown(skip, "America/Santiago") == ["2030-09-01T00:00:00-04:00"]  # not a DST day
