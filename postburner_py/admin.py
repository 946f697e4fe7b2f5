"""Operator actions shared by scripts and the CLI (skip an occurrence by id or by time)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select

from postburner_py.errors import PostburnerError
from postburner_py.models import LIVE_STATUSES, Schedule, ScheduleExecution

if TYPE_CHECKING:
    from postburner_py.app import Postburner


@dataclass(frozen=True)
class SkipResult:
    """What ``skip`` did: the execution, whether it was skipped, and what is queued next."""

    execution_id: int
    run_at: datetime
    skipped: bool
    status: str
    next_run_at: datetime | None

    def describe(self) -> str:
        """One line for the operator."""
        verdict = "skipped" if self.skipped else f"not skipped (status {self.status} or started)"
        following = self.next_run_at.isoformat() if self.next_run_at else "nothing"
        return (
            f"execution {self.execution_id} at {self.run_at.isoformat()} {verdict}; "
            f"next queued: {following}"
        )


def skip_occurrence(
    pb: Postburner,
    *,
    execution_id: int | None = None,
    schedule: str | None = None,
    at: datetime | None = None,
) -> SkipResult:
    """Skip one occurrence, found by execution id or by schedule name and ``run_at``."""
    with pb.session() as session:
        execution = (
            session.get(ScheduleExecution, execution_id)
            if execution_id is not None
            else _find_by_time(session, schedule, at)
        )
        if execution is None:
            raise PostburnerError(f"no execution {execution_id or f'{schedule} at {at}'}")
        skipped = execution.skip()
        owner = session.get(Schedule, execution.schedule_id) if execution.schedule_id else None
        upcoming = owner.future_live() if owner is not None else []
        return SkipResult(
            execution_id=execution.id,
            run_at=execution.run_at,
            skipped=skipped,
            status=execution.status,
            next_run_at=upcoming[0].run_at if upcoming else None,
        )


def _find_by_time(
    session: object, schedule: str | None, at: datetime | None
) -> ScheduleExecution | None:
    from sqlalchemy.orm import Session

    assert isinstance(session, Session)
    return session.scalar(
        select(ScheduleExecution)
        .join(Schedule, Schedule.id == ScheduleExecution.schedule_id)
        .where(
            Schedule.name == schedule,
            ScheduleExecution.run_at == at,
            ScheduleExecution.status.in_(LIVE_STATUSES),
        )
    )
