"""What users store is checked before anything is written, the same on PostgreSQL and SQLite.

Every value either side of a limit: text the column cannot hold (NUL, lone surrogates, too
long), integers beyond the column or Beanstalkd, bools and floats where ints are meant,
arguments that are not JSON or too big, instants Beanstalkd cannot delay to. Each is refused
with a typed error naming the field, and the rows are counted afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select

from postburner_py import Postburner, Schedule, ScheduleExecution
from postburner_py.errors import ScheduleFileError, ScheduleValidationError
from postburner_py.schedules.one_off import DelayedJob
from postburner_py.schedules.placeholders import render_arguments
from postburner_py.schedules.schedule_file import sync
from postburner_py.validation import MAX_ARGUMENT_BYTES, MAX_ARGUMENT_DEPTH, MAX_DELAY_SECONDS
from tests.factories import ManualClock, schedule_attributes

MakePostburner = Callable[..., Postburner]
pytestmark = pytest.mark.usefixtures("database_url")

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def _counts(pb: Postburner) -> tuple[int, int, int]:
    with pb.session() as session:
        return (
            session.scalar(select(func.count()).select_from(Schedule)) or 0,
            session.scalar(select(func.count()).select_from(ScheduleExecution)) or 0,
            session.scalar(select(func.count()).select_from(DelayedJob)) or 0,
        )


BAD_SCHEDULE_FIELDS = [
    pytest.param("name", "nul\x00byte", id="name-nul"),
    pytest.param("name", "lone\ud800surrogate", id="name-surrogate"),
    pytest.param("job_class", "tests." + "j" * 300 + ":record_run", id="job_class-too-long"),
    pytest.param("queue", "q" * 150, id="queue-longer-than-its-column"),
    pytest.param("ttr", 2**32, id="ttr-beyond-uint32"),
    pytest.param("ttr", 2**31, id="ttr-beyond-its-column"),
    pytest.param("ttr", True, id="ttr-bool"),
    pytest.param("ttr", 30.0, id="ttr-float"),
    pytest.param("ttr", -5, id="ttr-negative"),
    pytest.param("max_attempts", 2**31, id="max_attempts-beyond-its-column"),
    pytest.param("max_attempts", 2.5, id="max_attempts-float"),
    pytest.param("priority", 2**32, id="priority-beyond-uint32"),
    pytest.param("priority", 1.0, id="priority-float"),
    pytest.param("args", "abc", id="args-a-string"),
    pytest.param("args", ["nul\x00"], id="args-nul"),
    pytest.param("args", [{"k": "\udfff"}], id="args-surrogate"),
    pytest.param("args", [float("nan")], id="args-nan"),
    pytest.param("args", [float("inf")], id="args-inf"),
    pytest.param("args", [{1: "x"}], id="args-non-text-key"),
    pytest.param("args", [{1, 2}], id="args-a-set"),
    pytest.param("args", [_nested(MAX_ARGUMENT_DEPTH + 1)], id="args-too-deep"),
    pytest.param("args", ["x" * MAX_ARGUMENT_BYTES], id="args-too-big"),
    pytest.param("kwargs", {"day\x00": 1}, id="kwargs-nul-key"),
    pytest.param("kwargs", ["a"], id="kwargs-a-list"),
    pytest.param("catch_up", "", id="catch_up-empty"),
    pytest.param("catch_up", None, id="catch_up-none"),
    pytest.param("catch_up", "yes", id="catch_up-yes"),
    pytest.param("catch_up", 1, id="catch_up-one"),
    pytest.param("enabled", "false", id="enabled-text"),
    pytest.param("description", 5, id="description-a-number"),
    pytest.param("description", "nul\x00", id="description-nul"),
    pytest.param("timezone", "UTC\x00", id="timezone-nul"),
    pytest.param("no_such_field", 1, id="unknown-field"),
]


@pytest.mark.parametrize(("field", "value"), BAD_SCHEDULE_FIELDS)
def test_a_schedule_value_the_database_cannot_store_is_refused_naming_the_field(
    make_postburner: MakePostburner, field: str, value: Any
) -> None:
    pb = make_postburner()
    with pb.session() as session, pytest.raises(ScheduleValidationError) as raised:
        session.add(Schedule(**schedule_attributes(**{field: value})))
        session.commit()
    assert raised.value.field == field
    assert _counts(pb) == (0, 0, 0)


BAD_INTERVALS = [
    pytest.param({"interval": 10**6, "interval_unit": "years"}, "interval", id="million-years"),
    pytest.param({"interval": 2**63, "interval_unit": "seconds"}, "interval", id="beyond-bigint"),
    pytest.param({"interval": 137, "interval_unit": "years"}, "interval", id="past-max-delay"),
    pytest.param({"interval": 1.5, "interval_unit": "hours"}, "interval", id="float"),
    pytest.param({"interval": True, "interval_unit": "hours"}, "interval", id="bool"),
    pytest.param({"interval": 1, "interval_unit": 7}, "interval_unit", id="unit-a-number"),
    pytest.param(
        {
            "interval": 1,
            "interval_unit": "hours",
            "anchor": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))),
        },
        "anchor",
        id="anchor-before-year-1-in-utc",
    ),
]


@pytest.mark.parametrize(("fields", "field"), BAD_INTERVALS)
def test_an_interval_beanstalkd_could_never_delay_to_is_refused_before_the_commit(
    make_postburner: MakePostburner, fields: dict[str, Any], field: str
) -> None:
    pb = make_postburner(clock=ManualClock(NOW))
    attributes = schedule_attributes(cron=None, anchor=datetime(2020, 1, 1, tzinfo=UTC))
    attributes.update(fields)
    with pb.session() as session, pytest.raises(ScheduleValidationError) as raised:
        session.add(Schedule(**attributes))
        session.commit()
    assert raised.value.field == field
    assert _counts(pb) == (0, 0, 0)


def test_a_far_interval_beanstalkd_can_delay_to_is_stored_and_queued(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner(clock=ManualClock(NOW))
    with pb.session() as session:
        session.add(
            Schedule(
                **schedule_attributes(
                    cron=None, anchor=NOW, interval=100, interval_unit="years", name="century"
                )
            )
        )
        session.commit()
        live = session.scalars(select(ScheduleExecution)).one()
    assert live.run_at == datetime(2126, 1, 5, 12, 0, tzinfo=UTC)
    assert live.beanstalk_job_id is not None


BAD_ENQUEUE = [
    pytest.param({"at": datetime(9999, 12, 31, tzinfo=UTC)}, "at", id="year-9999"),
    pytest.param({"at": NOW + timedelta(seconds=MAX_DELAY_SECONDS + 1)}, "at", id="past-max-delay"),
    pytest.param(
        {"at": datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5)))},
        "at",
        id="past-year-9999-in-utc",
    ),
    pytest.param({"args": "abc"}, "args", id="args-a-string"),
    pytest.param({"args": ["\x00"]}, "args", id="args-nul"),
    pytest.param({"kwargs": {"x": float("nan")}}, "kwargs", id="kwargs-nan"),
    pytest.param({"kwargs": "x=1"}, "kwargs", id="kwargs-text"),
    pytest.param({"ttr": 2**32}, "ttr", id="ttr-beyond-uint32"),
    pytest.param({"ttr": 2**31}, "ttr", id="ttr-beyond-its-column"),
    pytest.param({"ttr": 1.5}, "ttr", id="ttr-float"),
    pytest.param({"max_attempts": True}, "max_attempts", id="max_attempts-bool"),
    pytest.param({"max_attempts": 2**40}, "max_attempts", id="max_attempts-beyond-its-column"),
    pytest.param({"priority": -1}, "priority", id="priority-negative"),
    pytest.param({"job_id": "r\x00"}, "job_id", id="job_id-nul"),
    pytest.param({"job_id": "r\ud800"}, "job_id", id="job_id-surrogate"),
    pytest.param({"queue": "q" * 150}, "queue", id="queue-longer-than-its-column"),
    pytest.param({"job_class": "tests." + "j" * 300 + ":record_run"}, "job_class", id="long-class"),
]


@pytest.mark.parametrize(("overrides", "field"), BAD_ENQUEUE)
def test_enqueue_at_refuses_what_cannot_be_stored_or_put_and_writes_nothing(
    make_postburner: MakePostburner, overrides: dict[str, Any], field: str
) -> None:
    pb = make_postburner(clock=ManualClock(NOW))
    call: dict[str, Any] = {"at": NOW + timedelta(hours=1), "job_class": "tests.jobs:record_run"}
    call.update(overrides)
    with pytest.raises(ScheduleValidationError) as raised:
        pb.enqueue_at(call.pop("at"), call.pop("job_class"), **call)
    assert raised.value.field == field
    assert _counts(pb) == (0, 0, 0)


def test_enqueue_at_a_century_away_is_stored_and_put(make_postburner: MakePostburner) -> None:
    pb = make_postburner(clock=ManualClock(NOW))
    row = pb.enqueue_at(NOW + timedelta(days=36500), "tests.jobs:record_run", ("a", "b"))
    assert row.beanstalk_job_id is not None
    assert row.args == ["a", "b"]


def test_an_argument_bomb_of_shared_references_is_refused_at_once(
    make_postburner: MakePostburner,
) -> None:
    pb = make_postburner()
    bomb: list[Any] = ["lol"]
    for _ in range(9):
        bomb = [bomb] * 10  # a billion leaves, a few hundred objects
    loop: list[Any] = []
    loop.append(loop)
    for args in (bomb, loop):
        started = time.perf_counter()
        with pytest.raises(ScheduleValidationError) as raised:
            Schedule(**schedule_attributes(args=args))
        assert raised.value.field == "args"
        assert time.perf_counter() - started < 0.5
    assert _counts(pb) == (0, 0, 0)


def test_arguments_at_the_limits_are_stored_as_given(make_postburner: MakePostburner) -> None:
    pb = make_postburner()
    deepest = _nested(MAX_ARGUMENT_DEPTH)
    biggest = "x" * (MAX_ARGUMENT_BYTES - len('[""]'))
    with pb.session() as session:
        session.add(Schedule(**schedule_attributes(name="deep", args=[deepest])))
        session.add(Schedule(**schedule_attributes(name="big", args=(biggest,))))
        session.commit()
    with pb.session() as session:
        stored = {s.name: s.args for s in session.scalars(select(Schedule))}
    assert stored == {"deep": [deepest], "big": [biggest]}


# --- sync: a dry run and the real run agree -----------------------------------------------


def _file(tmp_path: Path, *jobs: dict[str, Any]) -> Path:
    path = tmp_path / "schedules.yml"
    path.write_text(yaml.safe_dump({"defaults": {"jobs": list(jobs)}}), encoding="utf-8")
    return path


def _entry(key: str, **fields: Any) -> dict[str, Any]:
    return {"key": key, "job_class": "tests.jobs:record_run", "cron": "0 * * * *", **fields}


UNSTORABLE_ENTRIES = [
    pytest.param({"args": ["nul\x00"]}, id="nul-in-args"),
    pytest.param({"description": "x\x00"}, id="nul-in-description"),
    pytest.param({"ttr": 2**32}, id="ttr-beyond-uint32"),
    pytest.param({"max_attempts": 2**31}, id="max_attempts-beyond-its-column"),
    pytest.param({"priority": 2**40}, id="priority-beyond-uint32"),
    pytest.param({"queue": "q" * 150}, id="queue-longer-than-its-column"),
    pytest.param({"key": "k" * 300}, id="key-longer-than-its-column"),
    pytest.param({"cron": None, "interval": 10**6, "interval_unit": "years"}, id="a-million-years"),
]


@pytest.mark.parametrize("bad", UNSTORABLE_ENTRIES)
def test_sync_dry_run_refuses_what_the_real_sync_would_refuse_and_neither_writes(
    make_postburner: MakePostburner, tmp_path: Path, bad: dict[str, Any]
) -> None:
    pb = make_postburner(clock=ManualClock(NOW))
    bad_entry = {k: v for k, v in {**_entry("bad"), **bad}.items() if v is not None}
    path = _file(tmp_path, _entry("good-1"), bad_entry, _entry("good-2"))
    with pytest.raises(ScheduleFileError) as dry:
        sync(pb, path, env="production", dry_run=True)
    with pytest.raises(ScheduleFileError) as real:
        sync(pb, path, env="production")
    assert str(dry.value) == str(real.value)
    assert "defaults.jobs[1]" in str(real.value)
    assert _counts(pb) == (0, 0, 0)


# --- placeholders: an escape for the literal text --------------------------------------------


FIRE = datetime(2025, 1, 31, 9, tzinfo=UTC)


def _render(*args: Any, **kwargs: Any) -> tuple[list[Any], dict[str, Any]]:
    return render_arguments(list(args), kwargs, key="k", fire_time=FIRE, idempotency_key="ik")


def test_a_backslash_before_the_braces_keeps_a_placeholder_as_literal_text() -> None:
    args, kwargs = _render("\\{{key}}", "at \\{{fire_time.unix}} and {{key}}", t="\\{{ key }}")
    assert args == ["{{key}}", "at {{fire_time.unix}} and k"]
    assert kwargs == {"t": "{{ key }}"}


def test_two_backslashes_before_the_braces_are_one_backslash_and_the_value() -> None:
    args, _ = _render("\\\\{{key}}", "\\\\\\{{key}}", "C:\\dir {{key}}", "\\{{ not one")
    assert args == ["\\k", "\\{{key}}", "C:\\dir k", "{{ not one"]
    assert _render("{{fire_time.unix}}")[0] == [int(FIRE.timestamp())]


def test_an_escaped_placeholder_is_text_to_the_checks_of_the_api_and_the_file(
    make_postburner: MakePostburner, tmp_path: Path
) -> None:
    pb = make_postburner(clock=ManualClock(NOW))
    path = _file(tmp_path, _entry("literal", args=["\\{{template_var}}"]))
    plan = sync(pb, path, env="production")
    assert [change.name for change in plan.of("create")] == ["literal"]
    with pb.session() as session:
        stored = session.scalars(select(Schedule)).one()
    assert _render(*stored.args)[0] == ["{{template_var}}"]
