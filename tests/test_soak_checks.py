"""The fault soak's verdict (``bench/soak_checks.py``) on hand-made records, and the soak
job that writes those records."""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bench.soak import read_events
from bench.soak_checks import (
    EndState,
    Facts,
    FaultWindow,
    JobEvent,
    Kill,
    Segment,
    Waiting,
    end_state_problems,
    find_repeats,
    judge,
    lateness,
)
from bench.soak_faults import FAULT_KINDS, fault_plan
from postburner_py import bench_jobs
from postburner_py.context import ExecutionContext, running
from postburner_py.timegrid.grid import make_grid

T0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)
KEY = "soak-0001"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def event(kind: str, mono: float, *, pid: int = 100, attempt: int = 1, due: float = 1) -> JobEvent:
    """A record of occurrence (KEY, at(due)); ``mono`` seconds after T0 on both clocks."""
    return JobEvent(kind, KEY, at(due), attempt, pid, mono, T0.timestamp() + mono)


def every_second(
    start: float = 0, end: float | None = None, edge: float | None = None, closed_by: str = ""
) -> Segment:
    """KEY firing every whole second, enabled from ``start`` (until ``end``)."""
    grid = make_grid(cron=None, anchor=T0, interval=1, interval_unit="seconds")
    return Segment(
        KEY,
        grid,
        at(start),
        None if end is None else at(end),
        None if edge is None else at(edge),
        closed_by,
    )


def kinds(
    events: list[JobEvent],
    kills: list[Kill],
    committed: set[tuple[str, datetime, int]] | None = None,
) -> list[str]:
    return [repeat.kind for repeat in find_repeats(events, kills, committed)]


# --- repeats -------------------------------------------------------------------------------


def test_a_take_over_after_the_first_attempts_process_was_killed_is_not_a_duplicate() -> None:
    events = [event("start", 1.0), event("start", 5.0, pid=200, attempt=2)]
    assert kinds(events, [Kill("worker", 100, 2.0)]) == ["takeover"]
    verdict = judge(Facts(events, [Kill("worker", 100, 2.0)], [], at(10)))
    assert verdict.duplicates == [] and verdict.violations == []


def test_a_start_after_a_finish_is_a_duplicate() -> None:
    events = [event("start", 1.0), event("finish", 1.2), event("start", 5.0, attempt=2)]
    assert kinds(events, []) == ["after_finish"]
    verdict = judge(Facts(events, [], [], at(10)))
    assert len(verdict.duplicates) == 1
    assert verdict.violations == ["1 duplicate start(s)"]


def test_a_start_overlapping_an_attempt_whose_process_was_alive_is_a_duplicate() -> None:
    events = [
        event("start", 1.0),
        event("start", 4.6, pid=200, attempt=2),
        event("finish", 8.0),  # attempt 1 ran on until after attempt 2 began
        event("finish", 12.0, pid=200, attempt=2),
    ]
    assert kinds(events, []) == ["overlap"]


def test_a_kill_before_the_attempt_started_does_not_excuse_a_second_start() -> None:
    events = [event("start", 1.0), event("start", 5.0, pid=200, attempt=2)]
    assert kinds(events, [Kill("worker", 100, 0.5)]) == ["overlap"]


def test_a_rerun_after_a_kill_between_finish_and_commit_is_counted_apart() -> None:
    events = [event("start", 1.0), event("finish", 1.2), event("start", 5.0, pid=200, attempt=2)]
    kills = [Kill("worker", 100, 1.25)]
    assert kinds(events, kills) == ["finish_window"]
    assert judge(Facts(events, kills, [], at(10))).duplicates == []
    assert len(judge(Facts(events, kills, [], at(10)), strict=True).duplicates) == 1


def test_a_start_after_a_killed_attempt_had_committed_its_outcome_is_a_duplicate() -> None:
    events = [event("start", 1.0), event("finish", 1.2), event("start", 5.0, pid=200, attempt=2)]
    committed = {(KEY, at(1), 1)}
    assert kinds(events, [Kill("worker", 100, 3.0)], committed) == ["after_commit"]


def test_a_third_start_is_judged_against_every_earlier_attempt() -> None:
    events = [
        event("start", 1.0),
        event("start", 5.0, pid=200, attempt=2),  # takes over from the killed pid 100
        event("start", 9.0, pid=300, attempt=3),  # while pid 200 runs attempt 2
    ]
    repeats = find_repeats(events, [Kill("worker", 100, 2.0)])
    assert [(r.kind, r.earlier.attempt, r.then.attempt) for r in repeats] == [
        ("takeover", 1, 2),
        ("overlap", 2, 3),
    ]


# --- lost ----------------------------------------------------------------------------------


def test_a_grid_point_nothing_accounts_for_is_lost() -> None:
    starts = [event("start", s, due=s) for s in (1, 2, 4)]
    verdict = judge(Facts(starts, [], [every_second()], at(4)))
    assert (verdict.expected, verdict.started) == (4, 3)
    assert verdict.lost == [(KEY, at(3))]
    assert verdict.violations == ["1 lost occurrence(s)"]


def test_a_missed_row_a_skip_or_a_disable_that_dropped_it_accounts_for_a_grid_point() -> None:
    facts = Facts(
        [event("start", 1, due=1)],
        [],
        [every_second()],
        at(4),
        missed={(KEY, at(2))},
        skipped={(KEY, at(3))},
        dropped={(KEY, at(4))},
    )
    verdict = judge(facts)
    assert verdict.lost == []
    assert (verdict.missed_recorded, verdict.skipped, verdict.dropped) == (1, 1, 1)


def test_points_after_the_fault_phase_are_not_counted() -> None:
    verdict = judge(Facts([event("start", 1, due=1)], [], [every_second()], at(1.5)))
    assert (verdict.expected, verdict.lost) == (1, [])


def test_an_edit_ends_the_old_grid_at_the_call_and_the_new_one_starts_after_resumed_at() -> None:
    old = every_second(0, end=3.0, edge=3.05, closed_by="edit")
    grid = make_grid(cron=None, anchor=T0, interval=2, interval_unit="seconds")
    new = Segment(KEY, grid, at(3.02))
    starts = [event("start", s, due=s) for s in (1, 2, 3, 4, 6)]
    verdict = judge(Facts(starts, [], [old, new], at(6)))
    assert verdict.lost == [] and verdict.expected == 5 and verdict.unexpected == []
    late_old_point = [*starts, event("start", 5, due=5)]
    assert judge(Facts(late_old_point, [], [old, new], at(6))).unexpected == [
        ("after_edit", (KEY, at(5)))
    ]


def test_a_start_of_a_skipped_occurrence_is_a_violation() -> None:
    facts = Facts(
        [event("start", 2, due=2)], [], [every_second(1.5)], at(2), skipped={(KEY, at(2))}
    )
    verdict = judge(facts)
    assert verdict.unexpected == [("skipped", (KEY, at(2)))]
    assert verdict.violations == ["1 start(s) of skipped occurrences"]


def test_a_start_after_its_schedule_was_disabled_is_reported_but_not_a_violation() -> None:
    segment = every_second(0, end=2.0, edge=2.1, closed_by="disable")
    verdict = judge(Facts([event("start", s, due=s) for s in (1, 2, 3)], [], [segment], at(5)))
    assert verdict.unexpected == [("after_disable", (KEY, at(3)))]
    assert verdict.violations == []


# --- end state ------------------------------------------------------------------------------


def test_the_end_state_wants_one_queued_execution_per_enabled_schedule_and_none_otherwise() -> None:
    good = EndState(
        enabled={"a": True, "b": False},
        waiting={"a": [Waiting(1, at(5), job_found=True)]},
        tube={"ready": 1, "delayed": 0, "reserved": 0, "buried": 0},
    )
    assert end_state_problems(good) == []
    bad = EndState(
        enabled={"a": True, "b": False, "c": True},
        waiting={"a": [Waiting(1, at(5), False)], "b": [Waiting(2, at(5), True)]},
        tube={"ready": 1, "delayed": 1, "reserved": 0, "buried": 1},
    )
    assert end_state_problems(bad) == [
        "a: execution 1 has no job",
        "b (disabled): 1 live execution(s), want 0",
        "c: 0 live execution(s) not started, want 1",
        "3 job(s) in the tube {'ready': 1, 'delayed': 1, 'reserved': 0, 'buried': 1}, want 2",
        "1 buried job(s) at the end",
    ]


# --- lateness, the fault plan, the records --------------------------------------------------


def test_lateness_counts_first_starts_by_the_fault_window_they_were_due_in() -> None:
    events = [
        event("start", 1.002, due=1),
        event("start", 50.5, due=50),
        event("start", 52.0, pid=200, attempt=2, due=50),  # a take-over: not a first start
        event("start", 90.004, due=90),
    ]
    figures = lateness(
        events,
        [FaultWindow("postgres_stop", at(40).timestamp(), at(50).timestamp())],
        phase_start=T0.timestamp(),
        phase_end=at(100).timestamp(),
    )
    assert figures["after_postgres_stop"] == {
        "n": 1,
        "p50_ms": 500.0,
        "p99_ms": 500.0,
        "max_ms": 500.0,
    }
    assert figures["calm"]["n"] == 2 and figures["calm"]["max_ms"] == pytest.approx(4.0, abs=0.1)


def test_the_fault_plan_brings_every_kind_once_before_any_twice_within_its_gaps() -> None:
    plan = list(fault_plan(random.Random(3), seconds=600, gap=(20, 40)))
    offsets = [offset for offset, _ in plan]
    assert all(20 <= b - a <= 40 for a, b in zip([0.0, *offsets], offsets, strict=False))
    first_round = [kind for _, kind in plan[: len(FAULT_KINDS)]]
    assert Counter(first_round) == Counter(FAULT_KINDS)


def test_the_soak_job_records_its_start_and_finish_and_the_reader_skips_a_cut_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(bench_jobs.SOAK_RECORDS_ENV, str(tmp_path))
    monkeypatch.setattr(bench_jobs, "_SOAK_FILES", {})
    context = ExecutionContext(7, None, KEY, at(1), 2, "idem")
    with running(context):
        bench_jobs.soak_job(seed=1, long_permille=0)
    [path] = tmp_path.glob("*.jsonl")
    with path.open("a") as records:
        records.write('{"e": "start", "key": "cut sho')
    events, unparsed = read_events(tmp_path)
    assert [(e.kind, e.key, e.run_at, e.attempt) for e in events] == [
        ("start", KEY, at(1), 2),
        ("finish", KEY, at(1), 2),
    ]
    assert events[0].mono <= events[1].mono and unparsed == 1
    assert json.loads(path.read_text().splitlines()[0])["execution_id"] == 7
