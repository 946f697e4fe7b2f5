"""Worker heartbeats: one row per running worker process, for ``postburner status``.

Revision ID: 0006_worker_heartbeats
Revises: 0005_run_limits
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from postburner_py.store.engine import JSONType, UTCDateTime

revision = "0006_worker_heartbeats"
down_revision = "0005_run_limits"
branch_labels = None
depends_on = None

TABLE = "postburner_worker_heartbeats"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("node", sa.String(255), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("queues", JSONType, nullable=False),
        sa.Column("concurrency", sa.Integer(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.Column("jobs_run", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_postburner_worker_heartbeats"),
    )
    # Status reads the live rows and retention deletes the old ones, both by last_seen_at.
    op.create_index("ix_postburner_worker_heartbeats_last_seen_at", TABLE, ["last_seen_at"])


def downgrade() -> None:
    op.drop_index("ix_postburner_worker_heartbeats_last_seen_at", table_name=TABLE)
    op.drop_table(TABLE)
