"""The Alembic migrations produce exactly the models' schema, and can go down and up again."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from postburner_py.store.metadata import target_metadata
from postburner_py.store.migrate import downgrade, upgrade


def _schema_differences(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"version_table": "postburner_alembic_version"}
            )
            return list(compare_metadata(context, target_metadata))
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_migrated_schema_matches_the_models(database_url: str) -> None:
    assert _schema_differences(database_url) == []


def test_migrations_survive_downgrade_and_upgrade_again(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        downgrade(engine, "base")
        assert _tables(database_url) <= {"postburner_alembic_version"}
        upgrade(engine)
    finally:
        engine.dispose()
    assert {table.name for table in target_metadata.sorted_tables} <= _tables(database_url)
    assert _schema_differences(database_url) == []


@pytest.mark.parametrize("revision", ["0001_core", "0002_history_dispatch", "0003_watchdog"])
def test_each_revision_downgrades_cleanly(database_url: str, revision: str) -> None:
    engine = create_engine(database_url)
    try:
        downgrade(engine, revision)
        upgrade(engine)
    finally:
        engine.dispose()
    assert _schema_differences(database_url) == []
