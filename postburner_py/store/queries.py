"""Named SQL queries kept in ``sql_files/*.sql`` (one query per ``-- name: x`` block).

Each block starts with ``-- name: <name>`` and a ``-- <description>`` line; its text runs to
the next ``-- name:`` line. :func:`load` reads a file once and answers its queries by name.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

_DIRECTORY = Path(__file__).with_name("sql_files")
_NAME = re.compile(r"^-- name: *(\w+) *$", re.MULTILINE)


@functools.cache
def load(stem: str) -> dict[str, str]:
    """The queries of ``sql_files/<stem>.sql``, by name (comment lines dropped)."""
    text = (_DIRECTORY / f"{stem}.sql").read_text(encoding="utf-8")
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"{stem}.sql: the query {name!r} is defined twice")
        lines = [line for line in body.splitlines() if not line.lstrip().startswith("--")]
        queries[name] = "\n".join(lines).strip()
    return queries
