"""One-off delayed jobs: enqueue_at, cancel, and the worker running them once."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from postburner_py import Postburner
from postburner_py.errors import DuplicateJobError, JobNotAllowedError, ScheduleValidationError
from postburner_py.queue.signing import decode_body
from postburner_py.schedules.one_off import DelayedJob
from postburner_py.store.dispatch_log import SqlDispatchRegistry
from postburner_py.store.history import HistoryStore
from tests import jobs
from tests.test_worker import _run_until

MakePostburner = Callable[..., Postburner]
pytestmark = pytest.mark.usefixtures("database_url")


def _in(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def _count(pb: Postburner) -> int:
    with pb.session() as session:
        return int(session.scalar(select(func.count()).select_from(DelayedJob)) or 0)


def test_enqueue_at_puts_a_signed_delayed_job_at_once(make_postburner: MakePostburner) -> None:
    pb = make_postburner()
    row = pb.enqueue_at(_in(60), "tests.jobs:record_run", [7], queue="mailers", job_id="r:7")
    assert row.beanstalk_job_id is not None
    stats = pb.queue.stats_job(row.beanstalk_job_id)
    assert stats is not None
    assert (stats["tube"], stats["state"]) == (f"{pb.settings.namespace}.mailers", "delayed")
    job = pb.queue.peek(row.beanstalk_job_id)
    assert job is not None
    body = decode_body(job.body, pb.secret())
    assert (body.kind, body.id, body.key) == ("delayed", row.id, "r:7")


def test_a_pending_job_id_cannot_be_enqueued_twice(make_postburner: MakePostburner) -> None:
    pb = make_postburner()
    pb.enqueue_at(_in(60), "tests.jobs:record_run", job_id="reminder:1")
    with pytest.raises(DuplicateJobError, match="reminder:1"):
        pb.enqueue_at(_in(90), "tests.jobs:record_run", job_id="reminder:1")
    assert _count(pb) == 1
    assert (pb.queue.stats_tube("default") or {}).get("current-jobs-delayed") == 1


def test_cancel_removes_the_job_and_frees_its_job_id(make_postburner: MakePostburner) -> None:
    pb = make_postburner()
    first = pb.enqueue_at(_in(60), "tests.jobs:record_run", job_id="reminder:2")
    assert pb.cancel("reminder:2") is True
    assert first.beanstalk_job_id is not None
    assert pb.queue.stats_job(first.beanstalk_job_id) is None
    assert pb.cancel("reminder:2") is False
    again = pb.enqueue_at(_in(60), "tests.jobs:record_run", job_id="reminder:2")
    assert again.id != first.id


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"at": datetime(2030, 1, 1)}, "at"),
        ({"job_class": "not a path"}, "job_class"),
        ({"args": [object()]}, "args"),
        ({"queue": "bad queue!"}, "queue"),
        ({"priority": -1}, "priority"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_written(
    make_postburner: MakePostburner, arguments: dict[str, Any], field: str
) -> None:
    pb = make_postburner()
    call: dict[str, Any] = {"at": _in(60), "job_class": "tests.jobs:record_run"}
    call.update(arguments)
    at, job_class = call.pop("at"), call.pop("job_class")
    with pytest.raises(ScheduleValidationError) as raised:
        pb.enqueue_at(at, job_class, **call)
    assert raised.value.field == field
    assert _count(pb) == 0


def test_a_job_class_outside_the_allow_list_is_refused_at_enqueue(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner(allowed_job_prefixes=["myapp."])
    with pytest.raises(JobNotAllowedError):
        pb.enqueue_at(_in(60), "tests.jobs:record_run")
    assert _count(pb) == 0


def test_the_worker_runs_a_one_off_job_once_and_frees_its_job_id(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner()
    marker = uuid.uuid4().hex
    job_id = f"once:{marker}"
    row = pb.enqueue_at(_in(0.5), "tests.jobs:record_run", [marker], job_id=job_id)
    pb.queue.put(
        pb.queue.peek(row.beanstalk_job_id or 0).body,  # type: ignore[union-attr]
        queue="default",
        priority=1,
        delay=0,
        ttr=60,
    )
    _run_until(pb, lambda: jobs.runs_with(marker) == 1 and _status(pb, row.id) == "completed")
    assert jobs.runs_with(marker) == 1
    [record] = HistoryStore(pb.session_factory).get_by_job_id(job_id)
    assert record.status == "completed"
    entry = SqlDispatchRegistry(pb.session_factory).find_dispatch(f"job:{job_id}", row.run_at)
    assert entry is not None and entry.status == "completed"
    assert pb.enqueue_at(_in(60), "tests.jobs:record_run", job_id=job_id).id != row.id


def _status(pb: Postburner, row_id: int) -> str | None:
    with pb.session() as session:
        return session.scalar(select(DelayedJob.status).where(DelayedJob.id == row_id))


def test_a_job_enqueued_while_beanstalkd_is_down_is_stored_for_the_watchdog(
    make_postburner: MakePostburner, beanstalkd_factory: Any
) -> None:
    server = beanstalkd_factory()
    pb = make_postburner(beanstalkd_url=server.url)
    server.stop()
    row = pb.enqueue_at(_in(60), "tests.jobs:record_run", job_id="offline")
    assert (row.status, row.beanstalk_job_id) == ("pending", None)
    assert _count(pb) == 1
