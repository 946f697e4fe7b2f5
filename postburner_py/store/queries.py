"""Named SQL queries kept in ``store/sql_files/*.sql`` (procrastinate style).

Each file holds blocks that start with ``-- name: <name>``, followed by ``-- `` lines that
describe the query, then the statement itself. :func:`load` returns one file's statements
by name; files are read once per process.
"""

from __future__ import annotations

import functools
from importlib import resources

_NAME = "-- name:"


@functools.cache
def load(stem: str) -> dict[str, str]:
    """The queries of ``sql_files/<stem>.sql``: name to SQL text (descriptions dropped)."""
    source = resources.files("postburner_py.store").joinpath(f"sql_files/{stem}.sql")
    queries: dict[str, str] = {}
    name: str | None = None
    lines: list[str] = []
    for line in source.read_text(encoding="utf-8").splitlines():
        if line.startswith(_NAME):
            if name is not None:
                queries[name] = _statement(lines)
            name, lines = line[len(_NAME) :].strip(), []
        elif name is not None and not (line.startswith("--") and not lines):
            lines.append(line)
    if name is not None:
        queries[name] = _statement(lines)
    return queries


def _statement(lines: list[str]) -> str:
    return "\n".join(lines).strip().rstrip(";")
