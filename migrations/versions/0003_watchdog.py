"""Watchdog: heartbeats, and configuration digests for the drift check.

``config_digest`` on schedules and executions is md5 of the cacheable attributes as JSONB
text: PostgreSQL triggers compute it on every write, raw SQL included, so the watchdog finds a
drifted execution with one comparison. SQLite has no triggers here (its JSON text keeps key
order, so a digest could not be canonical); the columns stay NULL and the watchdog compares
the columns themselves.

Revision ID: 0003_watchdog
Revises: 0002_history_dispatch
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from postburner_py.store.engine import JSONType, UTCDateTime

revision = "0003_watchdog"
down_revision = "0002_history_dispatch"
branch_labels = None
depends_on = None

SCHEDULES = "postburner_schedules"
EXECUTIONS = "postburner_schedule_executions"
LIVE_SQL = "status IN ('pending', 'scheduled')"

# The anchor as Python's datetime.isoformat() writes it in UTC (the snapshot's form).
ANCHOR_ISO = """
    CASE WHEN NEW.anchor IS NULL THEN NULL ELSE
        to_char(NEW.anchor AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
        || CASE WHEN extract(microseconds FROM (NEW.anchor AT TIME ZONE 'UTC'))::bigint
                     % 1000000 = 0
                THEN '' ELSE to_char(NEW.anchor AT TIME ZONE 'UTC', '.US') END
        || '+00:00'
    END"""

# Frozen here: models.CACHEABLE_ATTRIBUTES at this revision.
SCHEDULE_DIGEST = f"""
CREATE FUNCTION postburner_schedule_digest() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.config_digest := md5(jsonb_build_object(
        'job_class', NEW.job_class, 'args', NEW.args, 'kwargs', NEW.kwargs,
        'queue', NEW.queue, 'priority', NEW.priority, 'ttr', NEW.ttr,
        'timezone', NEW.timezone, 'anchor', {ANCHOR_ISO},
        'interval', NEW."interval", 'interval_unit', NEW.interval_unit, 'cron', NEW.cron,
        'catch_up', NEW.catch_up, 'name', NEW.name)::text);
    RETURN NEW;
END $$"""

EXECUTION_DIGEST = """
CREATE FUNCTION postburner_execution_digest() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.config_digest := md5(NEW.cached_schedule::text);
    RETURN NEW;
END $$"""

TRIGGERS = {
    "postburner_schedules_digest": (SCHEDULES, "postburner_schedule_digest"),
    "postburner_executions_digest": (EXECUTIONS, "postburner_execution_digest"),
}


def upgrade() -> None:
    op.create_table(
        "postburner_watchdog_heartbeats",
        sa.Column("node", sa.String(255), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("last_pass_at", UTCDateTime(), nullable=True),
        sa.Column("last_report", JSONType, nullable=True),
        sa.PrimaryKeyConstraint("node", name="pk_postburner_watchdog_heartbeats"),
    )
    op.add_column(SCHEDULES, sa.Column("config_digest", sa.String(32), nullable=True))
    op.add_column(EXECUTIONS, sa.Column("config_digest", sa.String(32), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        _create_triggers()


def _create_triggers() -> None:
    op.execute(SCHEDULE_DIGEST)
    op.execute(EXECUTION_DIGEST)
    op.execute(
        f"CREATE TRIGGER postburner_schedules_digest BEFORE INSERT OR UPDATE ON {SCHEDULES} "
        "FOR EACH ROW EXECUTE FUNCTION postburner_schedule_digest()"
    )
    op.execute(
        "CREATE TRIGGER postburner_executions_digest "
        f"BEFORE INSERT OR UPDATE OF cached_schedule, config_digest ON {EXECUTIONS} "
        "FOR EACH ROW EXECUTE FUNCTION postburner_execution_digest()"
    )
    # Fill in the rows that exist (historical executions are never compared).
    op.execute(f"UPDATE {SCHEDULES} SET name = name")
    op.execute(f"UPDATE {EXECUTIONS} SET cached_schedule = cached_schedule WHERE {LIVE_SQL}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for trigger, (table, function) in TRIGGERS.items():
            op.execute(f"DROP TRIGGER IF EXISTS {trigger} ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS {function}()")
    with op.batch_alter_table(EXECUTIONS) as batch:
        batch.drop_column("config_digest")
    with op.batch_alter_table(SCHEDULES) as batch:
        batch.drop_column("config_digest")
    op.drop_table("postburner_watchdog_heartbeats")
