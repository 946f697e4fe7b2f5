"""Scoped sync: a schedule file owns the schedules of its label and touches no other; the
operator's pause survives it; ``schedules delete``. Real PostgreSQL/SQLite and Beanstalkd."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from postburner_py import Postburner, Schedule, ScheduleExecution
from postburner_py.cli.admin import delete_schedule, set_enabled, set_paused
from postburner_py.errors import PostburnerError, ScheduleFileError
from postburner_py.schedules.schedule_file import sync
from postburner_py.store.history import HistoryStore
from tests.factories import ManualClock, create_schedule, schedule_attributes

MakePostburner = Callable[..., Postburner]
pytestmark = pytest.mark.usefixtures("database_url")


def _write(path: Path, *keys: str, **fields: Any) -> Path:
    jobs = [{"key": key, "job_class": "tests.jobs:record_run", "cron": "0 * * * *"} for key in keys]
    for job in jobs:
        job.update(fields)
    path.write_text(yaml.safe_dump({"defaults": {"jobs": jobs}}), encoding="utf-8")
    return path


def _state(pb: Postburner) -> dict[str, tuple[bool, str | None, str]]:
    with pb.session() as session:
        rows = session.execute(
            select(Schedule.name, Schedule.enabled, Schedule.label, Schedule.cron)
        )
        return {name: (enabled, label, cron) for name, enabled, label, cron in rows}


def _queued(pb: Postburner) -> dict[str, int]:
    with pb.session() as session:
        rows = session.execute(
            select(Schedule.name, ScheduleExecution.id)
            .join(ScheduleExecution, ScheduleExecution.schedule_id == Schedule.id)
            .where(ScheduleExecution.status.in_(("pending", "scheduled")))
        ).all()
    return {name: execution_id for name, execution_id in rows}


def _code_schedules(pb: Postburner, count: int) -> list[str]:
    """``count`` schedules created from code, in one commit (one reconcile pass)."""
    names = [f"code-{n:02d}" for n in range(count)]
    with pb.session() as session:
        session.add_all(
            Schedule(**schedule_attributes(name=name, cron="0 * * * *")) for name in names
        )
        session.commit()
    return names


def test_sync_with_prune_next_to_fifty_code_schedules_leaves_them_untouched(
    make_postburner: MakePostburner, tmp_path: Path
) -> None:
    pb = make_postburner(clock=ManualClock(datetime.now(UTC).replace(minute=10, second=0)))
    code = _code_schedules(pb, 50)
    before = {name: row for name, row in _state(pb).items() if name in code}
    queued_before = {name: eid for name, eid in _queued(pb).items() if name in code}
    assert len(queued_before) == 50
    path = _write(tmp_path / "schedules.yml", "report", "digest")
    preview = sync(pb, path, env="production", prune=True, dry_run=True)
    assert preview.left_alone == tuple(code)
    assert "50 not ours (left alone)" in preview.describe()
    assert [(c.action, c.name) for c in preview.changes] == [
        ("create", "report"),
        ("create", "digest"),
    ]

    plan = sync(pb, path, env="production", prune=True)
    assert plan.label == "schedules" and plan.left_alone == tuple(code)
    assert {c.name for c in plan.of("delete")} == set()
    again = sync(pb, _write(path, "report"), env="production", prune=True)
    assert [(c.action, c.name) for c in again.changes] == [("delete", "digest")]
    state = _state(pb)
    assert {name: state[name] for name in code} == before  # same flag, owner, definition
    assert {name: eid for name, eid in _queued(pb).items() if name in code} == queued_before
    assert state["report"][1] == "schedules"


def test_two_files_with_their_own_labels_never_touch_each_other(
    make_postburner: MakePostburner, tmp_path: Path
) -> None:
    pb = make_postburner()
    sync(pb, _write(tmp_path / "billing.yml", "invoice"), env="production")
    sync(pb, _write(tmp_path / "reports.yml", "daily"), env="production")
    plan = sync(pb, _write(tmp_path / "reports.yml", "weekly"), env="production", prune=True)
    assert [(c.action, c.name) for c in plan.changes] == [("create", "weekly"), ("delete", "daily")]
    assert plan.left_alone == ("invoice",)
    assert _state(pb)["invoice"] == (True, "billing", "0 * * * *")
    assert set(_queued(pb)) == {"invoice", "weekly"}
    renamed = _write(tmp_path / "billing-v2.yml", "refund")  # the same owner, a new file name
    other = sync(pb, renamed, env="production", label="billing", prune=True)
    assert [(c.action, c.name) for c in other.changes] == [
        ("create", "refund"),
        ("delete", "invoice"),
    ]


def test_an_entry_naming_a_schedule_owned_elsewhere_is_refused_unless_adopted(
    make_postburner: MakePostburner, tmp_path: Path
) -> None:
    pb = make_postburner()
    create_schedule(pb, name="report", cron="0 * * * *")
    path = _write(tmp_path / "schedules.yml", "report", cron="30 * * * *")
    with pytest.raises(ScheduleFileError, match=r"owned by code.*--adopt"):
        sync(pb, path, env="production")
    assert _state(pb)["report"] == (True, None, "0 * * * *")  # nothing written
    adopted = sync(pb, path, env="production", adopt=True)
    [change] = adopted.changes
    assert change.fields["label"] == (None, "schedules")
    assert _state(pb)["report"] == (True, "schedules", "30 * * * *")
    with pytest.raises(ScheduleFileError, match="label 'schedules'"):
        sync(pb, path, env="production", label="other")


def test_a_sync_never_resumes_a_paused_schedule(
    make_postburner: MakePostburner, tmp_path: Path
) -> None:
    pb = make_postburner()
    path = _write(tmp_path / "schedules.yml", "report")
    sync(pb, path, env="production")
    paused = set_paused(pb, "report", True, reason="vendor outage")
    assert paused.paused and paused.changed and paused.next_run_at is None
    plan = sync(pb, _write(path, "report", cron="15 * * * *"), env="production")
    [change] = plan.changes
    assert change.move is None  # nothing queued before, nothing after: it stays paused
    with pb.session() as session:
        schedule = pb.store.schedule_by_name(session, "report")
        assert schedule is not None and schedule.cron == "15 * * * *"
        assert (schedule.is_paused, schedule.pause_reason) == (True, "vendor outage")
    assert "report" not in _queued(pb)
    assert sync(pb, path, env="production").changes == ()
    assert "report" not in _queued(pb)


def test_disabling_a_file_schedule_by_hand_is_refused_so_no_sync_undoes_it(
    make_postburner: MakePostburner, tmp_path: Path
) -> None:
    pb = make_postburner()
    sync(pb, _write(tmp_path / "schedules.yml", "report"), env="production")
    with pytest.raises(PostburnerError, match=r"belongs to schedule file label 'schedules'.*pause"):
        set_enabled(pb, "report", False)
    assert _state(pb)["report"][0] is True
    create_schedule(pb, name="adhoc")
    assert set_enabled(pb, "adhoc", False).changed  # code's schedules: the operator's


def test_schedules_delete_removes_the_job_and_the_row_and_keeps_the_history(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner()
    create_schedule(pb, name="report")
    HistoryStore(pb.session_factory).record_start(
        job_id="1", task_identifier="tests.jobs:record_run", worker_id="w", schedule_name="report"
    )
    assert delete_schedule(pb, "report") == 1
    assert "report" not in _state(pb)
    stats = pb.queue.stats_tube("default") or {}
    assert int(stats.get("current-jobs-delayed", 0)) == 0
    assert [e.schedule_name for e in HistoryStore(pb.session_factory).query()] == ["report"]
    with pytest.raises(PostburnerError, match="no schedule named 'report'"):
        delete_schedule(pb, "report")


def test_a_file_sets_the_run_window_and_the_catch_up_window_and_refuses_bad_ones(
    make_postburner: MakePostburner, tmp_path: Path
) -> None:
    pb = make_postburner()
    fields = {"starts_at": "2030-11-01T00:00:00+01:00", "ends_at": "2030-12-24T23:00:00+01:00"}
    path = _write(tmp_path / "schedules.yml", "campaign", catch_up_window=900, **fields)
    sync(pb, path, env="production")
    with pb.session() as session:
        schedule = pb.store.schedule_by_name(session, "campaign")
        assert schedule is not None
        assert (schedule.catch_up_window, schedule.starts_at, schedule.ends_at) == (
            900,
            datetime(2030, 10, 31, 23, tzinfo=UTC),
            datetime(2030, 12, 24, 22, tzinfo=UTC),
        )
        assert [e.run_at for e in schedule.future_live()] == [schedule.starts_at]  # hourly
    for field, value in (("catch_up_window", -5), ("ends_at", "2030-12-24"), ("starts_at", 3)):
        with pytest.raises(ScheduleFileError, match=f"key 'campaign'\\): {field}"):
            sync(pb, _write(path, "campaign", **{**fields, field: value}), env="production")
