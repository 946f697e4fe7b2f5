"""DST: hourly-or-faster schedules follow elapsed time through gaps and folds; fixed-hour
schedules follow their ``dst_gap`` and ``dst_fold``. Worked examples in seven zones (both
hemispheres, half-hour and 45-minute offsets, changes at midnight), then the schedule's side:
validation, the snapshot, schedule files, and the occurrence keys of ``dst_fold="both"``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from postburner_py import Postburner, Schedule
from postburner_py.errors import ScheduleFileError, ScheduleValidationError
from postburner_py.keys import idempotency_key
from postburner_py.schedules.schedule_file import sync
from postburner_py.store.dispatch_log import SqlDispatchRegistry
from postburner_py.timegrid import CronGrid, IntervalGrid
from tests.factories import ManualClock, make_schedule

MakePostburner = Callable[..., Postburner]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def shown(points: list[datetime], zone: str) -> list[str]:
    return [point.astimezone(ZoneInfo(zone)).isoformat() for point in points]


# --------------------------------------------------------------------------- hourly or faster

#: (zone, expression, after, the next three points in local time). In a gap nothing extra
#: fires: the spacing in elapsed time is that of any other day (Lord_Howe's half-hour change
#: cannot keep an hourly spacing: 90 minutes, as through its fold).
ELAPSED_EXAMPLES = [
    (
        "Europe/London",
        "7 * * * *",
        "2025-03-29 23:30",
        ["2025-03-30T00:07:00+00:00", "2025-03-30T02:07:00+01:00", "2025-03-30T03:07:00+01:00"],
    ),
    (
        "Europe/Prague",
        "45 * * * *",
        "2025-03-30 00:00",
        ["2025-03-30T01:45:00+01:00", "2025-03-30T03:45:00+02:00", "2025-03-30T04:45:00+02:00"],
    ),
    (
        "America/New_York",
        "*/30 * * * *",
        "2025-03-09 06:15",
        ["2025-03-09T01:30:00-05:00", "2025-03-09T03:00:00-04:00", "2025-03-09T03:30:00-04:00"],
    ),
    (
        "Australia/Lord_Howe",
        "0 * * * *",
        "2025-10-04 14:00",
        ["2025-10-05T01:00:00+10:30", "2025-10-05T03:00:00+11:00", "2025-10-05T04:00:00+11:00"],
    ),
    (
        "Pacific/Chatham",
        "0 * * * *",
        "2025-09-27 13:00",
        ["2025-09-28T02:00:00+12:45", "2025-09-28T04:00:00+13:45", "2025-09-28T05:00:00+13:45"],
    ),
    (
        "Australia/Sydney",
        "0 * * * *",
        "2025-10-04 14:30",
        ["2025-10-05T01:00:00+10:00", "2025-10-05T03:00:00+11:00", "2025-10-05T04:00:00+11:00"],
    ),
    (
        "America/Santiago",
        "0 * * * *",
        "2025-09-07 02:30",
        ["2025-09-06T23:00:00-04:00", "2025-09-07T01:00:00-03:00", "2025-09-07T02:00:00-03:00"],
    ),
    # folds: both occurrences, elapsed spacing
    (
        "Australia/Sydney",
        "0 * * * *",
        "2025-04-05 14:30",
        ["2025-04-06T02:00:00+11:00", "2025-04-06T02:00:00+10:00", "2025-04-06T03:00:00+10:00"],
    ),
    (
        "America/Santiago",
        "30 * * * *",
        "2025-04-06 02:00",
        ["2025-04-05T23:30:00-03:00", "2025-04-05T23:30:00-04:00", "2025-04-06T00:30:00-04:00"],
    ),
]


@pytest.mark.parametrize(("zone", "expression", "after", "expected"), ELAPSED_EXAMPLES)
def test_hourly_or_faster_follows_elapsed_time_through_gaps_and_folds(
    zone: str, expression: str, after: str, expected: list[str]
) -> None:
    points = CronGrid(expression, zone).upcoming(3, utc(after))

    assert shown(points, zone) == expected


def test_an_hourly_job_keeps_its_hour_spacing_through_the_spring_gap() -> None:
    points = CronGrid("7 * * * *", "Europe/London").upcoming(5, utc("2025-03-29 22:30"))

    assert {later - earlier for earlier, later in pairwise(points)} == {timedelta(hours=1)}


def test_hourly_or_faster_ignores_the_policy() -> None:
    after = utc("2025-10-25 22:00")
    default = CronGrid("*/30 * * * *", "Europe/Prague").upcoming(8, after)

    for gap, fold in (("skip", "first"), ("shift", "last"), ("skip", "both")):
        grid = CronGrid("*/30 * * * *", "Europe/Prague", dst_gap=gap, dst_fold=fold)
        assert grid.hourly_or_faster
        assert grid.upcoming(8, after) == default


# --------------------------------------------------------------------------- fixed hours

#: (zone, expression, offset change (UTC), points within 12 hours of it per policy).
GAPS = [
    ("Europe/London", "30 1 * * *", "2025-03-30 01:00", "2025-03-30T02:00:00+01:00"),
    ("Europe/Prague", "30 2 * * *", "2025-03-30 01:00", "2025-03-30T03:00:00+02:00"),
    ("America/New_York", "30 2 * * *", "2025-03-09 07:00", "2025-03-09T03:00:00-04:00"),
    ("Australia/Lord_Howe", "15 2 * * *", "2025-10-04 15:30", "2025-10-05T02:30:00+11:00"),
    ("Pacific/Chatham", "0 3 * * *", "2025-09-27 14:00", "2025-09-28T03:45:00+13:45"),
    ("Australia/Sydney", "30 2 * * *", "2025-10-04 16:00", "2025-10-05T03:00:00+11:00"),
    ("America/Santiago", "0 0 * * *", "2025-09-07 04:00", "2025-09-07T01:00:00-03:00"),
]
FOLDS = [
    ("Europe/London", "30 1 * * *", "2025-10-26 01:00", "+01:00", "+00:00"),
    ("Europe/Prague", "30 2 * * *", "2025-10-26 01:00", "+02:00", "+01:00"),
    ("America/New_York", "30 1 * * *", "2025-11-02 06:00", "-04:00", "-05:00"),
    ("Australia/Lord_Howe", "45 1 * * *", "2025-04-05 15:00", "+11:00", "+10:30"),
    ("Pacific/Chatham", "0 3 * * *", "2025-04-05 14:00", "+13:45", "+12:45"),
    ("Australia/Sydney", "30 2 * * *", "2025-04-05 16:00", "+11:00", "+10:00"),
    ("America/Santiago", "30 23 * * *", "2025-04-06 03:00", "-03:00", "-04:00"),
]


def around(grid: CronGrid | IntervalGrid, change: str) -> list[datetime]:
    middle = utc(change)
    return list(grid.between(middle - timedelta(hours=12), middle + timedelta(hours=12)))


@pytest.mark.parametrize(("zone", "expression", "change", "after_gap"), GAPS)
def test_a_time_a_gap_skips_shifts_to_the_gaps_end_or_is_skipped(
    zone: str, expression: str, change: str, after_gap: str
) -> None:
    shift = CronGrid(expression, zone)
    skip = CronGrid(expression, zone, dst_gap="skip")

    assert shown(around(shift, change), zone) == [after_gap]
    assert around(skip, change) == []
    next_day = utc(change) + timedelta(hours=12)
    assert skip.next_after(next_day) == shift.next_after(next_day)  # only that day differs


@pytest.mark.parametrize(("zone", "expression", "change", "first", "last"), FOLDS)
def test_a_time_a_fold_repeats_runs_first_last_or_both(
    zone: str, expression: str, change: str, first: str, last: str
) -> None:
    def offsets(fold: str) -> list[str]:
        points = around(CronGrid(expression, zone, dst_fold=fold), change)
        return [text[-6:] for text in shown(points, zone)]

    assert offsets("first") == [first]
    assert offsets("last") == [last]
    assert offsets("both") == [first, last]
    both = around(CronGrid(expression, zone, dst_fold="both"), change)
    assert both[1] - both[0] == timedelta(hours=1) or zone == "Australia/Lord_Howe"


def test_calendar_intervals_follow_the_policy_too() -> None:
    anchor = datetime(2025, 1, 1, 2, 30, tzinfo=ZoneInfo("Europe/Prague"))

    def points(gap: str, fold: str, start: str) -> list[str]:
        grid = IntervalGrid(anchor, 1, "days", "Europe/Prague", dst_gap=gap, dst_fold=fold)
        return shown(grid.upcoming(3, utc(start)), "Europe/Prague")

    assert points("skip", "first", "2025-03-29 00:00") == [
        "2025-03-29T02:30:00+01:00",
        "2025-03-31T02:30:00+02:00",
        "2025-04-01T02:30:00+02:00",
    ]
    assert points("shift", "both", "2025-10-25 12:00") == [
        "2025-10-26T02:30:00+02:00",
        "2025-10-26T02:30:00+01:00",
        "2025-10-27T02:30:00+01:00",
    ]
    assert points("shift", "last", "2025-10-25 12:00")[0] == "2025-10-26T02:30:00+01:00"


def test_a_bad_policy_names_the_field_and_the_choices() -> None:
    with pytest.raises(ScheduleValidationError) as gap:
        CronGrid("30 2 * * *", "Europe/Prague", dst_gap="later")
    with pytest.raises(ScheduleValidationError) as fold:
        IntervalGrid(utc("2025-01-01 00:00"), 1, "days", dst_fold="second")

    assert (gap.value.field, fold.value.field) == ("dst_gap", "dst_fold")
    assert "use one of: shift, skip" in gap.value.message
    assert "use one of: first, last, both" in fold.value.message


# --------------------------------------------------------------------------- schedules


def test_a_schedule_with_a_bad_policy_is_refused_and_nothing_is_written(
    database_url: str, make_postburner: MakePostburner
) -> None:
    pb = make_postburner()
    for field, value in (("dst_gap", "never"), ("dst_fold", 2), ("dst_fold", None)):
        with pytest.raises(ScheduleValidationError) as raised, pb.session() as session:
            session.add(make_schedule(**{field: value}))
            session.commit()
        assert raised.value.field == field
    # Prague's last Sunday of March has no 02:30: with "skip" it would never run
    never = {"cron": "30 2 * 3 SUNL", "timezone": "Europe/Prague", "dst_gap": "skip"}
    with (
        pytest.raises(ScheduleValidationError, match="never fires") as raised,
        pb.session() as session,
    ):
        session.add(make_schedule(**never))
        session.commit()
    assert raised.value.field == "dst_gap"
    with pb.session() as session:
        assert session.scalar(select(func.count()).select_from(Schedule)) == 0


def test_the_policy_is_part_of_the_snapshot_and_a_change_supersedes_the_queued_run(
    database_url: str, make_postburner: MakePostburner
) -> None:
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    pb = make_postburner(clock=clock)
    with pb.session() as session:
        schedule = make_schedule(cron="30 2 * * *", timezone="Europe/Prague")
        session.add(schedule)
        session.commit()
        [queued] = schedule.future_live(clock())
        assert (queued.cached_schedule["dst_gap"], queued.cached_schedule["dst_fold"]) == (
            "shift",
            "first",
        )
        schedule.dst_fold = "both"
        session.commit()
        [replacing] = schedule.future_live(clock())
        session.refresh(queued)
        assert queued.status == "superseded"
        assert replacing.cached_schedule["dst_fold"] == "both"


def test_a_schedule_file_sets_the_policy_and_refuses_a_bad_one(
    database_url: str, make_postburner: MakePostburner, tmp_path: Path
) -> None:
    pb = make_postburner()
    path = tmp_path / "schedules.yml"

    def write(**fields: Any) -> None:
        lines = "".join(f"      {name}: {value}\n" for name, value in fields.items())
        path.write_text(
            "production:\n  jobs:\n    - key: nightly\n      job_class: tests.jobs:record_run\n"
            f'      cron: "30 2 * * *"\n      timezone: Europe/Prague\n{lines}'
        )

    write(dst_gap="skip", dst_fold="both")
    sync(pb, path, env="production")
    with pb.session() as session:
        stored = session.scalars(select(Schedule)).one()
        assert (stored.dst_gap, stored.dst_fold) == ("skip", "both")

    write(dst_fold="twice")
    with pytest.raises(ScheduleFileError, match=r"dst_fold.*first, last, both"):
        sync(pb, path, env="production")


def test_both_occurrences_of_a_fold_are_distinct_occurrences_with_distinct_keys(
    database_url: str, make_postburner: MakePostburner
) -> None:
    pb = make_postburner()
    schedule = make_schedule(
        name="fold-both", cron="30 2 * * *", timezone="Europe/Prague", dst_fold="both"
    )
    first, second = schedule.upcoming(2, utc("2025-10-25 12:00"))
    assert second - first == timedelta(hours=1)

    keys = {idempotency_key(pb.settings.namespace, schedule.name, at) for at in (first, second)}
    registry = SqlDispatchRegistry(sessionmaker(pb.engine), node_id="node-a")
    claims = [
        registry.claim(schedule.name, at, lease_seconds=60, max_attempts=1, now=at)
        for at in (first, second)
    ]
    assert len(keys) == 2
    assert all(claim.should_run for claim in claims)
