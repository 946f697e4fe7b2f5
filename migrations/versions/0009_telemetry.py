"""Telemetry: the trace context a one-off job was enqueued under.

Revision ID: 0009_telemetry
Revises: 0008_dst_policy
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from postburner_py.store.engine import JSONType

revision = "0009_telemetry"
down_revision = "0008_dst_policy"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("postburner_delayed_jobs") as batch:
        # The W3C trace context (traceparent, tracestate) of the span that enqueued the job,
        # so the worker's span links to it (NULL: enqueued outside any trace).
        batch.add_column(sa.Column("trace_context", JSONType, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("postburner_delayed_jobs") as batch:
        batch.drop_column("trace_context")
