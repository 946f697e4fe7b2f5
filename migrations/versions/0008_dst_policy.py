"""DST policy: a schedule's ``dst_gap`` and ``dst_fold``, part of the execution snapshot.

Both columns change what runs, so they join the cacheable attributes: the PostgreSQL digest
trigger hashes them too, and the snapshots of live executions get the defaults the existing
schedules take, so upgrading finds no drift (nothing is superseded by the upgrade itself).

Revision ID: 0008_dst_policy
Revises: 0007_run_control_schedule
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_dst_policy"
down_revision = "0007_run_control_schedule"
branch_labels = None
depends_on = None

SCHEDULES = "postburner_schedules"
EXECUTIONS = "postburner_schedule_executions"
LIVE_SQL = "status IN ('pending', 'scheduled')"
DEFAULTS = {"dst_gap": "shift", "dst_fold": "first"}


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
    """The digest function over models.CACHEABLE_ATTRIBUTES as of a revision (frozen here)."""
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


# The fields 0007_run_control_schedule added, then this revision's.
BEFORE = (
    ",\n        'catch_up_window', NEW.catch_up_window,"
    f" 'starts_at', {_iso('starts_at')}, 'ends_at', {_iso('ends_at')}"
)
WITH_POLICY = BEFORE + ", 'dst_gap', NEW.dst_gap, 'dst_fold', NEW.dst_fold"


def upgrade() -> None:
    with op.batch_alter_table(SCHEDULES) as batch:
        for column, default in DEFAULTS.items():
            batch.add_column(
                sa.Column(column, sa.String(8), nullable=False, server_default=default)
            )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_schedule_digest(WITH_POLICY))
        op.execute(
            f"UPDATE {EXECUTIONS} SET cached_schedule = cached_schedule || "
            f"""'{{"dst_gap": "shift", "dst_fold": "first"}}'::jsonb WHERE {LIVE_SQL}"""
        )
        op.execute(f"UPDATE {SCHEDULES} SET name = name")
    else:
        op.execute(
            f"UPDATE {EXECUTIONS} SET cached_schedule = json_set(cached_schedule, "
            f"'$.dst_gap', 'shift', '$.dst_fold', 'first') WHERE {LIVE_SQL}"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_schedule_digest(BEFORE))
        op.execute(
            f"UPDATE {EXECUTIONS} SET cached_schedule = cached_schedule - 'dst_gap' - 'dst_fold' "
            f"WHERE {LIVE_SQL}"
        )
    else:
        op.execute(
            f"UPDATE {EXECUTIONS} SET cached_schedule = json_remove(cached_schedule, "
            f"'$.dst_gap', '$.dst_fold') WHERE {LIVE_SQL}"
        )
    # Dropped in place (SQLite >= 3.35 has DROP COLUMN): recreating the schedules table
    # would let the executions' ON DELETE SET NULL detach every execution from its schedule.
    with op.batch_alter_table(SCHEDULES, recreate="never") as batch:
        batch.drop_column("dst_fold")
        batch.drop_column("dst_gap")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"UPDATE {SCHEDULES} SET name = name")
