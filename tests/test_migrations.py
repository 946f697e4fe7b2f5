"""The Alembic migrations produce exactly the models' schema, and can go down and up again."""

from __future__ import annotations

import json

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


def test_the_dst_policy_migration_keeps_queued_snapshots_matching_both_ways(
    database_url: str,
) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import text
    from sqlalchemy.orm import Session

    from postburner_py.store import store_for
    from postburner_py.store.models import ScheduleExecution
    from tests.factories import make_schedule

    now = datetime(2031, 1, 1, tzinfo=UTC)
    engine = create_engine(database_url)
    try:
        with Session(engine) as session:
            schedule = make_schedule(timezone="Europe/Prague")
            session.add(schedule)
            session.flush()
            run_at = now + timedelta(hours=1)
            session.add(
                ScheduleExecution(
                    schedule_id=schedule.id, run_at=run_at, cached_schedule=schedule.snapshot()
                )
            )
            session.commit()
        snapshot = "SELECT cached_schedule FROM postburner_schedule_executions"
        downgrade(engine, "0005_run_limits")
        with engine.connect() as connection:
            older = connection.execute(text(snapshot)).scalar_one()
        upgrade(engine)
        with Session(engine) as session:
            newer = session.execute(text(snapshot)).scalar_one()
            assert store_for(session).schedules_to_converge(session, now) == ([], [])
    finally:
        engine.dispose()
    keys = {"dst_gap", "dst_fold"}
    as_dict = [value if isinstance(value, dict) else json.loads(value) for value in (older, newer)]
    assert not keys & set(as_dict[0]) and {k: as_dict[1][k] for k in keys} == {
        "dst_gap": "shift",
        "dst_fold": "first",
    }
