"""The allow-list is a boundary: a job_class names one attribute defined in one module, and a
prefix admits whole dotted names. Checked at save (API, schedule file, enqueue_at) and again
by the worker before any import, the same on PostgreSQL (its one-statement batch) and SQLite."""

from __future__ import annotations

import json
import random
import sys
import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select, text, update

from postburner_py import Postburner, Schedule, ScheduleExecution
from postburner_py.config import resolve_settings
from postburner_py.errors import (
    ConfigurationError,
    JobNotAllowedError,
    ScheduleFileError,
    ScheduleValidationError,
)
from postburner_py.queue.signing import JobBody
from postburner_py.schedules.one_off import DelayedJob
from postburner_py.schedules.schedule_file import sync
from postburner_py.store.dispatch_log import DispatchRecord, SqlDispatchRegistry
from postburner_py.store.history import HistoryRecord, HistoryStore
from postburner_py.validation import check_job_allowed, validate_job_class
from postburner_py.worker.admission import Admission, AdmitRequest, Admitter, Outcome
from postburner_py.worker.fast_path import worker_ledger
from postburner_py.worker.job_loader import resolve_job
from postburner_py.worker.settlement import Settler
from tests import jobs, trusted
from tests.factories import ManualClock, at, make_schedule
from tests.test_worker import _run_until

MakePostburner = Callable[..., Postburner]

PREFIX = "tests.trusted"
T0 = at("2025-03-01 10:20")
DUE = at("2025-03-01 11:00")
NOW = DUE + timedelta(seconds=5)

#: Refused by the spelling rule or the prefix, before anything is imported: at save and by
#: the worker. Each with the words of the rule it breaks.
REFUSED_BEFORE_IMPORT = {
    "tests.trusted:logging.os.system": "never a path through other modules",
    "tests.trusted:os.system": "never a path through other modules",
    "tests.trusted:jobs.record_run": "never a path through other modules",
    "tests.trusted:run.__globals__": "never a path through other modules",
    "tests.trusted::run": "never a path through other modules",
    "tests.trustedevil:run": "under none of allowed_job_prefixes",
    "tests.trustedevil.run": "under none of allowed_job_prefixes",
    "tests.trusted_evil:run": "under none of allowed_job_prefixes",
    "tests:trustedevil": "under none of allowed_job_prefixes",
    "os:system": "under none of allowed_job_prefixes",
    "tests.trusted:__class__": "starting with '__'",
    "tests.trusted:__builtins__": "starting with '__'",
    "tests.trusted:__init__": "starting with '__'",
    "tests.trusted:__x": "starting with '__'",
    "tests.trusted:run ": "whitespace",
    " tests.trusted:run": "whitespace",
    "tests.trusted: run": "whitespace",
    "tests.trusted:run\n": "whitespace",
    "tests.trusted:\trun": "whitespace",
    "tests.trust\u0435d:run": "non-ASCII",  # a Cyrillic e
    "tests.trusted:\uff52un": "non-ASCII",  # a fullwidth r
    "tests.trusted\uff1arun": "non-ASCII",  # a fullwidth colon
    "tests.trusted:run\u200b": "non-ASCII",  # a zero-width space
    "tests..trusted:run": "empty name between two dots",
    ".tests.trusted:run": "empty name between two dots",
    "tests.trusted.:run": "empty name between two dots",
    "tests.trusted:": "names no attribute",
    ":run": "names no module",
    "tests.trusted.": "names no attribute",
    "trusted": "names no module",
    "tests.trusted:1run": "not a Python identifier",
    "tests.1trusted:run": "not a Python identifier",
    "tests.trusted:run-now": "not a Python identifier",
    "": "must name one attribute of one module",
}
#: Well spelled and under the prefix, so only the worker can refuse them, once the module is
#: imported: the object is not defined in that module.
REFUSED_AFTER_IMPORT = {
    "tests.trusted:system": "defined in 'posix'",
    "tests.trusted:imported_run": "defined in 'tests.jobs'",
    "tests.trusted:os": "is the module 'os'",
    "tests.trusted:jobs": "is the module 'tests.jobs'",
    "tests:trusted": "is the module 'tests.trusted'",
}
ADMITTED = [
    "tests.trusted:run",
    "tests.trusted.run",
    "tests.trusted:Report",
    "tests.trusted.Report",
]


# --- the rule itself -------------------------------------------------------------------------


@pytest.mark.parametrize(("job_class", "reason"), REFUSED_BEFORE_IMPORT.items())
def test_a_job_class_breaking_the_rule_is_refused_with_the_rule_it_breaks(
    job_class: str, reason: str
) -> None:
    with pytest.raises(JobNotAllowedError, match=reason) as raised:
        check_job_allowed(job_class, [PREFIX])
    assert raised.value.field == "job_class"
    assert "\n" not in str(raised.value)
    with pytest.raises(JobNotAllowedError, match=reason):
        resolve_job(job_class, [PREFIX])
    assert "tests.trustedevil" not in sys.modules


@pytest.mark.parametrize(
    "job_class",
    [
        name
        for name, reason in REFUSED_BEFORE_IMPORT.items()
        if "allowed_job_prefixes" not in reason
    ],
)
def test_a_misspelled_job_class_is_refused_even_without_an_allow_list(job_class: str) -> None:
    with pytest.raises(ScheduleValidationError, match="job_class"):
        validate_job_class(job_class)
    with pytest.raises(JobNotAllowedError):
        check_job_allowed(job_class, [])


@pytest.mark.parametrize("prefix", ["tests.trusted", "tests.trusted.", "tests.trusted:", " tests"])
@pytest.mark.parametrize("job_class", [*ADMITTED, "tests.trusted.sub:run", "tests.trusted"])
def test_a_prefix_admits_its_module_and_what_is_below_it(prefix: str, job_class: str) -> None:
    check_job_allowed(job_class, [prefix])


def test_the_readme_prefix_admits_a_colon_job_class() -> None:
    settings = resolve_settings(allowed_job_prefixes=["myapp.jobs."], environ={})
    check_job_allowed("myapp.jobs:send_report", settings.allowed_job_prefixes)
    check_job_allowed("myapp.jobs.reports:Monthly", settings.allowed_job_prefixes)
    with pytest.raises(JobNotAllowedError, match="under none"):
        check_job_allowed("myapp.jobsevil:send_report", settings.allowed_job_prefixes)


def test_a_prefix_naming_an_attribute_admits_that_attribute_only() -> None:
    exact = ["myapp.jobs:send_report"]
    check_job_allowed("myapp.jobs:send_report", exact)
    check_job_allowed("myapp.jobs.send_report", exact)  # the same name, dotted
    for other in ["myapp.jobs:send_reports", "myapp.jobs:other", "myapp.jobs.send_report:x"]:
        with pytest.raises(JobNotAllowedError, match="under none"):
            check_job_allowed(other, exact)


@pytest.mark.parametrize(
    "prefix",
    [
        "my jobs",
        "myapp..jobs",
        ".myapp",
        "myapp.jobs:send.report",
        "myapp.jobs:__call__",
        "myapp.*",
        "*",
        "\uff4dyapp",
        "myapp.jobs::",
        "1app",
        3,
    ],
)
def test_a_garbage_prefix_is_a_configuration_error(prefix: Any) -> None:
    with pytest.raises(ConfigurationError, match="allowed_job_prefixes"):
        resolve_settings(allowed_job_prefixes=[prefix], environ={})
    if isinstance(prefix, str):
        environ = {"POSTBURNER_ALLOWED_JOB_PREFIXES": f"myapp.jobs,{prefix}"}
        with pytest.raises(ConfigurationError, match="allowed_job_prefixes"):
            resolve_settings(environ=environ)


@pytest.mark.parametrize(("job_class", "reason"), REFUSED_AFTER_IMPORT.items())
def test_a_name_the_module_did_not_define_is_refused_after_import(
    job_class: str, reason: str
) -> None:
    check_job_allowed(job_class, [PREFIX])  # only the import can tell
    with pytest.raises(JobNotAllowedError, match=reason):
        resolve_job(job_class, [PREFIX])


def test_a_function_or_a_class_defined_in_the_module_resolves() -> None:
    assert resolve_job("tests.trusted:run", [PREFIX]) is trusted.run
    perform = resolve_job("tests.trusted.Report", [PREFIX])
    assert isinstance(perform.__self__, trusted.Report)  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match="defines no 'missing'"):
        resolve_job("tests.trusted:missing", [PREFIX])


# --- PostgreSQL's batch statement decides as Python does ----------------------------------------


def _corpus() -> list[str]:
    """Every test string, and random ones built from the characters the rule cares about."""
    pieces = ["tests", "trusted", "trustedevil", "x", "_", "__", "a1", "1", "é", "\u0435"]
    separators = [".", ":", "", " ", "..", "\n", "\uff1a"]
    rng = random.Random(14)
    built = [
        "".join(rng.choice(pieces) + rng.choice(separators) for _ in range(rng.randint(1, 4)))
        for _ in range(1500)
    ]
    return [*REFUSED_BEFORE_IMPORT, *REFUSED_AFTER_IMPORT, *ADMITTED, *built]


def _python_admits(job_class: str, prefixes: Sequence[str]) -> bool:
    try:
        check_job_allowed(job_class, prefixes)
    except JobNotAllowedError:
        return False
    return True


@pytest.mark.parametrize(
    "prefixes",
    [[], [PREFIX], ["tests.trusted:run"], ["tests", "x:a1"], ["tests.trusted.", "x."]],
)
def test_the_batch_statement_admits_exactly_what_python_admits(
    make_postburner: MakePostburner, postgres_url: str, prefixes: list[str]
) -> None:
    from postburner_py.store.postgres_batch import allow_parameter, allowed_condition

    pb = make_postburner(database_url=postgres_url)
    corpus = _corpus()
    query = (
        "SELECT c.n, "
        + allowed_condition("c.job_class", "%(rules)s::jsonb")
        + " FROM jsonb_array_elements_text(%(classes)s::jsonb) WITH ORDINALITY AS c(job_class, n)"
    )
    with pb.engine.connect() as connection:
        rows = connection.exec_driver_sql(
            query,
            {
                "rules": allow_parameter(tuple(prefixes)).decode(),
                "classes": json.dumps(corpus),
            },
        ).all()
    sql = {int(n) - 1: bool(admitted) for n, admitted in rows}
    python = {n: _python_admits(job_class, prefixes) for n, job_class in enumerate(corpus)}
    differ = [corpus[n] for n in python if python[n] != sql[n]]
    assert differ == []
    assert any(python.values()) and not all(python.values())


# --- at save -----------------------------------------------------------------------------------


def _schedules(pb: Postburner) -> int:
    with pb.session() as session:
        return int(session.scalar(select(func.count()).select_from(Schedule)) or 0)


def _one_offs(pb: Postburner) -> int:
    with pb.session() as session:
        return int(session.scalar(select(func.count()).select_from(DelayedJob)) or 0)


def test_every_attacker_string_is_refused_by_the_api_and_nothing_is_written(
    make_postburner: MakePostburner, database_url: str
) -> None:
    pb = make_postburner(allowed_job_prefixes=[PREFIX])
    for job_class in REFUSED_BEFORE_IMPORT:
        with pb.session() as session:
            with pytest.raises(ScheduleValidationError, match="job_class"):
                session.add(make_schedule(job_class=job_class))
                session.commit()
            session.rollback()
        with pytest.raises(ScheduleValidationError, match="job_class"):
            pb.enqueue_at(DUE, job_class, ["never"])
    assert (_schedules(pb), _one_offs(pb)) == (0, 0)


def test_every_attacker_string_is_refused_by_a_schedule_file_sync(
    make_postburner: MakePostburner, database_url: str, tmp_path: Path
) -> None:
    pb = make_postburner(allowed_job_prefixes=[PREFIX])
    path = tmp_path / "schedules.yml"
    for job_class in REFUSED_BEFORE_IMPORT:
        entry = {"key": "attack", "job_class": job_class, "cron": "0 * * * *"}
        path.write_text(yaml.safe_dump({"defaults": {"jobs": [entry]}}), encoding="utf-8")
        with pytest.raises(ScheduleFileError, match="job_class: "):
            sync(pb, path, env="production")
    assert _schedules(pb) == 0


# --- by the worker ------------------------------------------------------------------------------


def _forge_one_off(pb: Postburner, job_class: str, job_id: str) -> JobBody:
    """A one-off job saved through the API with an admitted class, then changed with raw SQL
    (past every save check): the signed body names the row."""
    row = pb.enqueue_at(DUE, "tests.trusted:run", [job_id], job_id=job_id, ttr=60)
    with pb.engine.begin() as connection:
        connection.execute(
            text("UPDATE postburner_delayed_jobs SET job_class = :job_class WHERE id = :id"),
            {"job_class": job_class, "id": row.id},
        )
    return JobBody("delayed", row.id, row.job_id, row.run_at)


def _forge_execution(pb: Postburner, job_class: str, name: str) -> JobBody:
    """A schedule saved through the API, its execution's cached job_class then rewritten."""
    with pb.session() as session:
        schedule = make_schedule(name=name, job_class="tests.trusted:run", args=[name])
        session.add(schedule)
        session.commit()
        [execution] = schedule.future_live()
        cached = {**execution.cached_schedule, "job_class": job_class}
        session.execute(
            update(ScheduleExecution)
            .where(ScheduleExecution.id == execution.id)
            .values(cached_schedule=cached)
        )
        session.commit()
        return JobBody("execution", execution.id, name, execution.run_at)


def _admit_in_one_batch(
    strict: Postburner, bodies: Sequence[JobBody]
) -> tuple[list[Admission], int]:
    """Every body admitted in one batch of a worker's ledger; also how many answers the
    PostgreSQL fast path gave (0 on SQLite)."""
    history = HistoryStore(strict.session_factory)
    admitter = Admitter(strict, SqlDispatchRegistry(strict.session_factory), history)
    ledger = worker_ledger(strict.writer_engine, admitter, Settler(history))
    queued = threading.Event()
    try:
        ledger.submit(lambda _connection, items: [queued.wait(10) for _ in items], None)
        futures = [
            ledger.submit(admitter, admitter.prepare(AdmitRequest(body, NOW, "w-1")))
            if ledger.has_fast_path
            else ledger.submit(admitter, AdmitRequest(body, NOW, "w-1"))
            for body in bodies
        ]
        queued.set()
        answers = [admitter.answer(future.result(timeout=30)) for future in futures]
    finally:
        ledger.close()
    return answers, ledger.fast_answers


def test_rows_forged_past_the_save_check_are_refused_before_any_claim(
    make_postburner: MakePostburner, database_url: str
) -> None:
    pb = make_postburner(clock=ManualClock(T0))
    strict = make_postburner(clock=ManualClock(T0), allowed_job_prefixes=[PREFIX])
    forged = [
        _forge_one_off(pb, job_class, f"evil-{n}")
        for n, job_class in enumerate(REFUSED_BEFORE_IMPORT)
    ] + [
        _forge_execution(pb, job_class, f"evil-schedule-{n}")
        for n, job_class in enumerate(["tests.trustedevil:run", "tests.trusted:os.system"])
    ]
    controls = [
        _forge_one_off(pb, "tests.trusted:run", "fine"),
        _forge_execution(pb, "tests.trusted.Report", "fine-schedule"),
    ]
    answers, fast = _admit_in_one_batch(strict, [*controls, *forged])
    assert [answer.outcome for answer in answers[len(controls) :]] == [Outcome.REFUSED] * len(
        forged
    )
    for answer in answers[: len(controls)]:
        assert answer.outcome is None and answer.started is not None
    if strict.engine.dialect.name == "postgresql":
        assert fast == len(controls)  # the statement claimed these; refused none wrongly
    with pb.session() as session:
        keys = set(session.scalars(select(DispatchRecord.key)))
        started = set(session.scalars(select(HistoryRecord.schedule_name)))
    assert keys == started == {"job:fine", "fine-schedule"}


def test_the_worker_buries_forged_rows_and_never_imports_or_calls_them(
    make_postburner: MakePostburner, database_url: str
) -> None:
    pb = make_postburner(allowed_job_prefixes=[PREFIX])
    due = pb.clock() + timedelta(milliseconds=200)
    marker = uuid.uuid4().hex
    rows = {}
    for name, job_class in [
        ("control", "tests.trusted:run"),
        ("evil-module", "tests.trustedevil:run"),
        ("walk", "tests.trusted:jobs.record_run"),
        ("imported", "tests.trusted:imported_run"),
    ]:
        row = pb.enqueue_at(
            due, "tests.trusted:run", [f"{marker}-{name}"], job_id=f"{marker}-{name}"
        )
        with pb.engine.begin() as connection:
            connection.execute(
                text("UPDATE postburner_delayed_jobs SET job_class = :c WHERE id = :id"),
                {"c": job_class, "id": row.id},
            )
        rows[name] = row

    def state(name: str) -> str | None:
        stats = pb.queue.stats_job(rows[name].beanstalk_job_id or 0)
        return None if stats is None else str(stats["state"])

    worker = _run_until(
        pb,
        lambda: (
            jobs.runs_with(f"{marker}-control") == 1
            and all(state(name) == "buried" for name in ("evil-module", "walk", "imported"))
        ),
    )
    assert [jobs.runs_with(f"{marker}-{name}") for name in ("evil-module", "walk", "imported")] == [
        0,
        0,
        0,
    ]
    assert "tests.trustedevil" not in sys.modules
    assert worker.outcomes[Outcome.REFUSED] == 2
    assert worker.outcomes[Outcome.FAILED] == 1  # imported: refused once imported, not retried
    [record] = HistoryStore(pb.session_factory).get_by_job_id(f"{marker}-imported")
    assert record.status == "failed" and record.attempt == 1
    assert "defined in 'tests.jobs'" in (record.error_message or "")
