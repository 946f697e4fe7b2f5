"""Named SQL queries kept in ``.sql`` files under ``store/sql_files/`` (procrastinate style).

A file holds one query per block: a ``-- name: <name>`` line, one or more ``-- `` lines that
describe it, then the statement. :func:`load` returns a file's queries by name; it reads each
file once.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

_NAME = re.compile(r"^--\s*name:\s*(?P<name>\w+)\s*$", re.MULTILINE)


@functools.cache
def load(stem: str) -> dict[str, str]:
    """The queries of ``sql_files/<stem>.sql``: name -> SQL text (description lines dropped)."""
    source = resources.files("postburner_py.store").joinpath(f"sql_files/{stem}.sql")
    text = source.read_text(encoding="utf-8")
    queries: dict[str, str] = {}
    matches = list(_NAME.finditer(text))
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        body = text[match.end() : end]
        lines = [line for line in body.splitlines() if not line.lstrip().startswith("--")]
        queries[match.group("name")] = "\n".join(lines).strip().rstrip(";")
    return queries
