"""Core tables: schedules, schedule executions, settings.

Revision ID: 0001_core
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from postburner_py.store.engine import BigIntPK, JSONType, UTCDateTime

revision = "0001_core"
down_revision = None
branch_labels = None
depends_on = None

LIVE_SQL = "status IN ('pending', 'scheduled')"


def upgrade() -> None:
    op.create_table(
        "postburner_schedules",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("job_class", sa.String(255), nullable=False),
        sa.Column("args", JSONType, nullable=False),
        sa.Column("kwargs", JSONType, nullable=False),
        sa.Column("queue", sa.String(100), nullable=False),
        sa.Column("priority", sa.BigInteger(), nullable=False),
        sa.Column("ttr", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("cron", sa.String(255), nullable=True),
        sa.Column("anchor", UTCDateTime(), nullable=True),
        sa.Column("interval", sa.BigInteger(), nullable=True),
        sa.Column("interval_unit", sa.String(16), nullable=True),
        sa.Column("catch_up", sa.Boolean(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("resumed_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_postburner_schedules"),
        sa.UniqueConstraint("name", name="uq_postburner_schedules_name"),
    )
    op.create_table(
        "postburner_schedule_executions",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("schedule_id", BigIntPK, nullable=True),
        sa.Column("run_at", UTCDateTime(), nullable=False),
        sa.Column("next_run_at", UTCDateTime(), nullable=True),
        sa.Column("enqueued_at", UTCDateTime(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("beanstalk_job_id", sa.BigInteger(), nullable=True),
        sa.Column("beanstalk_server_id", sa.String(64), nullable=True),
        sa.Column("job_id", sa.String(255), nullable=True),
        sa.Column("cached_schedule", JSONType, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_postburner_schedule_executions"),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["postburner_schedules.id"],
            name="fk_postburner_executions_schedule",
            ondelete="SET NULL",
        ),
    )
    op.create_index(
        "uq_postburner_schedule_executions_live_run_at",
        "postburner_schedule_executions",
        ["schedule_id", "run_at"],
        unique=True,
        postgresql_where=sa.text(LIVE_SQL),
        sqlite_where=sa.text(LIVE_SQL),
    )
    op.create_index(
        "ix_postburner_schedule_executions_status_run_at",
        "postburner_schedule_executions",
        ["status", "run_at"],
    )
    op.create_table(
        "postburner_settings",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_postburner_settings"),
    )


def downgrade() -> None:
    op.drop_table("postburner_settings")
    op.drop_index(
        "ix_postburner_schedule_executions_status_run_at",
        table_name="postburner_schedule_executions",
    )
    op.drop_index(
        "uq_postburner_schedule_executions_live_run_at",
        table_name="postburner_schedule_executions",
    )
    op.drop_table("postburner_schedule_executions")
    op.drop_table("postburner_schedules")
