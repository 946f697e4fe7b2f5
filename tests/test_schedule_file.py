"""Schedule files: parsing, validation, placeholders, and ``sync`` against real servers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from postburner_py import Postburner, Schedule, ScheduleExecution
from postburner_py.cli.admin import STARTER_SCHEDULES
from postburner_py.errors import ScheduleFileError
from postburner_py.schedules.schedule_file import (
    load_schedule_file,
    read_entries,
    render_arguments,
    sync,
)
from tests.factories import ManualClock

MakePostburner = Callable[..., Postburner]
REPO = Path(__file__).resolve().parent.parent


def _job(key: str, **fields: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"key": key, "job_class": "tests.jobs:record_run", "cron": "0 * * * *"}
    entry.update(fields)
    return entry


def _write(tmp_path: Path, *jobs: dict[str, Any], **sections: Any) -> Path:
    import yaml

    document: dict[str, Any] = {"defaults": {"jobs": list(jobs)}, **sections}
    path = tmp_path / "schedules.yml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def _clock() -> ManualClock:
    """Ten past the current hour: fixed, so planned and applied run_ats agree."""
    return ManualClock(datetime.now(UTC).replace(minute=10, second=0, microsecond=0))


def _live(pb: Postburner) -> dict[str, tuple[int, datetime]]:
    """Schedule name -> (execution id, run_at) of its live future execution."""
    with pb.session() as session:
        rows = session.execute(
            select(Schedule.name, ScheduleExecution.id, ScheduleExecution.run_at)
            .join(ScheduleExecution, ScheduleExecution.schedule_id == Schedule.id)
            .where(ScheduleExecution.status.in_(("pending", "scheduled")))
        ).all()
    return {name: (execution_id, run_at) for name, execution_id, run_at in rows}


def _schedules(pb: Postburner) -> dict[str, Schedule]:
    with pb.session() as session:
        return {s.name: s for s in session.scalars(select(Schedule))}


def _statuses(pb: Postburner) -> list[str]:
    with pb.session() as session:
        return sorted(session.scalars(select(ScheduleExecution.status)))


# --- sync against PostgreSQL and SQLite -------------------------------------------------------


@pytest.mark.usefixtures("database_url")
class TestSync:
    def test_sync_creates_the_schedules_and_queues_their_first_executions(
        self, make_postburner: MakePostburner, tmp_path: Path
    ) -> None:
        clock = _clock()
        pb = make_postburner(clock=clock)
        path = _write(
            tmp_path,
            _job("reports:hourly", args=[1], queue="reports", priority=10, ttr=60),
            _job("pulse", cron=None, interval=5, interval_unit="minutes", description="pulse"),
        )
        plan = sync(pb, path, env="production")
        assert [(c.action, c.name) for c in plan.changes] == [
            ("create", "reports:hourly"),
            ("create", "pulse"),
        ]
        schedules = _schedules(pb)
        assert schedules["reports:hourly"].queue == "reports"
        assert schedules["reports:hourly"].priority == 10
        assert schedules["pulse"].anchor == datetime(1970, 1, 1, tzinfo=UTC)
        live = _live(pb)
        assert live["reports:hourly"][1] == clock.now.replace(minute=0) + timedelta(hours=1)
        assert live["pulse"][1] == clock.now + timedelta(minutes=5)
        assert plan.changes[0].move is not None
        assert plan.changes[0].move.new_run_at == live["reports:hourly"][1]

    def test_a_second_sync_changes_nothing_and_supersedes_nothing(
        self, make_postburner: MakePostburner, tmp_path: Path
    ) -> None:
        pb = make_postburner(clock=_clock())
        path = _write(
            tmp_path,
            _job("a", kwargs={"day": "{{fire_time.iso8601}}"}),
            _job("b", cron="@daily", timezone="Europe/Prague", anchor=None),
            _job(
                "c", cron=None, interval=1, interval_unit="days", anchor="2025-01-31T09:00:00+01:00"
            ),
        )
        sync(pb, path, env="production")
        before = _live(pb)
        updated_at = {name: s.updated_at for name, s in _schedules(pb).items()}
        plan = sync(pb, path, env="production")
        assert plan.changes == ()
        assert sorted(plan.unchanged) == ["a", "b", "c"]
        assert _live(pb) == before
        assert {name: s.updated_at for name, s in _schedules(pb).items()} == updated_at
        assert _statuses(pb) == ["scheduled"] * 3

    def test_changing_the_cron_moves_the_queued_execution(
        self, make_postburner: MakePostburner, tmp_path: Path
    ) -> None:
        clock = _clock()
        pb = make_postburner(clock=clock)
        sync(pb, _write(tmp_path, _job("report")), env="production")
        [(old_id, old_run_at)] = _live(pb).values()
        plan = sync(pb, _write(tmp_path, _job("report", cron="30 * * * *")), env="production")
        [change] = plan.changes
        assert (change.action, change.fields) == ("update", {"cron": ("0 * * * *", "30 * * * *")})
        [(new_id, new_run_at)] = _live(pb).values()
        assert new_id != old_id
        assert new_run_at == clock.now.replace(minute=30)
        assert change.move is not None
        assert (change.move.old_run_at, change.move.new_run_at) == (old_run_at, new_run_at)
        assert _statuses(pb) == ["scheduled", "superseded"]

    def test_changing_only_the_description_keeps_the_queued_execution(
        self, make_postburner: MakePostburner, tmp_path: Path
    ) -> None:
        pb = make_postburner(clock=_clock())
        sync(pb, _write(tmp_path, _job("report", description="old")), env="production")
        before = _live(pb)
        plan = sync(pb, _write(tmp_path, _job("report", description="new")), env="production")
        assert [(c.action, c.fields, c.move) for c in plan.changes] == [
            ("update", {"description": ("old", "new")}, None)
        ]
        assert _live(pb) == before
        assert _schedules(pb)["report"].description == "new"

    def test_a_schedule_missing_from_the_file_is_disabled_and_unqueued(
        self, make_postburner: MakePostburner, tmp_path: Path
    ) -> None:
        pb = make_postburner(clock=_clock())
        sync(pb, _write(tmp_path, _job("keep"), _job("drop")), env="production")
        dropped_job = pb.queue.stats_job(_job_id(pb, "drop"))
        assert dropped_job is not None
        plan = sync(pb, _write(tmp_path, _job("keep")), env="production")
        assert [(c.action, c.name) for c in plan.changes] == [("disable", "drop")]
        assert _schedules(pb)["drop"].enabled is False
        assert set(_live(pb)) == {"keep"}
        assert pb.queue.stats_job(int(dropped_job["id"])) is None
        assert sync(pb, _write(tmp_path, _job("keep")), env="production").changes == ()

    def test_prune_deletes_the_schedules_missing_from_the_file(
        self, make_postburner: MakePostburner, tmp_path: Path
    ) -> None:
        pb = make_postburner(clock=_clock())
        sync(pb, _write(tmp_path, _job("keep"), _job("drop")), env="production")
        job_id = _job_id(pb, "drop")
        plan = sync(pb, _write(tmp_path, _job("keep")), env="production", prune=True)
        assert [(c.action, c.name) for c in plan.changes] == [("delete", "drop")]
        assert set(_schedules(pb)) == {"keep"}
        assert set(_live(pb)) == {"keep"}
        assert pb.queue.stats_job(job_id) is None

    def test_dry_run_writes_nothing_and_reports_the_moves(
        self, make_postburner: MakePostburner, tmp_path: Path
    ) -> None:
        clock = _clock()
        pb = make_postburner(clock=clock)
        sync(pb, _write(tmp_path, _job("move"), _job("gone")), env="production")
        before, schedules = _live(pb), _schedules(pb)
        path = _write(tmp_path, _job("move", cron="45 * * * *"), _job("new"))
        plan = sync(pb, path, env="production", prune=True, dry_run=True)
        assert plan.dry_run is True
        moves = {c.name: (c.action, c.move) for c in plan.changes}
        assert moves["move"][0] == "update"
        assert moves["move"][1] is not None
        assert moves["move"][1].old_run_at == before["move"][1]
        assert moves["move"][1].new_run_at == clock.now.replace(minute=45)
        assert moves["gone"][0] == "delete"
        assert moves["new"][0] == "create"
        assert "nothing written" in plan.describe()
        assert "45:00+00:00" in plan.describe()
        assert _live(pb) == before
        assert set(_schedules(pb)) == set(schedules)
        assert _schedules(pb)["move"].cron == "0 * * * *"

    def test_an_invalid_entry_writes_nothing_at_all(
        self, make_postburner: MakePostburner, tmp_path: Path
    ) -> None:
        pb = make_postburner(clock=_clock())
        path = _write(tmp_path, _job("valid:first"), _job("reports:daily", cron="61 * * * *"))
        with pytest.raises(ScheduleFileError) as raised:
            sync(pb, path, env="production")
        assert "defaults.jobs[1] (key 'reports:daily'): cron: '61 * * * *'" in str(raised.value)
        assert str(raised.value).startswith(str(path))
        assert _schedules(pb) == {}
        assert pb.queue.stats_tube("default") is None

    def test_the_whole_sync_is_one_commit(
        self, make_postburner: MakePostburner, tmp_path: Path
    ) -> None:
        pb = make_postburner(clock=_clock())
        sync(pb, _write(tmp_path, _job("old")), env="production")
        schedules_per_commit: list[int] = []

        def count(session: Session) -> None:
            pending = [*session.new, *session.dirty, *session.deleted]
            schedules_per_commit.append(sum(isinstance(o, Schedule) for o in pending))

        event.listen(pb.work_session_factory, "before_commit", count)
        event.listen(pb.session_factory, "before_commit", count)
        path = _write(tmp_path, *(_job(f"job-{n}") for n in range(5)))
        sync(pb, path, env="production", prune=True)
        assert [n for n in schedules_per_commit if n] == [6]
        assert len(_live(pb)) == 5

    def test_a_disallowed_job_class_is_refused_before_writing(
        self, make_postburner: MakePostburner, tmp_path: Path
    ) -> None:
        pb = make_postburner(allowed_job_prefixes="myapp.jobs.")
        with pytest.raises(ScheduleFileError, match=r"jobs\[0\] \(key 'x'\): job_class: "):
            sync(pb, _write(tmp_path, _job("x")), env="production")
        assert _schedules(pb) == {}


def _job_id(pb: Postburner, name: str) -> int:
    with pb.session() as session:
        job_id = session.scalar(
            select(ScheduleExecution.beanstalk_job_id)
            .join(Schedule, Schedule.id == ScheduleExecution.schedule_id)
            .where(Schedule.name == name, ScheduleExecution.status == "scheduled")
        )
    assert job_id is not None
    return int(job_id)


# --- reading and validating (no servers) ------------------------------------------------------


def test_the_environment_section_is_deep_merged_over_defaults_by_key() -> None:
    text = """
defaults:
  jobs:
    - {key: a, job_class: "m:f", cron: "0 * * * *", kwargs: {x: 1, y: {z: 2}}, args: [1, 2]}
    - {key: b, job_class: "m:f", cron: "0 * * * *"}
staging:
  jobs:
    - {key: a, queue: slow, kwargs: {y: {w: 3}}, args: [9]}
    - {key: c, job_class: "m:g", cron: "@daily"}
"""
    entries = {entry.key: entry for entry in read_entries(text, env="staging")}
    assert list(entries) == ["a", "b", "c"]
    assert entries["a"].fields == {
        "key": "a",
        "job_class": "m:f",
        "cron": "0 * * * *",
        "kwargs": {"x": 1, "y": {"z": 2, "w": 3}},
        "args": [9],
        "queue": "slow",
    }
    assert entries["a"].location == "staging.jobs[0]"
    assert [entry.key for entry in read_entries(text, env="production")] == ["a", "b"]


def test_yaml_anchors_and_merge_keys_may_share_fields() -> None:
    text = """
shared: &shared {job_class: "m:f", cron: "0 * * * *", queue: slow}
defaults:
  jobs:
    - {<<: *shared, key: a}
    - {<<: *shared, key: b, queue: fast}
"""
    entries = read_entries(text, env="production")
    assert [(entry.key, entry.fields["queue"]) for entry in entries] == [
        ("a", "slow"),
        ("b", "fast"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "defaults:\n  jobs:\n    - {key: a, job_class: 'm:f', cron: '@daily'}\n"
            "    - {key: a, job_class: 'm:f', cron: '@hourly'}\n",
            "defaults.jobs[1] (key 'a'): duplicate key, already used by defaults.jobs[0]",
        ),
        (
            "defaults:\n  jobs:\n    - {key: a, job_class: 'm:f', crom: '@daily'}\n",
            "defaults.jobs[0] (key 'a'): unknown field 'crom' (did you mean 'cron'?)",
        ),
        (
            "defaults:\n  jobs:\n    - key: a\n      cron: '@daily'\n      cron: '@hourly'\n",
            "line 5: 'cron' is given twice",
        ),
        ("defaults:\n  jobs:\n    - {job_class: 'm:f'}\n", "defaults.jobs[0]: key: required"),
        ("defaults:\n  jobs: {a: 1}\n", "defaults.jobs: expected a list of jobs, got dict"),
        ("defaults:\n  job: []\n", "defaults: unknown setting 'job'"),
        ("development:\n  jobs: []\n", "no 'defaults' section and no section for environment"),
        ("defaults: [\n", "not valid YAML"),
    ],
)
def test_a_malformed_file_is_refused_with_the_place_named(text: str, message: str) -> None:
    with pytest.raises(ScheduleFileError) as raised:
        read_entries(text, env="production")
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"kwargs": {"when": "at {{fire_time.iso}}"}},
            "(key 'x'): kwargs.when: unknown placeholder {{fire_time.iso}}; use one of",
        ),
        ({"args": [1, ["{{Key}}"]]}, "(key 'x'): args[1][0]: unknown placeholder {{Key}}"),
        ({"timezone": "Mars/Olympus"}, "(key 'x'): timezone: "),
        ({"enabled": "no thanks"}, "(key 'x'): enabled: must be true or false"),
        ({"cron": None, "interval": 5}, "(key 'x'): interval_unit: "),
        ({"cron": None, "interval": 0, "interval_unit": "hours"}, "(key 'x'): interval: "),
        (
            {"cron": None, "interval": 1, "interval_unit": "days", "anchor": "2025-01-31T09:00"},
            "(key 'x'): anchor: 2025-01-31T09:00:00 has no UTC offset",
        ),
        ({"priority": -1}, "(key 'x'): priority: "),
        ({"job_class": "not a class"}, "(key 'x'): job_class: "),
        ({"queue": "bad queue!"}, "(key 'x'): queue: "),
        ({"args": {"a": 1}}, "(key 'x'): args: must be a list"),
    ],
)
def test_an_invalid_value_is_refused_naming_entry_and_field(
    tmp_path: Path, fields: dict[str, Any], message: str
) -> None:
    path = _write(tmp_path, _job("x", **fields))
    with pytest.raises(ScheduleFileError) as raised:
        load_schedule_file(path, env="production")
    assert f"defaults.jobs[0] {message}" in str(raised.value)


def test_an_interval_without_anchor_counts_from_midnight_1970_in_its_timezone(
    tmp_path: Path,
) -> None:
    path = _write(
        tmp_path,
        _job("prague", cron=None, interval=1, interval_unit="days", timezone="Europe/Prague"),
    )
    [spec] = load_schedule_file(path, env="production")
    after = datetime(2025, 7, 1, 12, tzinfo=UTC)
    assert spec.schedule.next_run_at(after) == datetime(2025, 7, 1, 22, tzinfo=UTC)


def test_the_example_file_is_valid_and_is_what_init_writes() -> None:
    example = REPO / "examples" / "schedules.yml"
    assert example.read_text(encoding="utf-8") == STARTER_SCHEDULES
    specs = {spec.name: spec.schedule for spec in load_schedule_file(example, env="production")}
    assert specs["examples:heartbeat"].interval == 5
    assert specs["examples:heartbeat"].interval_unit == "seconds"
    assert specs["examples:minute_report"].cron == "* * * * *"


# --- placeholders -----------------------------------------------------------------------------


def test_render_arguments_keeps_the_type_of_a_whole_placeholder_and_formats_embedded_ones() -> None:
    fire_time = datetime(2025, 1, 31, 10, 0, tzinfo=UTC)
    args = ["{{fire_time.unix}}", "run {{key}} at {{ fire_time.iso8601 }}", 7]
    kwargs = {"nested": {"k": ["{{idempotency_key}}"]}, "unix": "t={{fire_time.unix}}"}
    rendered_args, rendered_kwargs = render_arguments(
        args, kwargs, key="reports:daily", fire_time=fire_time, idempotency_key="abc123"
    )
    assert rendered_args == [1738317600, "run reports:daily at 2025-01-31T10:00:00+00:00", 7]
    assert rendered_kwargs == {"nested": {"k": ["abc123"]}, "unix": "t=1738317600"}
    assert args[0] == "{{fire_time.unix}}"  # the inputs are not modified
