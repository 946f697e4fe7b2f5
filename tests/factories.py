"""Factories for test objects: each call builds a fresh one (no shared mutable state)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

from postburner_py.app import Postburner
from postburner_py.store.models import DelayedJob, Schedule

_sequence = itertools.count(1)


def schedule_attributes(**overrides: Any) -> dict[str, Any]:
    """Valid attributes of an hourly cron schedule, with ``overrides`` applied."""
    attributes: dict[str, Any] = {
        "name": f"schedule-{next(_sequence)}",
        "job_class": "tests.jobs:record_run",
        "args": [1, "two"],
        "kwargs": {"flag": True},
        "cron": "0 * * * *",
    }
    attributes.update(overrides)
    return attributes


def make_schedule(**overrides: Any) -> Schedule:
    """An unsaved :class:`Schedule`."""
    return Schedule(**schedule_attributes(**overrides))


def create_schedule(pb: Postburner, **overrides: Any) -> int:
    """Save a schedule through the API (so its first execution is queued); its id."""
    with pb.session() as session:
        schedule = make_schedule(**overrides)
        session.add(schedule)
        session.commit()
        return schedule.id


def make_one_off(**overrides: Any) -> DelayedJob:
    """An unsaved pending one-off :class:`DelayedJob` (no Beanstalkd job), due now."""
    attributes: dict[str, Any] = {
        "job_id": f"one-off-{next(_sequence)}",
        "job_class": "tests.jobs:record_run",
        "args": [],
        "kwargs": {},
        "queue": "default",
        "priority": 1,
        "ttr": 60,
        "max_attempts": 1,
        "run_at": datetime.now(UTC),
        "status": "pending",
    }
    attributes.update(overrides)
    return DelayedJob(**attributes)


def at(text: str) -> datetime:
    """An aware UTC datetime from ISO-8601 text without offset, e.g. ``at('2025-01-01 10:00')``."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


class ManualClock:
    """A controllable clock: ``clock()`` returns the current instant, ``advance`` moves it."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        """Move forward by ``timedelta(**delta)``; returns the new instant."""
        from datetime import timedelta

        self.now = self.now + timedelta(**delta)
        return self.now
