"""Schedule rows that cannot be planned (written with raw SQL, or naming a zone this host's
tzdata lacks) never stop the watchdog, a worker's chaining, or the operator's commands.

Such a row is treated as disabled until it is fixed: its occurrences not yet started are
superseded and their jobs deleted, it is counted ``invalid`` and logged once per pass, and
``postburner status`` exits 1 naming it. Every other schedule converges in the same pass.
"""

from __future__ import annotations

import logging
import zoneinfo
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, func, select, text

from postburner_py import Postburner, Schedule, ScheduleExecution
from postburner_py.cli.status import collect_status
from postburner_py.errors import UnplannableScheduleError
from postburner_py.schedules.chaining import chain_next_many
from postburner_py.timegrid.zones import InstalledZones, using_zones
from postburner_py.watchdog.process import tick
from tests.factories import ManualClock, create_schedule
from tests.test_watchdog import _bulk_schedules

MakePostburner = Callable[..., Postburner]
pytestmark = pytest.mark.usefixtures("database_url")

_INTERVAL = {"cron": None, "anchor": datetime(2025, 1, 1, tzinfo=UTC), "interval": 1}

#: (how the schedule was saved, the raw SQL that breaks it, words the reason must contain)
CORRUPTIONS = {
    "unknown timezone": ({}, "timezone = 'Mars/Olympus'", "Mars/Olympus"),
    "garbage cron": ({}, "cron = 'garbage'", "garbage"),
    "unknown interval unit": (
        {**_INTERVAL, "interval_unit": "days"},
        "interval_unit = 'fortnights'",
        "fortnights",
    ),
    "a grid with no point before year 9999": (
        {**_INTERVAL, "interval_unit": "days"},
        "interval = 1000000, interval_unit = 'years'",
        "9999",
    ),
}


def _clock() -> ManualClock:
    return ManualClock(datetime.now(UTC).replace(microsecond=0))


def _sql(pb: Postburner, statement: str, **params: Any) -> None:
    with pb.session() as session:
        session.execute(text(statement), params)
        session.commit()


def _corrupt(pb: Postburner, schedule_id: int, assignment: str) -> None:
    _sql(pb, f"UPDATE postburner_schedules SET {assignment} WHERE id = :id", id=schedule_id)


def _name(pb: Postburner, schedule_id: int) -> str:
    with pb.session() as session:
        return session.get_one(Schedule, schedule_id).name


def _live(pb: Postburner, schedule_id: int, now: datetime) -> list[ScheduleExecution]:
    with pb.session() as session:
        return list(
            session.scalars(
                select(ScheduleExecution).where(
                    ScheduleExecution.schedule_id == schedule_id,
                    ScheduleExecution.status.in_(["pending", "scheduled"]),
                    ScheduleExecution.run_at > now,
                )
            )
        )


def _warnings_naming(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno >= logging.WARNING and name in record.getMessage()
    ]


@pytest.fixture
def commits() -> Iterator[Callable[[Postburner], list[int]]]:
    """``commits(pb)``: a one-item list counting the COMMITs of ``pb``'s engine."""
    listened: list[tuple[Any, Callable[..., None]]] = []

    def count(pb: Postburner) -> list[int]:
        seen = [0]

        def on_commit(_connection: Any) -> None:
            seen[0] += 1

        event.listen(pb.engine, "commit", on_commit)
        listened.append((pb.engine, on_commit))
        return seen

    yield count
    for engine, listener in listened:
        event.remove(engine, "commit", listener)


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_a_row_that_cannot_be_planned_is_counted_invalid_and_every_other_schedule_converges(
    make_postburner: MakePostburner, caplog: pytest.LogCaptureFixture, corruption: str
) -> None:
    saved_as, assignment, words = CORRUPTIONS[corruption]
    clock = _clock()
    pb = make_postburner(clock=clock)
    good = [create_schedule(pb) for _ in range(3)]
    bad = create_schedule(pb, **saved_as)
    [queued] = _live(pb, bad, clock())
    _corrupt(pb, bad, assignment)
    for schedule_id in good:  # the good ones need converging in the same pass
        _corrupt(pb, schedule_id, "cron = '30 * * * *'")
    with caplog.at_level(logging.WARNING):
        report = tick(pb, now=clock())
    name = _name(pb, bad)
    assert (report.invalid, report.repaired, report.created) == (1, 3, 3)
    assert list(report.invalid_schedules) == [name]
    assert words in report.invalid_schedules[name]
    for schedule_id in good:
        [execution] = _live(pb, schedule_id, clock())
        assert execution.run_at.minute == 30
        assert execution.beanstalk_job_id is not None
    # Treated as disabled: nothing fires on a grid that can no longer be checked.
    assert _live(pb, bad, clock()) == []
    assert queued.beanstalk_job_id is not None and pb.queue.peek(queued.beanstalk_job_id) is None
    [line] = _warnings_naming(caplog, name)
    assert "cannot be planned" in line and words in line
    assert "Traceback" not in caplog.text

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        again = tick(pb, now=clock())
    assert (again.invalid, again.created, again.repaired) == (1, 0, 0)
    assert len(_warnings_naming(caplog, name)) == 1  # once per pass


def test_a_fixed_row_is_queued_again_by_the_next_pass(make_postburner: MakePostburner) -> None:
    clock = _clock()
    pb = make_postburner(clock=clock)
    bad = create_schedule(pb)
    _corrupt(pb, bad, "timezone = 'Mars/Olympus'")
    assert tick(pb, now=clock()).invalid == 1
    _corrupt(pb, bad, "timezone = 'Europe/Prague'")
    report = tick(pb, now=clock())
    assert (report.invalid, report.created) == (0, 1)
    [execution] = _live(pb, bad, clock())
    assert execution.cached_schedule["timezone"] == "Europe/Prague"


def test_a_zone_this_hosts_tzdata_lacks_does_not_stop_the_others(
    make_postburner: MakePostburner,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = _clock()
    pb = make_postburner(clock=clock)
    # Saved on a host that knows the zone; its chain then broke (the execution retired).
    kanton = create_schedule(pb, timezone="Pacific/Kanton")
    _sql(
        pb,
        "UPDATE postburner_schedule_executions SET status = 'superseded' WHERE schedule_id = :id",
        id=kanton,
    )
    good = [create_schedule(pb) for _ in range(2)]
    _sql(
        pb,
        "UPDATE postburner_schedule_executions SET status = 'superseded' "
        "WHERE schedule_id IN (:a, :b)",
        a=good[0],
        b=good[1],
    )

    class WithoutKanton(InstalledZones):
        def zone(self, name: str) -> zoneinfo.ZoneInfo:
            if name == "Pacific/Kanton":
                raise zoneinfo.ZoneInfoNotFoundError(f"No time zone found with key {name}")
            return super().zone(name)

    with using_zones(WithoutKanton()), caplog.at_level(logging.WARNING):
        report = tick(pb, now=clock())
    assert (report.invalid, report.created) == (1, 2)
    assert "Pacific/Kanton" in report.invalid_schedules[_name(pb, kanton)]
    assert all(len(_live(pb, schedule_id, clock())) == 1 for schedule_id in good)
    assert _live(pb, kanton, clock()) == []
    assert len(_warnings_naming(caplog, _name(pb, kanton))) == 1


def test_a_pass_over_many_good_rows_and_a_few_bad_ones_converges_the_good_in_few_commits(
    make_postburner: MakePostburner, commits: Callable[[Postburner], list[int]]
) -> None:
    clock = _clock()
    pb = make_postburner(clock=clock)
    new_good = _bulk_schedules(pb, 300)
    new_bad = _bulk_schedules(pb, 2, timezone="Mars/Olympus") + _bulk_schedules(
        pb, 2, cron="garbage"
    )
    drifted_good = [create_schedule(pb) for _ in range(20)]
    drifted_bad = [create_schedule(pb) for _ in range(3)]
    for schedule_id in drifted_good:
        _corrupt(pb, schedule_id, "cron = '30 * * * *'")
    for schedule_id in drifted_bad:
        _corrupt(pb, schedule_id, "cron = 'not a cron'")
    seen = commits(pb)
    report = tick(pb, now=clock())
    assert report.invalid == len(new_bad) + len(drifted_bad) == 7
    assert report.created == len(new_good) + len(drifted_good)
    with pb.session() as session:
        live = dict(
            session.execute(
                select(ScheduleExecution.schedule_id, func.count())
                .where(
                    ScheduleExecution.status.in_(["pending", "scheduled"]),
                    ScheduleExecution.run_at > clock(),
                )
                .group_by(ScheduleExecution.schedule_id)
            ).all()
        )
    assert live == {schedule_id: 1 for schedule_id in new_good + drifted_good}
    # Set-based: a handful of transactions per pass, never one per row (bad ones included).
    assert seen[0] <= 12, seen[0]


def test_reconcile_of_a_row_that_cannot_be_planned_raises_a_clear_error_and_retires_its_job(
    make_postburner: MakePostburner,
) -> None:
    clock = _clock()
    pb = make_postburner(clock=clock)
    bad = create_schedule(pb)
    [queued] = _live(pb, bad, clock())
    _corrupt(pb, bad, "timezone = 'Mars/Olympus'")
    with pb.session() as session:
        schedule = session.get_one(Schedule, bad)
        with pytest.raises(UnplannableScheduleError) as caught:
            schedule.reconcile(now=clock())
    assert caught.value.name == schedule.name
    assert "Mars/Olympus" in str(caught.value) and schedule.name in str(caught.value)
    assert _live(pb, bad, clock()) == []
    assert queued.beanstalk_job_id is not None and pb.queue.peek(queued.beanstalk_job_id) is None


def test_chaining_a_row_that_cannot_be_planned_logs_it_and_chains_the_others(
    make_postburner: MakePostburner, caplog: pytest.LogCaptureFixture
) -> None:
    clock = _clock()
    pb = make_postburner(clock=clock)
    good, bad = create_schedule(pb), create_schedule(pb)
    [good_first] = _live(pb, good, clock())
    [bad_first] = _live(pb, bad, clock())
    _corrupt(pb, bad, "cron = 'garbage'")
    reached = clock.advance(hours=1)  # both first occurrences have come
    assert good_first.run_at <= reached and bad_first.run_at <= reached
    with caplog.at_level(logging.WARNING):
        chain_next_many(pb, {good: good_first.run_at, bad: bad_first.run_at}, now=reached)
    [following] = _live(pb, good, reached)
    assert following.run_at > good_first.run_at
    assert _live(pb, bad, reached) == []
    [line] = _warnings_naming(caplog, _name(pb, bad))
    assert "garbage" in line


def test_status_names_a_row_that_cannot_be_planned_and_is_unhealthy(
    make_postburner: MakePostburner,
) -> None:
    clock = _clock()
    pb = make_postburner(clock=clock)
    create_schedule(pb, name="fine")
    bad = create_schedule(pb, name="broken")
    _corrupt(pb, bad, "timezone = 'Mars/Olympus'")
    report = collect_status(pb, now=clock())
    rows = {row["name"]: row for row in report["schedules"]}
    assert rows["fine"]["invalid"] is None
    assert "Mars/Olympus" in rows["broken"]["invalid"]
    assert report["healthy"] is False
    _corrupt(pb, bad, "enabled = false")  # a disabled bad row harms nothing
    problems = collect_status(pb, now=clock())["problems"]
    assert problems and not any("broken" in problem for problem in problems)  # no worker yet


def test_the_metrics_show_how_many_schedules_the_last_pass_could_not_plan() -> None:
    from prometheus_client import generate_latest

    from postburner_py.watchdog.process import PassReport, WatchdogMetrics

    metrics = WatchdogMetrics()
    metrics.observe("reconcile", PassReport(invalid=3), queue_up=True)
    metrics.observe("audit", PassReport(), queue_up=True)
    assert b"postburner_watchdog_invalid_schedules 3.0" in generate_latest(metrics.registry)


def test_a_row_that_cannot_be_planned_can_be_disabled_but_not_enabled(
    make_postburner: MakePostburner,
) -> None:
    from postburner_py.cli.admin import set_enabled

    clock = _clock()
    pb = make_postburner(clock=clock)
    bad = create_schedule(pb, name="broken")
    [queued] = _live(pb, bad, clock())
    _corrupt(pb, bad, "timezone = 'Mars/Olympus'")
    result = set_enabled(pb, "broken", False, now=clock())
    assert (result.enabled, result.changed, result.next_run_at) == (False, True, None)
    assert _live(pb, bad, clock()) == []
    assert queued.beanstalk_job_id is not None and pb.queue.peek(queued.beanstalk_job_id) is None
    with pytest.raises(UnplannableScheduleError, match=r"'broken'.*Mars/Olympus"):
        set_enabled(pb, "broken", True, now=clock())
    with pb.session() as session:
        assert session.get_one(Schedule, bad).enabled is False  # nothing written


@pytest.mark.parametrize(
    ("assignment", "words"),
    [
        ("anchor = 'garbage'", "anchor: stored value 'garbage'"),
        ("anchor = 12345", "anchor: stored value 12345"),
        ("resumed_at = 'now'", "resumed_at: stored value 'now'"),
    ],
)
def test_an_sqlite_instant_that_cannot_even_be_loaded_is_set_aside_before_the_others(
    make_postburner: MakePostburner, database_url: str, assignment: str, words: str
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's timestamptz columns cannot hold such a value")
    clock = _clock()
    pb = make_postburner(clock=clock)
    bad = create_schedule(pb, name="broken", **{**_INTERVAL, "interval_unit": "days"})
    [queued] = _live(pb, bad, clock())
    good = [create_schedule(pb) for _ in range(2)]
    for schedule_id in good:
        _corrupt(pb, schedule_id, "cron = '30 * * * *'")
    fresh = _bulk_schedules(pb, 3)
    _corrupt(pb, bad, assignment)
    report = tick(pb, now=clock())
    assert (report.invalid, report.repaired, report.created) == (1, 2, 5)
    assert words in report.invalid_schedules["broken"]
    assert all(len(_live(pb, schedule_id, clock())) == 1 for schedule_id in good + fresh)
    assert _live(pb, bad, clock()) == []
    assert queued.beanstalk_job_id is not None and pb.queue.peek(queued.beanstalk_job_id) is None
    [row] = [row for row in collect_status(pb, now=clock())["schedules"] if row["name"] == "broken"]
    assert words in row["invalid"]
    assert tick(pb, now=clock()).invalid == 1

    from postburner_py.cli.admin import set_enabled

    with pytest.raises(UnplannableScheduleError, match="'broken'"):
        set_enabled(pb, "broken", True, now=clock())
    assert set_enabled(pb, "broken", False, now=clock()).enabled is False
    assert tick(pb, now=clock()).invalid == 0  # disabled: nothing to plan
