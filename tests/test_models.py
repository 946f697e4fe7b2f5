"""Schedule validation, snapshots and the Postburner object's configuration."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from postburner_py import Postburner, Schedule
from postburner_py.config import resolve_settings
from postburner_py.errors import ConfigurationError, PostburnerError, ScheduleValidationError
from tests.factories import make_schedule, schedule_attributes

MakePostburner = Callable[..., Postburner]

BAD_FIELDS = [
    ({"cron": "61 * * * *"}, "cron"),
    ({"cron": "not a cron"}, "cron"),
    ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
    (
        {"cron": None, "anchor": datetime(2025, 1, 1), "interval": 1, "interval_unit": "days"},
        "anchor",
    ),
    (
        {
            "cron": None,
            "anchor": datetime(2025, 1, 1, tzinfo=UTC),
            "interval": 0,
            "interval_unit": "days",
        },
        "interval",
    ),
    (
        {
            "cron": None,
            "anchor": datetime(2025, 1, 1, tzinfo=UTC),
            "interval": 1,
            "interval_unit": "fortnights",
        },
        "interval_unit",
    ),
    ({"priority": 2**32}, "priority"),
    ({"priority": -1}, "priority"),
    ({"queue": "has space"}, "queue"),
    ({"args": [object()]}, "args"),
    ({"args": "not a list"}, "args"),
    ({"kwargs": {1: "non-string key"}}, "kwargs"),
    ({"name": ""}, "name"),
    ({"job_class": "no module path"}, "job_class"),
    ({"ttr": 0}, "ttr"),
]


@pytest.mark.parametrize(("overrides", "field"), BAD_FIELDS)
def test_bad_input_names_the_field_and_writes_nothing(
    make_postburner: MakePostburner, database_url: str, overrides: dict[str, Any], field: str
) -> None:
    pb = make_postburner()
    with pb.session() as session, pytest.raises(ScheduleValidationError) as raised:
        session.add(Schedule(**schedule_attributes(**overrides)))
        session.commit()
    assert raised.value.field == field
    assert isinstance(raised.value, ValueError) and isinstance(raised.value, PostburnerError)
    with pb.session() as session:
        assert session.scalar(select(func.count()).select_from(Schedule)) == 0
    assert (pb.queue.stats_tube("default") or {}).get("total-jobs", 0) == 0


@pytest.mark.parametrize(
    "spec",
    [
        {"cron": "0 * * * *", "anchor": datetime(2025, 1, 1, tzinfo=UTC), "interval": 1},
        {"cron": None},
    ],
    ids=["both", "neither"],
)
def test_cron_and_interval_are_exclusive_and_one_is_required(spec: dict[str, Any]) -> None:
    schedule = make_schedule(**spec)
    with pytest.raises(ScheduleValidationError, match="cron"):
        schedule.validate()


def test_a_duplicate_name_is_refused_by_the_database(
    make_postburner: MakePostburner, database_url: str
) -> None:
    from sqlalchemy.exc import IntegrityError

    pb = make_postburner()
    with pb.session() as session:
        session.add(make_schedule(name="reports:daily"))
        session.commit()
    with pb.session() as session:
        session.add(make_schedule(name="reports:daily"))
        with pytest.raises(IntegrityError):
            session.commit()


def test_upcoming_returns_aware_utc_instants_in_the_schedules_timezone() -> None:
    schedule = make_schedule(cron="0 9 * * *", timezone="Europe/Prague")
    after = datetime(2025, 7, 1, tzinfo=UTC)
    assert schedule.upcoming(2, after) == [
        datetime(2025, 7, 1, 7, tzinfo=UTC),
        datetime(2025, 7, 2, 7, tzinfo=UTC),
    ]


def test_cacheable_attributes_are_exactly_those_that_change_what_runs() -> None:
    assert set(make_schedule().cacheable_attributes()) == {
        "job_class",
        "args",
        "kwargs",
        "queue",
        "priority",
        "ttr",
        "timezone",
        "anchor",
        "interval",
        "interval_unit",
        "cron",
        "catch_up",
        "name",
        "catch_up_window",
        "starts_at",
        "ends_at",
        "dst_gap",
        "dst_fold",
        "jitter",
    }


def test_settings_come_from_arguments_then_environment_then_defaults() -> None:
    environ = {
        "POSTBURNER_DATABASE_URL": "postgresql://db/app",
        "POSTBURNER_NAMESPACE": "from-env",
        "POSTBURNER_ALLOWED_JOB_PREFIXES": "myapp.jobs., other.",
        "POSTBURNER_CATCH_UP_WINDOW": "120",
    }
    settings = resolve_settings(namespace="from-arg", environ=environ)
    assert settings.database_url == "postgresql://db/app"
    assert settings.namespace == "from-arg"
    assert settings.allowed_job_prefixes == ("myapp.jobs.", "other.")
    assert settings.catch_up_window.total_seconds() == 120
    assert resolve_settings(environ={}).database_url == "sqlite:///postburner.sqlite3"
    assert resolve_settings(environ={}).beanstalkd_url == "beanstalk://127.0.0.1:11300"


@pytest.mark.parametrize(
    ("arguments", "field"),
    [({"namespace": "bad space"}, "namespace"), ({"catch_up_window": "soon"}, "catch_up_window")],
)
def test_bad_settings_are_refused_naming_the_option(arguments: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError, match=field):
        resolve_settings(environ={}, **arguments)


def test_every_process_on_one_database_shares_the_generated_secret(
    make_postburner: MakePostburner, database_url: str
) -> None:
    first = make_postburner(secret=None)
    second = make_postburner(secret=None)
    assert first.secret() == second.secret()
    assert len(first.secret()) >= 32


def test_a_model_method_outside_a_postburner_session_says_how_to_fix_it() -> None:
    from postburner_py import ScheduleExecution

    execution = ScheduleExecution(id=1, run_at=datetime(2025, 1, 1, tzinfo=UTC))
    with pytest.raises(PostburnerError, match="session"):
        execution.skip()
