"""tzdata drift: executions planned with one set of zone rules are moved when the rules change.

Each test plans with the installed rules, then reconciles with a crafted rule set in which
Europe/Prague keeps one fixed offset (a country abolishing DST), an hour ahead of the one it
has today, loaded from a TZif file written here (``ZoneInfo.from_file``).
"""

from __future__ import annotations

import io
import json
import logging
import struct
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from postburner_py import Postburner, Schedule, ScheduleExecution
from postburner_py.store import store_for
from postburner_py.store.sql.schedules import SqlScheduleStore
from postburner_py.timegrid.zones import InstalledZones, using_zones, zone_fingerprint
from postburner_py.watchdog.process import tick
from postburner_py.watchdog.tzdata_drift import SETTING_KEY, RulesRecord
from tests.factories import ManualClock, create_schedule

MakePostburner = Callable[..., Postburner]
PRAGUE = "Europe/Prague"


def fixed_offset_tzif(offset_seconds: int) -> bytes:
    """A version-1 TZif file of one fixed offset, no transitions (RFC 8536)."""
    designation = b"FIX\0"
    counts = (0, 0, 0, 0, 1, len(designation))  # isut, isstd, leap, time, type, char
    header = b"TZif" + b"\0" + b"\0" * 15 + struct.pack(">6l", *counts)
    return header + struct.pack(">lBB", offset_seconds, 0, 0) + designation


class RuleSet:
    """A zone source: the installed rules, but for the zones it overrides, and a version."""

    def __init__(self, version: str, overrides: dict[str, ZoneInfo]) -> None:
        self._version = version
        self._overrides = overrides

    def zone(self, name: str) -> ZoneInfo:
        return self._overrides.get(name) or ZoneInfo(name)

    def version(self) -> str:
        return self._version


class InstalledAs(InstalledZones):
    """The installed rules under a version name of the test's choosing."""

    def __init__(self, version: str) -> None:
        self._version = version

    def version(self) -> str:
        return self._version


def prague_without_dst(now: datetime) -> RuleSet:
    """Europe/Prague fixed one hour ahead of its offset at ``now``: every daily time moves."""
    offset = now.astimezone(ZoneInfo(PRAGUE)).utcoffset()
    assert offset is not None
    data = fixed_offset_tzif(int(offset.total_seconds()) + 3600)
    return RuleSet("crafted-2", {PRAGUE: ZoneInfo.from_file(io.BytesIO(data), key=PRAGUE)})


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def installed() -> Iterator[None]:
    with using_zones(InstalledAs("installed-1")):
        yield


def _future(pb: Postburner, now: datetime) -> dict[str, ScheduleExecution]:
    with pb.session() as session:
        rows = session.scalars(
            select(ScheduleExecution).where(
                ScheduleExecution.status.in_(["pending", "scheduled"]),
                ScheduleExecution.run_at > now,
            )
        )
        return {str(e.cached_schedule["name"]): e for e in rows}


def _record(pb: Postburner) -> RulesRecord | None:
    with pb.session() as session:
        return RulesRecord.from_json(store_for(session).read_setting(session, SETTING_KEY))


def _plan_four(pb: Postburner, clock: ManualClock) -> dict[str, ScheduleExecution]:
    """Daily and hourly crons and a daily interval in Prague, a daily cron in New York.

    The interval's anchor is an instant: under new rules its wall time may be another.
    """
    create_schedule(pb, name="prague-daily", cron="30 9 * * *", timezone=PRAGUE)
    create_schedule(pb, name="prague-hourly", cron="0 * * * *", timezone=PRAGUE)
    anchor = datetime(2025, 1, 1, 9, tzinfo=ZoneInfo(PRAGUE))
    create_schedule(
        pb,
        name="prague-interval",
        cron=None,
        anchor=anchor,
        interval=1,
        interval_unit="days",
        timezone=PRAGUE,
    )
    create_schedule(pb, name="new-york", cron="30 9 * * *", timezone="America/New_York")
    tick(pb, now=clock())  # records the rules planned with
    return _future(pb, clock())


def test_executions_planned_with_old_zone_rules_move_when_the_rules_change(
    database_url: str,
    make_postburner: MakePostburner,
    clock: ManualClock,
    installed: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pb = make_postburner(clock=clock)
    before = _plan_four(pb, clock)
    assert _record(pb) is not None and _record(pb).version == "installed-1"  # type: ignore[union-attr]

    with using_zones(prague_without_dst(clock())), caplog.at_level(logging.WARNING):
        report = tick(pb, now=clock())
        after = _future(pb, clock())
        assert tick(pb, now=clock()).repaired == 0  # the new rules are recorded

    with pb.session() as session, using_zones(prague_without_dst(clock())):
        expected = {  # every live execution is its schedule's next point by the new rules
            s.name: s.next_run_at(clock()) for s in session.scalars(select(Schedule))
        }
    assert {name: e.run_at for name, e in after.items()} == expected
    moved = {name for name in before if before[name].run_at != expected[name]}
    assert {"prague-daily"} <= moved <= {"prague-daily", "prague-interval"}
    assert after["prague-daily"].run_at == before["prague-daily"].run_at - timedelta(hours=1)
    for name in moved:
        assert after[name].id != before[name].id
        assert f"schedule {name}: queued run_at {before[name].run_at.isoformat()} moved to" in (
            caplog.text
        )
    for name in set(before) - moved:  # same instants (hourly), or a zone that did not change
        assert after[name].id == before[name].id
    assert report.superseded == report.created == len(moved)
    assert "zones with new rules in use: Europe/Prague" in caplog.text
    record = _record(pb)
    assert record is not None and record.version == "crafted-2"
    assert len(after) == 4 and all(e.enqueued for e in after.values())


def test_a_new_version_with_the_same_rules_moves_nothing_and_is_recorded(
    database_url: str, make_postburner: MakePostburner, clock: ManualClock, installed: None
) -> None:
    pb = make_postburner(clock=clock)
    before = _plan_four(pb, clock)

    with using_zones(InstalledAs("installed-2")):
        report = tick(pb, now=clock())

    assert (report.superseded, report.created) == (0, 0)
    assert {n: e.id for n, e in _future(pb, clock()).items()} == {
        n: e.id for n, e in before.items()
    }
    record = _record(pb)
    assert record is not None and record.version == "installed-2"
    zone = ZoneInfo(PRAGUE)
    assert record.zones[PRAGUE] == zone_fingerprint(zone, record.first_year, record.last_year)


def test_a_pass_dying_before_it_records_the_rules_is_finished_by_the_next_moving_nothing_twice(
    database_url: str,
    make_postburner: MakePostburner,
    clock: ManualClock,
    installed: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pb = make_postburner(clock=clock)
    before = _plan_four(pb, clock)
    rules = prague_without_dst(clock())

    def crash(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("killed after the moves, before the record")

    with using_zones(rules):
        with monkeypatch.context() as patched:
            patched.setattr(SqlScheduleStore, "write_setting", crash)
            with pytest.raises(RuntimeError, match="killed"):
                tick(pb, now=clock())
        moved_once = _future(pb, clock())
        report = tick(pb, now=clock())

    assert (report.superseded, report.created) == (0, 0)
    assert {n: e.id for n, e in _future(pb, clock()).items()} == {
        n: e.id for n, e in moved_once.items()
    }
    assert moved_once["prague-daily"].id != before["prague-daily"].id
    record = _record(pb)
    assert record is not None and record.version == "crafted-2"


def test_a_setting_that_is_not_a_record_is_replaced_by_a_fresh_one(
    database_url: str, make_postburner: MakePostburner, clock: ManualClock, installed: None
) -> None:
    pb = make_postburner(clock=clock)
    with pb.work_session() as session:
        store_for(session).write_setting(session, SETTING_KEY, "not json", clock())
        session.commit()

    tick(pb, now=clock())

    record = _record(pb)
    assert record is not None and record.version == "installed-1"
    with pb.session() as session:
        stored = json.loads(store_for(session).read_setting(session, SETTING_KEY) or "")
    assert set(stored) == {"version", "years", "zones"}
