"""Run control at the gate: overlap policy, jitter, and what triggered each occurrence.

``postburner_schedules.overlap`` (``skip`` by default) and ``jitter`` (seconds, NULL: none);
``trigger`` (``schedule``/``manual``/``backfill``/``retry``) on the dispatch log and on the job
history; the dispatch log's ``running_key`` (unique while set: the schedule's running slot)
and a unique index that lets at most one occurrence of a key wait (``buffer_one``); its
statuses gain ``skipped_overlap``, ``paused`` and ``skipped``. ``jitter`` joins the snapshot:
the PostgreSQL digest trigger is replaced, and live executions get ``"jitter": null`` in
their snapshot so the upgrade itself is no drift.

Revision ID: 0010_run_control_gate
Revises: 0009_telemetry
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_run_control_gate"
down_revision = "0009_telemetry"
branch_labels = None
depends_on = None

SCHEDULES = "postburner_schedules"
EXECUTIONS = "postburner_schedule_executions"
DISPATCHES = "postburner_dispatches"
HISTORY = "postburner_job_history"
LIVE_SQL = "status IN ('pending', 'scheduled')"
# The statuses as 0007_run_control_schedule left them.
OLD_STATUSES = "status IN ('dispatched', 'completed', 'failed', 'missed', 'paused', 'skipped')"
NEW_STATUSES = (
    "status IN ('dispatched', 'completed', 'failed', 'missed', 'skipped_overlap', 'paused', "
    "'skipped')"
)
RUNNING_SQL = "running_key IS NOT NULL"
WAITING_SQL = "status = 'dispatched' AND attempt = 0"


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


#: The snapshot fields 0007_run_control_schedule and 0008_dst_policy added.
BEFORE = (
    ",\n        'catch_up_window', NEW.catch_up_window,"
    f" 'starts_at', {_iso('starts_at')}, 'ends_at', {_iso('ends_at')},"
    " 'dst_gap', NEW.dst_gap, 'dst_fold', NEW.dst_fold"
)


def _digest(extra: str) -> str:
    """The schedule digest trigger's function: models.CACHEABLE_ATTRIBUTES at a revision."""
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


def upgrade() -> None:
    with op.batch_alter_table(SCHEDULES) as batch:
        batch.add_column(sa.Column("overlap", sa.String(16), nullable=False, server_default="skip"))
        batch.add_column(sa.Column("jitter", sa.Float(), nullable=True))
    with op.batch_alter_table(DISPATCHES) as batch:
        batch.add_column(
            sa.Column("trigger", sa.String(16), nullable=False, server_default="schedule")
        )
        batch.add_column(sa.Column("running_key", sa.String(255), nullable=True))
        batch.drop_constraint(op.f("ck_postburner_dispatches_status"), type_="check")
        batch.create_check_constraint(op.f("ck_postburner_dispatches_status"), NEW_STATUSES)
    op.create_index(
        "uq_postburner_dispatches_running_key",
        DISPATCHES,
        ["running_key"],
        unique=True,
        postgresql_where=sa.text(RUNNING_SQL),
        sqlite_where=sa.text(RUNNING_SQL),
    )
    op.create_index(
        "uq_postburner_dispatches_waiting_key",
        DISPATCHES,
        ["key"],
        unique=True,
        postgresql_where=sa.text(WAITING_SQL),
        sqlite_where=sa.text(WAITING_SQL),
    )
    with op.batch_alter_table(HISTORY) as batch:
        batch.add_column(
            sa.Column("trigger", sa.String(16), nullable=False, server_default="schedule")
        )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_digest(BEFORE + ", 'jitter', NEW.jitter"))
        op.execute(f"UPDATE {SCHEDULES} SET name = name")
        op.execute(
            f"UPDATE {EXECUTIONS} SET cached_schedule = cached_schedule || "
            f"""'{{"jitter": null}}'::jsonb WHERE {LIVE_SQL}"""
        )
    else:
        op.execute(
            f"UPDATE {EXECUTIONS} SET cached_schedule = "
            f"json_set(cached_schedule, '$.jitter', json('null')) WHERE {LIVE_SQL}"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_digest(BEFORE))
        op.execute(f"UPDATE {SCHEDULES} SET name = name")
        op.execute(
            f"UPDATE {EXECUTIONS} SET cached_schedule = cached_schedule - 'jitter' WHERE {LIVE_SQL}"
        )
    else:
        op.execute(
            f"UPDATE {EXECUTIONS} SET cached_schedule = json_remove(cached_schedule, '$.jitter') "
            f"WHERE {LIVE_SQL}"
        )
    with op.batch_alter_table(HISTORY) as batch:
        batch.drop_column("trigger")
    op.drop_index("uq_postburner_dispatches_waiting_key", DISPATCHES)
    op.drop_index("uq_postburner_dispatches_running_key", DISPATCHES)
    op.execute(f"DELETE FROM {DISPATCHES} WHERE NOT ({OLD_STATUSES})")
    with op.batch_alter_table(DISPATCHES) as batch:
        batch.drop_constraint(op.f("ck_postburner_dispatches_status"), type_="check")
        batch.create_check_constraint(op.f("ck_postburner_dispatches_status"), OLD_STATUSES)
        batch.drop_column("running_key")
        batch.drop_column("trigger")
    # Dropped in place (SQLite >= 3.35 has DROP COLUMN): recreating the schedules table
    # would let the executions' ON DELETE SET NULL detach every execution from its schedule.
    with op.batch_alter_table(SCHEDULES, recreate="never") as batch:
        batch.drop_column("jitter")
        batch.drop_column("overlap")
