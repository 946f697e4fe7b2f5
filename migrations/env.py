"""Alembic environment: runs against the engine handed over by ``postburner_py.store.migrate``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from postburner_py.store.metadata import target_metadata

config = context.config
engine = config.attributes.get("engine")
if engine is None:
    engine = create_engine(
        config.get_main_option("sqlalchemy.url") or "sqlite:///postburner.sqlite3"
    )

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        version_table="postburner_alembic_version",
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
