"""Run the Alembic migrations shipped inside the package (``postburner_py.migrations``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine


def migrations_directory() -> Path:
    """Where the migration scripts are: the top-level ``migrations/`` folder, installed
    as ``postburner_py.migrations``."""
    spec = importlib.util.find_spec("postburner_py.migrations")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(engine: Engine) -> Config:
    """An Alembic config bound to ``engine`` (env.py reads it from ``attributes``)."""
    config = Config()
    config.set_main_option("script_location", str(migrations_directory()))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade the schema to ``revision`` (``head``: every head, should history branch)."""
    command.upgrade(alembic_config(engine), "heads" if revision == "head" else revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Downgrade the schema to ``revision`` (``base`` removes every table)."""
    command.downgrade(alembic_config(engine), revision)
