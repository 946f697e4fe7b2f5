"""Small operator gaps: a job's plain return value is kept as its result, ``history
--schedule NAME``, and ``schedules list`` showing paused and partial_success as such."""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from postburner_py import Postburner
from postburner_py.cli.admin import set_paused
from postburner_py.cli.status import schedule_rows
from postburner_py.store.history import HistoryStore
from postburner_py.worker.process import Worker
from postburner_py.worker.results import MAX_RESULT_BYTES, storable_result
from tests.factories import create_schedule

MakePostburner = Callable[..., Postburner]


def _run_once(pb: Postburner, job_class: str, marker: str) -> list[Any]:
    anchor = (datetime.now(UTC) + timedelta(seconds=2)).replace(microsecond=0)
    create_schedule(
        pb,
        name=marker,
        job_class=job_class,
        cron=None,
        anchor=anchor,
        interval=1,
        interval_unit="days",
        args=[marker],
    )
    history = HistoryStore(pb.session_factory)
    worker = Worker(pb, reserve_timeout=0.2)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not any(e.finished_at for e in history.query(schedule_name=marker)):
            assert time.monotonic() < deadline, "the run never finished"
            time.sleep(0.05)
    finally:
        worker.stop()
        thread.join(timeout=30)
    return history.query(schedule_name=marker)


def test_a_plain_return_value_is_kept_as_the_runs_result(
    make_postburner: MakePostburner, sqlite_url: str
) -> None:
    pb = make_postburner(database_url=sqlite_url)  # the generic settlement (PostgreSQL's below)
    marker = f"r-{uuid.uuid4().hex[:8]}"
    [entry] = _run_once(pb, "tests.jobs:return_summary", marker)
    assert entry.status == "completed"
    assert entry.results == {"marker": marker, "sent": 3, "ok": True}


def test_a_return_value_json_cannot_hold_is_stored_as_a_note_and_the_run_completes(
    make_postburner: MakePostburner, postgres_url: str
) -> None:
    pb = make_postburner(database_url=postgres_url)  # the batch statement's JSON path
    marker = f"o-{uuid.uuid4().hex[:8]}"
    [entry] = _run_once(pb, "tests.jobs:return_object", marker)
    assert entry.status == "completed"
    assert entry.results["unstored_result"] == repr({marker: {1, 2}})
    assert "not JSON-serialisable" in entry.results["reason"]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (float("nan"), "not JSON-serialisable"),
        (b"bytes", "not JSON-serialisable"),
        ("a\x00b", "NUL"),
        ("x" * (MAX_RESULT_BYTES + 1), "larger than"),
    ],
)
def test_what_cannot_be_stored_as_json_everywhere_becomes_a_note(value: Any, reason: str) -> None:
    stored = storable_result(value)
    assert reason in stored["reason"] and len(stored["unstored_result"]) <= 1000


def test_json_values_are_stored_as_returned() -> None:
    for value in (None, 0, 1.5, "text", [1, "a"], {"nested": {"list": [True, None]}}):
        assert storable_result(value) == value


def test_history_of_one_schedule_and_the_listing_of_pause_and_partial_success(
    make_postburner: MakePostburner, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from postburner_py.cli.inspect import _run_history
    from postburner_py.cli.schedules import _run_schedules_list

    pb = make_postburner(database_url=postgres_url)
    marker = f"p-{uuid.uuid4().hex[:8]}"
    [partial] = _run_once(pb, "tests.jobs:half_done", marker)
    create_schedule(pb, name="quiet")
    set_paused(pb, "quiet", True, reason="vendor outage")
    rows = {row["name"]: row for row in schedule_rows(pb)}
    assert rows[marker]["last_outcome"] == "partial_success"
    assert rows["quiet"]["paused"] is True and rows["quiet"]["pause_reason"] == "vendor outage"
    assert _run_schedules_list(_args(pb, json=False)) == 0
    listing = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "partial_success" in listing[marker]
    assert f"PAUSED since {rows['quiet']['paused_at']}: vendor outage" in listing["quiet"]
    assert listing["quiet"].split()[1] == "paused"

    from postburner_py.cli.inspect import _run_next

    next_args = _args(pb, json=False, cron=None, schedule="quiet", count=1, tz=None)
    assert _run_next(argparse.Namespace(**vars(next_args), dst_gap=None, dst_fold=None)) == 0
    assert "schedule quiet is paused since" in capsys.readouterr().err

    args = _args(pb, json=False, schedule=marker, from_=None, to=None, task=None, status=None)
    assert _run_history(argparse.Namespace(**vars(args), limit=50)) == 0
    shown = capsys.readouterr().out.splitlines()
    assert len(shown) == 1 and marker in shown[0] and partial.status in shown[0]


def _args(pb: Postburner, **extra: Any) -> argparse.Namespace:
    return argparse.Namespace(
        database_url=pb.settings.database_url,
        beanstalkd_url=pb.settings.beanstalkd_url,
        namespace=pb.settings.namespace,
        allowed_job_prefixes=",".join(pb.settings.allowed_job_prefixes),
        secret=pb.settings.secret,
        catch_up_window=None,
        node_id=None,
        **extra,
    )
