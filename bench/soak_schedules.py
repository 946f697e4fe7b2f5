"""The fault soak's schedules and what the soak does to them: create, change the interval,
skip one queued occurrence, disable and enable. Each call is timed, and each schedule's life
is kept as :class:`~bench.soak_checks.Segment` s (one per definition while enabled), which is
what makes a "lost" occurrence well defined."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from bench.soak_checks import Occurrence, Segment
from bench.soak_cluster import JOB_CLASS, QUEUE
from postburner_py import Postburner, Schedule, ScheduleExecution
from postburner_py.store.models import LIVE_STATUSES

#: Every this-many-th schedule is the six-field cron "every second"; the others intervals.
CRON_EVERY = 10
EVERY_SECOND = "* * * * * *"
INTERVALS = (1, 2, 3)
#: A skip waits (at most SKIP_PATIENCE s) for a queued occurrence this many seconds ahead.
SKIP_LEAD = 1.5
SKIP_PATIENCE = 10.0


def wall_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Call:
    """One call the soak made on a schedule: from ``t0`` until it returned at ``t1``."""

    key: str
    schedule_id: int
    action: str
    t0: datetime
    t1: datetime
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Timeline:
    """One schedule's segments; the last one is open while the schedule is enabled."""

    key: str
    schedule_id: int
    closed: list[Segment] = field(default_factory=list)
    open: Segment | None = None

    def close(self, call: Call) -> None:
        assert self.open is not None
        segment = self.open
        self.closed.append(
            Segment(segment.key, segment.grid, segment.start, call.t0, call.t1, call.action)
        )
        self.open = None

    def begin(self, schedule: Schedule) -> None:
        assert schedule.resumed_at is not None
        self.open = Segment(self.key, schedule.grid(), schedule.resumed_at)

    @property
    def segments(self) -> list[Segment]:
        return [*self.closed, *([self.open] if self.open else [])]


class SoakSchedules:
    """Creates the soak's schedules and changes them, keeping their timelines."""

    def __init__(self, pb: Postburner, rng: random.Random, *, seed: int, ttr: int) -> None:
        self.pb = pb
        self.rng = rng
        self.seed = seed
        self.ttr = ttr
        self.timelines: dict[str, Timeline] = {}
        self.calls: list[Call] = []
        self.skipped: set[Occurrence] = set()

    def create(self, count: int, *, long_permille: int, long_ms: int) -> None:
        """``count`` schedules of the soak job: intervals of 1-3 s (every tenth the cron
        "every second"), half of them ``catch_up`` (inside the default one-hour window every
        missed point must then run), one commit."""
        anchor = wall_now().replace(microsecond=0)
        kwargs = {"seed": self.seed, "long_permille": long_permille, "long_ms": long_ms}
        schedules = []
        for index in range(count):
            when: dict[str, Any]
            if index % CRON_EVERY == CRON_EVERY - 1:
                when = {"cron": EVERY_SECOND}
            else:
                when = {
                    "anchor": anchor + timedelta(seconds=self.rng.randrange(3)),
                    "interval": self.rng.choice(INTERVALS),
                    "interval_unit": "seconds",
                }
            schedules.append(
                Schedule(
                    name=f"soak-{index:04d}",
                    job_class=JOB_CLASS,
                    kwargs=kwargs,
                    queue=QUEUE,
                    ttr=self.ttr,
                    catch_up=index % 2 == 0,
                    **when,
                )
            )
        with self.pb.session() as session:
            session.add_all(schedules)
            session.commit()
            for schedule in schedules:
                timeline = Timeline(schedule.name, schedule.id)
                timeline.begin(schedule)
                self.timelines[schedule.name] = timeline

    @property
    def segments(self) -> list[Segment]:
        return [segment for timeline in self.timelines.values() for segment in timeline.segments]

    def enabled_keys(self) -> list[str]:
        return sorted(key for key, line in self.timelines.items() if line.open is not None)

    def pick(self, *, interval_only: bool = False) -> Timeline:
        """A random enabled schedule (an interval one with ``interval_only``)."""
        keys = [
            key
            for key in self.enabled_keys()
            if not interval_only or int(key.rsplit("-", 1)[1]) % CRON_EVERY != CRON_EVERY - 1
        ]
        return self.timelines[self.rng.choice(keys)]

    # --- what the soak does -----------------------------------------------------------------

    def edit(self) -> dict[str, Any]:
        """Change one interval schedule's interval (its queued occurrence is superseded)."""
        timeline = self.pick(interval_only=True)
        with self.pb.session() as session:
            schedule = session.get_one(Schedule, timeline.schedule_id)
            old = schedule.interval
            new = self.rng.choice([n for n in INTERVALS if n != old])
            t0 = wall_now()
            schedule.interval = new
            session.commit()
            call = self._called(timeline, "edit", t0, {"interval": [old, new]})
            timeline.close(call)
            session.refresh(schedule)
            timeline.begin(schedule)
        return {"key": timeline.key, "interval": [old, new]}

    def skip(self) -> dict[str, Any]:
        """Skip the queued occurrence of one schedule, while no worker has it yet (its job
        becomes ready up to 1.1 s before its ``run_at``; ``skip()`` refuses a claimed one)."""
        timeline = self._pick_slow()
        deadline = time.monotonic() + SKIP_PATIENCE
        while True:
            found = self._next_execution(timeline)
            ahead = (found[1] - wall_now()).total_seconds() if found else 0.0
            if found is not None and (ahead >= SKIP_LEAD or time.monotonic() > deadline):
                break
            time.sleep(max(0.1, ahead + 0.2))
        execution_id, run_at = found
        with self.pb.session() as session:
            execution = session.get_one(ScheduleExecution, execution_id)
            t0 = wall_now()
            done = execution.skip()
            self._called(timeline, "skip", t0, {"run_at": run_at.isoformat()})
        if done:
            self.skipped.add((timeline.key, run_at))
        return {"key": timeline.key, "run_at": run_at.isoformat(), "skipped": done}

    def _pick_slow(self) -> Timeline:
        """An enabled schedule firing every 2 s or more (one due every second is always
        held by a worker ahead of its ``run_at``)."""
        with self.pb.session() as session:
            slow = set(
                session.scalars(
                    select(Schedule.name).where(Schedule.enabled, Schedule.interval >= 2)
                )
            )
        keys = [key for key in self.enabled_keys() if key in slow]
        return self.timelines[self.rng.choice(keys)] if keys else self.pick()

    def _next_execution(self, timeline: Timeline) -> tuple[int, datetime] | None:
        """The id and ``run_at`` of the schedule's next live execution."""
        with self.pb.session() as session:
            row = session.execute(
                select(ScheduleExecution.id, ScheduleExecution.run_at)
                .where(
                    ScheduleExecution.schedule_id == timeline.schedule_id,
                    ScheduleExecution.status.in_(LIVE_STATUSES),
                    ScheduleExecution.run_at > wall_now(),
                )
                .order_by(ScheduleExecution.run_at)
            ).first()
        return None if row is None else (row[0], row[1])

    def disable(self, timeline: Timeline | None = None) -> Timeline:
        """Disable one schedule (its queued occurrence is removed)."""
        timeline = timeline or self.pick()
        with self.pb.session() as session:
            schedule = session.get_one(Schedule, timeline.schedule_id)
            t0 = wall_now()
            schedule.disable()
            timeline.close(self._called(timeline, "disable", t0))
        return timeline

    def enable(self, timeline: Timeline) -> None:
        """Enable it again: it continues at the first grid point after that moment."""
        with self.pb.session() as session:
            schedule = session.get_one(Schedule, timeline.schedule_id)
            t0 = wall_now()
            schedule.enable()
            self._called(timeline, "enable", t0)
            session.refresh(schedule)
            timeline.begin(schedule)

    def disable_for(self, seconds: float) -> dict[str, Any]:
        """Disable one schedule, wait ``seconds``, enable it again."""
        timeline = self.disable()
        time.sleep(seconds)
        self.enable(timeline)
        return {"key": timeline.key, "disabled_s": round(seconds, 1)}

    def _called(
        self, timeline: Timeline, action: str, t0: datetime, detail: dict[str, Any] | None = None
    ) -> Call:
        call = Call(timeline.key, timeline.schedule_id, action, t0, wall_now(), detail or {})
        self.calls.append(call)
        return call
