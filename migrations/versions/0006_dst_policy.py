"""DST policy: a schedule's ``dst_gap`` and ``dst_fold``, part of the execution snapshot.

Both columns change what runs, so they join the cacheable attributes: the PostgreSQL digest
trigger hashes them too, and the snapshots of live executions get the defaults the existing
schedules take, so upgrading finds no drift (nothing is superseded by the upgrade itself).

Revision ID: 0006_dst_policy
Revises: 0005_run_limits
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_dst_policy"
down_revision = "0005_run_limits"
branch_labels = None
depends_on = None

SCHEDULES = "postburner_schedules"
EXECUTIONS = "postburner_schedule_executions"
LIVE_SQL = "status IN ('pending', 'scheduled')"
DEFAULTS = {"dst_gap": "shift", "dst_fold": "first"}

# The anchor as Python's datetime.isoformat() writes it in UTC (the snapshot's form).
ANCHOR_ISO = """
    CASE WHEN NEW.anchor IS NULL THEN NULL ELSE
        to_char(NEW.anchor AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
        || CASE WHEN extract(microseconds FROM (NEW.anchor AT TIME ZONE 'UTC'))::bigint
                     % 1000000 = 0
                THEN '' ELSE to_char(NEW.anchor AT TIME ZONE 'UTC', '.US') END
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
        'timezone', NEW.timezone, 'anchor', {ANCHOR_ISO},
        'interval', NEW."interval", 'interval_unit', NEW.interval_unit, 'cron', NEW.cron,
        'catch_up', NEW.catch_up, 'name', NEW.name{extra})::text);
    RETURN NEW;
END $$"""


WITH_POLICY = ", 'dst_gap', NEW.dst_gap, 'dst_fold', NEW.dst_fold"


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
        op.execute(_schedule_digest(""))
        op.execute(
            f"UPDATE {EXECUTIONS} SET cached_schedule = cached_schedule - 'dst_gap' - 'dst_fold' "
            f"WHERE {LIVE_SQL}"
        )
    else:
        op.execute(
            f"UPDATE {EXECUTIONS} SET cached_schedule = json_remove(cached_schedule, "
            f"'$.dst_gap', '$.dst_fold') WHERE {LIVE_SQL}"
        )
    with op.batch_alter_table(SCHEDULES) as batch:
        batch.drop_column("dst_fold")
        batch.drop_column("dst_gap")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"UPDATE {SCHEDULES} SET name = name")
