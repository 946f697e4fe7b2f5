"""One-off delayed jobs (enqueue_at).

Revision ID: 0004_delayed_jobs
Revises: 0003_watchdog
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from postburner_py.store.engine import BigIntPK, JSONType, UTCDateTime

revision = "0004_delayed_jobs"
down_revision = "0003_watchdog"
branch_labels = None
depends_on = None

PENDING_SQL = "status = 'pending'"


def upgrade() -> None:
    op.create_table(
        "postburner_delayed_jobs",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(255), nullable=False),
        sa.Column("job_class", sa.String(255), nullable=False),
        sa.Column("args", JSONType, nullable=False),
        sa.Column("kwargs", JSONType, nullable=False),
        sa.Column("queue", sa.String(100), nullable=False),
        sa.Column("priority", sa.BigInteger(), nullable=False),
        sa.Column("ttr", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("run_at", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("enqueued_at", UTCDateTime(), nullable=True),
        sa.Column("beanstalk_job_id", sa.BigInteger(), nullable=True),
        sa.Column("beanstalk_server_id", sa.String(64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_postburner_delayed_jobs"),
    )
    op.create_index(
        "uq_postburner_delayed_jobs_pending_job_id",
        "postburner_delayed_jobs",
        ["job_id"],
        unique=True,
        postgresql_where=sa.text(PENDING_SQL),
        sqlite_where=sa.text(PENDING_SQL),
    )
    op.create_index(
        "ix_postburner_delayed_jobs_status_run_at", "postburner_delayed_jobs", ["status", "run_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_postburner_delayed_jobs_status_run_at", table_name="postburner_delayed_jobs")
    op.drop_index("uq_postburner_delayed_jobs_pending_job_id", table_name="postburner_delayed_jobs")
    op.drop_table("postburner_delayed_jobs")
