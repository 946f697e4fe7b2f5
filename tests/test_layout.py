"""The layout's promises, checked on the source: dialect tests and SQL live in ``store/``, the
documented import paths and stored ``job_class`` strings keep working, the logger names stay.
"""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "postburner_py"
#: Where SQL and dialect knowledge may live (``migrations/`` is outside the package).
STORE = PACKAGE / "store"

#: A string that is SQL: a statement keyword, upper case, followed by what makes it SQL.
SQL_STRING = re.compile(
    r"""^\s*(
        SELECT\s+(\*|DISTINCT\b|[\w"(]+)
      | INSERT\s+INTO\b
      | UPDATE\s+[\w".]+\s+SET\b
      | DELETE\s+FROM\b
      | WITH\s+(RECURSIVE\s+)?\w+\s+(AS\b|\()
      | BEGIN(\s+(IMMEDIATE|DEFERRED|EXCLUSIVE|TRANSACTION)\b|\s*;?\s*$)
      | PRAGMA\s+\w+
    )""",
    re.VERBOSE,
)
#: Calls that run SQL text: ``text(...)``, ``exec_driver_sql(...)``, ``exec_prepared(...)``.
SQL_CALLS = frozenset({"text", "exec_driver_sql", "exec_prepared"})


def _modules(outside: Path | None = None) -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        if outside is not None and path.is_relative_to(outside):
            continue
        yield str(path.relative_to(REPO)), ast.parse(path.read_text(encoding="utf-8"))


def dialect_name_uses(tree: ast.AST) -> list[int]:
    """Lines that read ``<something>.dialect.name`` or ``dialect.name``."""
    return sorted(
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr == "name"
        and (
            (isinstance(node.value, ast.Attribute) and node.value.attr == "dialect")
            or (isinstance(node.value, ast.Name) and node.value.id == "dialect")
        )
    )


def sql_uses(tree: ast.AST) -> list[tuple[int, str]]:
    """Lines that run SQL text or hold a SQL string (docstrings excluded), with what was seen."""
    docstrings = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            function = node.func
            name = (
                function.id
                if isinstance(function, ast.Name)
                else function.attr
                if isinstance(function, ast.Attribute)
                else None
            )
            if name in SQL_CALLS:
                found.append((node.lineno, f"{name}("))
        elif isinstance(node, ast.JoinedStr) and node.values:
            first = node.values[0]
            if isinstance(first, ast.Constant) and SQL_STRING.match(str(first.value)):
                found.append((node.lineno, str(first.value)[:40]))
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
            and SQL_STRING.match(node.value)
        ):
            found.append((node.lineno, node.value[:40]))
    first_per_line = {line: what for line, what in sorted(found, reverse=True)}
    return sorted(first_per_line.items())


def test_the_detectors_find_what_they_look_for() -> None:
    sample = ast.parse(
        "engine.dialect.name == 'sqlite'\n"
        "dialect.name\n"
        "session.execute(text('x'))\n"
        "sa.text('x')\n"
        "connection.exec_driver_sql('x')\n"
        "pgconn.exec_prepared(b'n', [])\n"
        "q = 'SELECT id FROM t'\n"
        "q = f'PRAGMA busy_timeout={n}'\n"
        "q = '''\\n  WITH gone AS (DELETE FROM t) SELECT 1'''\n"
        "q = 'BEGIN IMMEDIATE'\n"
        "q = 'INSERT INTO t VALUES (1)'\n"
        "q = 'UPDATE t SET a = 1'\n"
    )
    assert dialect_name_uses(sample) == [1, 2]
    assert [line for line, _ in sql_uses(sample)] == [3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    prose = ast.parse(
        '"""SELECT the rows; DELETE FROM x in a docstring is prose."""\n'
        "message = 'Select a schedule'\n"
        "path.read_text()\n"
        "log.info('Begin the pass')\n"
        "error = 'WITH --prune the schedules are deleted'\n"
    )
    assert dialect_name_uses(prose) == []
    assert sql_uses(prose) == []


def test_no_dialect_name_test_outside_the_store() -> None:
    found = [
        f"{path}:{line}"
        for path, tree in _modules(outside=STORE)
        for line in dialect_name_uses(tree)
    ]
    assert found == [], "branch on store_for(...).capabilities instead:\n" + "\n".join(found)


def test_no_sql_string_outside_the_store_and_the_migrations() -> None:
    found = [
        f"{path}:{line}: {what!r}"
        for path, tree in _modules(outside=STORE)
        for line, what in sql_uses(tree)
    ]
    assert found == [], "move it into postburner_py/store/:\n" + "\n".join(found)


#: The documented import paths and what each must provide.
DOCUMENTED = {
    "postburner_py": ["Postburner"],
    "postburner_py.cli": ["main"],
    "postburner_py.worker": ["Worker", "run_worker"],
    "postburner_py.watchdog": ["run_watchdog", "tick", "watchdog_health"],
    "postburner_py.context": ["ExecutionContext", "PartialSuccess", "current_execution"],
    "postburner_py.schedule_file": ["sync", "load_schedule_file", "SyncPlan", "ScheduleChange"],
    "postburner_py.timegrid": ["CronGrid", "IntervalGrid", "make_grid", "validate_cron"],
    "postburner_py.db": ["Base", "BigIntPK", "JSONType", "UTCDateTime", "utcnow"],
    "postburner_py.store": ["Store", "Capabilities", "store_for"],
}


@pytest.mark.parametrize("module", sorted(DOCUMENTED))
def test_a_documented_import_path_keeps_working(module: str) -> None:
    imported = importlib.import_module(module)
    names = set(DOCUMENTED[module]) | set(getattr(imported, "__all__", ()))
    missing = sorted(name for name in names if not hasattr(imported, name))
    assert missing == [], f"{module} lost {missing}"


def test_the_console_script_is_cli_main() -> None:
    from postburner_py.cli import main
    from postburner_py.cli.commands import main as commands_main

    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert 'postburner = "postburner_py.cli:main"' in text
    assert main is commands_main and callable(main)


def _stored_job_classes() -> list[str]:
    """Every ``postburner_py.examples:*`` / ``postburner_py.bench_jobs:*`` string the repository
    stores in a schedule file, a doc, a starter file or a benchmark."""
    pattern = re.compile(r"postburner_py\.(?:examples|bench_jobs):\w+")
    found: set[str] = set()
    for folder in ("postburner_py", "examples", "bench", "docs", "scripts", "tests"):
        for path in (REPO / folder).rglob("*"):
            if path.suffix in {".py", ".yml", ".yaml", ".md", ".sh", ".env"} and path.is_file():
                found |= set(pattern.findall(path.read_text(encoding="utf-8", errors="replace")))
    found |= set(pattern.findall((REPO / "README.md").read_text(encoding="utf-8")))
    return sorted(found)


def test_the_repository_stores_job_class_strings_to_check() -> None:
    assert "postburner_py.examples:heartbeat" in _stored_job_classes()
    assert any(name.startswith("postburner_py.bench_jobs:") for name in _stored_job_classes())


@pytest.mark.parametrize("job_class", _stored_job_classes())
def test_a_stored_job_class_string_resolves(job_class: str) -> None:
    module, _, attribute = job_class.partition(":")
    assert callable(getattr(importlib.import_module(module), attribute))


#: The logger names operators filter on; each must still be created somewhere.
LOGGERS = (
    "postburner_py",
    "postburner_py.worker",
    "postburner_py.watchdog",
    "postburner_py.lifecycle",
    "postburner_py.hooks",
    "postburner_py.queue",
    "postburner_py.delayed_jobs",
    "postburner_py.dev",
)


def test_the_logger_names_stay() -> None:
    created = {
        node.args[0].value
        for _, tree in _modules()
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "getLogger"
        and node.args
        and isinstance(node.args[0], ast.Constant)
    }
    assert set(LOGGERS) <= created, sorted(set(LOGGERS) - created)


def test_every_named_query_has_a_name_a_description_and_a_statement() -> None:
    from postburner_py.store import queries

    files = sorted((STORE / "sql_files").glob("*.sql"))
    assert files, "store/sql_files/ holds the named queries"
    for path in files:
        text = path.read_text(encoding="utf-8")
        blocks = re.split(r"^--\s*name:\s*", text, flags=re.MULTILINE)[1:]
        loaded = queries.load(path.stem)
        assert len(blocks) == len(loaded), f"{path.name}: a query name is repeated"
        for block in blocks:
            name, _, rest = block.partition("\n")
            assert re.fullmatch(r"\w+", name.strip()), f"{path.name}: bad name {name!r}"
            assert rest.startswith("-- "), f"{path.name}: {name} has no description line"
            assert loaded[name.strip()], f"{path.name}: {name} has no statement"
