"""tzdata drift: queued executions planned with zone rules that have since changed.

A country abolishes DST, the ``tzdata`` package or the system's zoneinfo is upgraded: every
queued ``run_at`` computed with the old rules of an affected zone may now be the wrong
instant. The watchdog records, in the ``Setting`` row :data:`SETTING_KEY`, the version of the
rules it planned with and a fingerprint of each zone in use
(:func:`~postburner_py.timegrid.zones.zone_fingerprint`, covering the years queued
executions can reach). Each pass compares the recorded version with the current one (one
small read and one line of a file); on a change it fingerprints the zones in use again, and
for the zones whose fingerprint differs (or was never taken) it re-plans the live future
executions of their schedules through the drift path
(``repair_drift``, handed in by the pass): an execution whose ``run_at``
is no longer the schedule's next grid point is superseded and replaced, and each move is
logged. The new record is written last, so a pass that dies half-way is finished by the
next one, which moves nothing twice.

The rules come from :func:`~postburner_py.timegrid.zones.zone_source`, swappable with
:func:`~postburner_py.timegrid.zones.using_zones`: that is how a test plans with one rule
set and reconciles with another.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.orm import Session

from postburner_py.errors import UnplannableScheduleError
from postburner_py.schedules.chaining import PassReport
from postburner_py.schedules.planning import stored_grid
from postburner_py.store import store_for
from postburner_py.store.models import ScheduleExecution
from postburner_py.timegrid.zones import zone_fingerprint, zone_source

if TYPE_CHECKING:
    from postburner_py.app import Postburner
    from postburner_py.schedules.lifecycle import Convergence

#: Told each drifted schedule's outcome, in its batch's session, before the batch commits.
Observer = Callable[[Session, int, "Convergence"], None]


class DriftRepair(Protocol):
    """The drift path (:func:`~postburner_py.watchdog.reconcile_pass.repair_drift`)."""

    def __call__(
        self,
        pb: Postburner,
        schedule_ids: list[int],
        now: datetime,
        report: PassReport,
        *,
        observe: Observer | None = None,
    ) -> None: ...


log = logging.getLogger("postburner_py.watchdog")

#: The ``Setting`` row holding the rules the watchdog planned with.
SETTING_KEY = "tzdata"
#: Fingerprints cover the year before the check and this many after it.
YEARS_AHEAD = 12


@dataclass(frozen=True)
class RulesRecord:
    """The version of the zone rules planned with, and each zone's fingerprint then."""

    version: str
    first_year: int
    last_year: int
    zones: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        years = [self.first_year, self.last_year]
        return json.dumps({"version": self.version, "years": years, "zones": self.zones})

    @staticmethod
    def from_json(text: str | None) -> RulesRecord | None:
        """The record stored as ``text``; None when there is none or it cannot be read."""
        try:
            data: Any = json.loads(text) if text else None
            first, last = data["years"]
            zones = {str(k): str(v) for k, v in data["zones"].items()}
            return RulesRecord(str(data["version"]), int(first), int(last), zones)
        except (TypeError, ValueError, KeyError, AttributeError):
            return None


@dataclass
class TzdataCheck:
    """What one check found: the versions, the zones whose rules changed, the moves."""

    old_version: str | None
    new_version: str
    changed_zones: list[str] = field(default_factory=list)
    moved: list[tuple[str, datetime, datetime | None]] = field(default_factory=list)


def check_tzdata(
    pb: Postburner, *, now: datetime, report: PassReport, repair: DriftRepair
) -> TzdataCheck | None:
    """Re-plan what the last rules planned if the zone rules changed; None when they did not.

    Moves go through ``repair`` (the pass's drift path). The first check on a database only
    records the rules (there is nothing to compare with).
    """
    version = zone_source().version()
    with pb.session() as session:
        record = RulesRecord.from_json(store_for(session).read_setting(session, SETTING_KEY))
    if record is not None and record.version == version:
        return None
    with pb.session() as session:
        zones = store_for(session).schedule_zones(session)
    fresh = _fingerprints(version, zones, now.year)
    check = TzdataCheck(record.version if record else None, version)
    if record is not None:
        check.changed_zones = _changed(record, fresh)
        _log_change(check)
        check.moved = replan_zones(pb, check.changed_zones, now, report, repair)
    _write(pb, fresh, now)
    return check


def _fingerprints(version: str, zones: list[str], year: int) -> RulesRecord:
    first, last = year - 1, year + YEARS_AHEAD
    prints = {}
    for name in zones:
        try:
            prints[name] = zone_fingerprint(zone_source().zone(name), first, last)
        except (ValueError, OSError, KeyError):
            continue  # not a zone (any more): planning sets such a schedule aside
    return RulesRecord(version, first, last, prints)


def _changed(record: RulesRecord, fresh: RulesRecord) -> list[str]:
    """Zones whose rules differ from the recorded ones, over the recorded years."""
    changed = []
    for name, fingerprint in fresh.zones.items():
        if (record.first_year, record.last_year) != (fresh.first_year, fresh.last_year):
            zone = zone_source().zone(name)
            fingerprint = zone_fingerprint(zone, record.first_year, record.last_year)
        if record.zones.get(name) != fingerprint:
            changed.append(name)
    return changed


def _log_change(check: TzdataCheck) -> None:
    log.warning(
        "zone rules changed (%s -> %s); zones with new rules in use: %s",
        check.old_version,
        check.new_version,
        ", ".join(check.changed_zones) or "none",
    )


def replan_zones(
    pb: Postburner, zones: list[str], now: datetime, report: PassReport, repair: DriftRepair
) -> list[tuple[str, datetime, datetime | None]]:
    """Supersede and replace, through the drift path, the live future executions of the
    schedules in ``zones`` that are not their schedule's next grid point any more; each
    move is logged and returned as ``(schedule name, old run_at, new run_at)``."""
    with pb.session() as session:
        rows = store_for(session).future_runs_in_zones(session, zones, now)
    nexts: dict[tuple[Any, ...], datetime | None] = {}
    old = {row.id: (row.name, row.run_at) for row in rows if _moved(row, now, nexts)}
    moved: list[tuple[str, datetime, datetime | None]] = []

    def observe(session: Session, schedule_id: int, outcome: Convergence) -> None:
        if not outcome.retired:
            return
        name, was = old[schedule_id]
        new = _created_run_at(session, outcome)
        log.warning(
            "schedule %s: queued run_at %s moved to %s (zone rules changed)",
            name,
            was.isoformat(),
            new.isoformat() if new else "nothing",
        )
        moved.append((name, was, new))

    repair(pb, sorted(old), now, report, observe=observe)
    return moved


def _moved(row: Any, now: datetime, nexts: dict[tuple[Any, ...], datetime | None]) -> bool:
    """True when the current rules put the schedule's next point elsewhere than ``run_at``
    (``nexts``: the next point of each time specification seen, None if it has none)."""
    when = (row.cron, row.anchor, row.interval, row.interval_unit, row.timezone)
    spec = (*when, row.dst_gap, row.dst_fold)
    if spec not in nexts:
        try:
            nexts[spec] = stored_grid(row).next_after(now)
        except (UnplannableScheduleError, ValueError, ArithmeticError):
            nexts[spec] = None  # the drift path sets it aside, as any unplannable row
    return bool(nexts[spec] != row.run_at)


def _created_run_at(session: Session, outcome: Convergence) -> datetime | None:
    for execution_id in outcome.created:
        execution = session.get(ScheduleExecution, execution_id)
        if execution is not None:
            return execution.run_at
    return None


def _write(pb: Postburner, record: RulesRecord, now: datetime) -> None:
    with pb.work_session() as session:
        store_for(session).write_setting(session, SETTING_KEY, record.to_json(), now)
        session.commit()
