"""Run limits: a schedule's (and a one-off job's) ``timeout`` and ``no_retry_on``.

Revision ID: 0005_run_limits
Revises: 0004_delayed_jobs
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from postburner_py.store.engine import JSONType

revision = "0005_run_limits"
down_revision = "0004_delayed_jobs"
branch_labels = None
depends_on = None

TABLES = ("postburner_schedules", "postburner_delayed_jobs")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            # Seconds an attempt may run before it is failed (NULL: no limit).
            batch.add_column(sa.Column("timeout", sa.Float(), nullable=True))
            # Dotted exception class names that fail the occurrence at once (NULL: none).
            batch.add_column(sa.Column("no_retry_on", JSONType, nullable=True))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("no_retry_on")
            batch.drop_column("timeout")
