"""Dispatch-log keys never collide: a schedule's key is its name, a one-off job's is
``job:<job_id>``, and no schedule name may start with ``job:``."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select

from postburner_py import Postburner, Schedule
from postburner_py.errors import ScheduleFileError, ScheduleValidationError
from postburner_py.queue.signing import JobBody
from postburner_py.schedules.schedule_file import sync
from postburner_py.store.dispatch_log import DispatchRecord, SqlDispatchRegistry
from postburner_py.store.history import HistoryStore
from postburner_py.worker.admission import Admission, AdmitRequest, Admitter
from postburner_py.worker.fast_path import worker_ledger
from postburner_py.worker.settlement import Settler
from tests.factories import ManualClock, at, create_schedule, make_schedule

MakePostburner = Callable[..., Postburner]

T0 = at("2025-03-01 10:20")
DUE = at("2025-03-01 11:00")  # the first hourly occurrence after T0
NOW = DUE + timedelta(seconds=1)


def _names(pb: Postburner) -> list[str]:
    with pb.session() as session:
        return sorted(session.scalars(select(Schedule.name)))


@pytest.mark.parametrize("name", ["job:r7", "job:", "job:job:r7"])
def test_a_schedule_name_in_the_one_off_key_namespace_is_refused_and_nothing_is_written(
    make_postburner: MakePostburner, database_url: str, tmp_path: Path, name: str
) -> None:
    pb = make_postburner()
    with pb.session() as session:
        with pytest.raises(ScheduleValidationError, match="reserved for one-off jobs") as raised:
            session.add(make_schedule(name=name))
        assert raised.value.field == "name"
    schedule_id = create_schedule(pb, name="r7")
    with pb.session() as session:
        with pytest.raises(ScheduleValidationError, match="reserved for one-off jobs"):
            session.get_one(Schedule, schedule_id).name = name
        session.rollback()
    path = tmp_path / "schedules.yml"
    entry = {"key": name, "job_class": "tests.jobs:record_run", "cron": "0 * * * *"}
    path.write_text(yaml.safe_dump({"defaults": {"jobs": [entry]}}), encoding="utf-8")
    with pytest.raises(ScheduleFileError, match=r"name: .*reserved for one-off jobs"):
        sync(pb, path, env="production")
    assert _names(pb) == ["r7"]


@pytest.mark.parametrize("name", ["jobs:r7", "job-r7", "Job:r7", "r7:job:", "my job:r7"])
def test_names_that_only_resemble_the_one_off_namespace_are_accepted(
    make_postburner: MakePostburner, database_url: str, name: str
) -> None:
    pb = make_postburner()
    create_schedule(pb, name=name)
    assert _names(pb) == [name]


def _admit(pb: Postburner, bodies: Sequence[JobBody]) -> list[Admission]:
    """The bodies admitted in one batch of a worker's ledger (PostgreSQL: its fast path)."""
    history = HistoryStore(pb.session_factory)
    admitter = Admitter(pb, SqlDispatchRegistry(pb.session_factory), history)
    ledger = worker_ledger(pb.writer_engine, admitter, Settler(history))
    queued = threading.Event()
    try:
        ledger.submit(lambda _connection, items: [queued.wait(10) for _ in items], None)
        requests = [AdmitRequest(body, NOW, "w-1") for body in bodies]
        if ledger.has_fast_path:
            requests = [admitter.prepare(request) for request in requests]
        futures = [ledger.submit(admitter, request) for request in requests]
        queued.set()
        return [admitter.answer(future.result(timeout=30)) for future in futures]
    finally:
        ledger.close()


def test_a_one_off_job_and_a_schedule_named_like_it_both_run_at_the_same_instant(
    make_postburner: MakePostburner, database_url: str
) -> None:
    pb = make_postburner(clock=ManualClock(T0))
    schedule_id = create_schedule(pb, name="r7", ttr=60)
    with pb.session() as session:
        [execution] = session.get_one(Schedule, schedule_id).future_live()
    assert execution.run_at == DUE
    one_off = pb.enqueue_at(DUE, "tests.jobs:record_run", job_id="r7", ttr=60)
    answers = _admit(
        pb,
        [
            JobBody("execution", execution.id, "r7", DUE),
            JobBody("delayed", one_off.id, "r7", DUE),
        ],
    )
    assert [(a.outcome, a.started is not None) for a in answers] == [(None, True), (None, True)]
    assert [a.occurrence.key for a in answers if a.occurrence] == ["r7", "job:r7"]
    with pb.session() as session:
        keys = session.execute(
            select(DispatchRecord.key, func.count()).group_by(DispatchRecord.key)
        )
        assert {key: count for key, count in keys} == {"r7": 1, "job:r7": 1}
