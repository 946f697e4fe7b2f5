"""Dispatch log (the at-most-once gate) and job history.

Revision ID: 0002_history_dispatch
Revises: 0001_core
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from postburner_py.store.engine import BigIntPK, JSONType, UTCDateTime

revision = "0002_history_dispatch"
down_revision = "0001_core"
branch_labels = None
depends_on = None

DISPATCH_STATUS_SQL = "status IN ('dispatched', 'completed', 'failed', 'missed')"
HISTORY_STATUS_SQL = "status IN ('started', 'completed', 'failed', 'partial_success')"

DISPATCH_INDEXES = {
    "ix_postburner_dispatches_node_id_fire_time": ["node_id", "fire_time"],
    "ix_postburner_dispatches_status_fire_time": ["status", "fire_time"],
    "ix_postburner_dispatches_fire_time": ["fire_time"],
}
HISTORY_INDEXES = {
    "ix_postburner_job_history_job_id_started_at": ["job_id", "started_at"],
    "ix_postburner_job_history_correlation_id": ["correlation_id"],
    "ix_postburner_job_history_status_started_at": ["status", "started_at"],
    "ix_postburner_job_history_task_identifier_started_at": ["task_identifier", "started_at"],
    "ix_postburner_job_history_started_at": ["started_at"],
    "ix_postburner_job_history_expires_at": ["expires_at"],
}


def upgrade() -> None:
    op.create_table(
        "postburner_dispatches",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("fire_time", UTCDateTime(), nullable=False),
        sa.Column("dispatched_at", UTCDateTime(), nullable=False),
        sa.Column("node_id", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("lease_expires_at", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_postburner_dispatches"),
        sa.UniqueConstraint("key", "fire_time", name="uq_postburner_dispatches_key_fire_time"),
        sa.CheckConstraint(DISPATCH_STATUS_SQL, name=op.f("ck_postburner_dispatches_status")),
    )
    for name, columns in DISPATCH_INDEXES.items():
        op.create_index(name, "postburner_dispatches", columns)

    op.create_table(
        "postburner_job_history",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(255), nullable=False),
        sa.Column("correlation_id", sa.String(255), nullable=True),
        sa.Column("task_identifier", sa.String(255), nullable=False),
        sa.Column("schedule_name", sa.String(255), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("worker_id", sa.String(255), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("run_at", UTCDateTime(), nullable=True),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("queue_time_ms", sa.Float(), nullable=True),
        sa.Column("execution_time_ms", sa.Float(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("error_stack", sa.Text(), nullable=True),
        sa.Column("results", JSONType, nullable=True),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_postburner_job_history"),
        sa.CheckConstraint(HISTORY_STATUS_SQL, name=op.f("ck_postburner_job_history_status")),
    )
    for name, columns in HISTORY_INDEXES.items():
        op.create_index(name, "postburner_job_history", columns)


def downgrade() -> None:
    for name in HISTORY_INDEXES:
        op.drop_index(name, table_name="postburner_job_history")
    op.drop_table("postburner_job_history")
    for name in DISPATCH_INDEXES:
        op.drop_index(name, table_name="postburner_dispatches")
    op.drop_table("postburner_dispatches")
