"""Run control on the schedule: pause (``paused_at``, ``pause_reason``), a per-schedule
``catch_up_window``, a run window (``starts_at``, ``ends_at``) and the owner ``label``; the
dispatch log's ``paused`` and ``skipped`` statuses.

``catch_up_window``, ``starts_at`` and ``ends_at`` change what runs, so they join the queued
snapshot: the PostgreSQL digest trigger hashes them too, and the live executions' snapshots
get the three keys (as null, what every existing schedule holds), so the upgrade itself is
not drift and supersedes nothing.

Revision ID: 0007_run_control_schedule
Revises: 0006_worker_heartbeats
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from postburner_py.store.engine import UTCDateTime

revision = "0007_run_control_schedule"
down_revision = "0006_worker_heartbeats"
branch_labels = None
depends_on = None

SCHEDULES = "postburner_schedules"
EXECUTIONS = "postburner_schedule_executions"
DISPATCHES = "postburner_dispatches"
LIVE_SQL = "status IN ('pending', 'scheduled')"
CHECK = "ck_postburner_dispatches_status"
OLD_STATUSES = "status IN ('dispatched', 'completed', 'failed', 'missed')"
NEW_STATUSES = "status IN ('dispatched', 'completed', 'failed', 'missed', 'paused', 'skipped')"
NEW_KEYS = ("catch_up_window", "starts_at", "ends_at")


def _iso(column: str) -> str:
    """An instant column as Python's datetime.isoformat() writes it in UTC (the snapshot's)."""
    utc = f"(NEW.{column} AT TIME ZONE 'UTC')"
    return f"""
    CASE WHEN NEW.{column} IS NULL THEN NULL ELSE
        to_char({utc}, 'YYYY-MM-DD"T"HH24:MI:SS')
        || CASE WHEN extract(microseconds FROM {utc})::bigint % 1000000 = 0
                THEN '' ELSE to_char({utc}, '.US') END
        || '+00:00'
    END"""


def _schedule_digest(extra: str) -> str:
    """The digest trigger's function: models.CACHEABLE_ATTRIBUTES at this revision."""
    return f"""
CREATE OR REPLACE FUNCTION postburner_schedule_digest() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.config_digest := md5(jsonb_build_object(
        'job_class', NEW.job_class, 'args', NEW.args, 'kwargs', NEW.kwargs,
        'queue', NEW.queue, 'priority', NEW.priority, 'ttr', NEW.ttr,
        'timezone', NEW.timezone, 'anchor', {_iso("anchor")},
        'interval', NEW."interval", 'interval_unit', NEW.interval_unit, 'cron', NEW.cron,
        'catch_up', NEW.catch_up, 'name', NEW.name{extra})::text);
    RETURN NEW;
END $$"""


NEW_DIGEST = _schedule_digest(
    ",\n        'catch_up_window', NEW.catch_up_window,"
    f" 'starts_at', {_iso('starts_at')}, 'ends_at', {_iso('ends_at')}"
)
OLD_DIGEST = _schedule_digest("")


def upgrade() -> None:
    with op.batch_alter_table(SCHEDULES) as batch:
        batch.add_column(sa.Column("catch_up_window", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("starts_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("ends_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("paused_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("pause_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("label", sa.String(255), nullable=True))
    _replace_status_check(NEW_STATUSES)
    if op.get_bind().dialect.name == "postgresql":
        nulls = ", ".join(f"'{key}', NULL" for key in NEW_KEYS)
        op.execute(
            f"UPDATE {EXECUTIONS} SET cached_schedule = cached_schedule || "
            f"jsonb_build_object({nulls}) WHERE {LIVE_SQL}"
        )
        op.execute(NEW_DIGEST)
        op.execute(f"UPDATE {SCHEDULES} SET name = name")
    else:
        paths = ", ".join(f"'$.{key}', NULL" for key in NEW_KEYS)
        op.execute(
            f"UPDATE {EXECUTIONS} SET cached_schedule = json_set(cached_schedule, {paths}) "
            f"WHERE {LIVE_SQL}"
        )


def downgrade() -> None:
    op.execute(f"DELETE FROM {DISPATCHES} WHERE status IN ('paused', 'skipped')")
    _replace_status_check(OLD_STATUSES)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(OLD_DIGEST)
        removed = " - ".join(f"'{key}'" for key in NEW_KEYS)
        op.execute(
            f"UPDATE {EXECUTIONS} SET cached_schedule = cached_schedule - {removed} "
            f"WHERE {LIVE_SQL}"
        )
        op.execute(f"UPDATE {SCHEDULES} SET name = name")
    else:
        paths = ", ".join(f"'$.{key}'" for key in NEW_KEYS)
        op.execute(
            f"UPDATE {EXECUTIONS} SET cached_schedule = json_remove(cached_schedule, {paths}) "
            f"WHERE {LIVE_SQL}"
        )
    # Dropped in place (SQLite >= 3.35 has DROP COLUMN): recreating the schedules table
    # would let the executions' ON DELETE SET NULL detach every execution from its schedule.
    with op.batch_alter_table(SCHEDULES, recreate="never") as batch:
        for column in ("label", "pause_reason", "paused_at", "ends_at", "starts_at"):
            batch.drop_column(column)
        batch.drop_column("catch_up_window")


def _replace_status_check(condition: str) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(op.f(CHECK), DISPATCHES, type_="check")
        op.create_check_constraint(op.f(CHECK), DISPATCHES, sa.text(condition))
        return
    with op.batch_alter_table(DISPATCHES, recreate="always") as batch:
        batch.drop_constraint(op.f(CHECK), type_="check")
        batch.create_check_constraint(op.f(CHECK), sa.text(condition))
