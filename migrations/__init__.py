"""Alembic migrations of postburner_py (installed as ``postburner_py.migrations``)."""
