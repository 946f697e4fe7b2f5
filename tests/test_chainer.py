"""The chainer: next executions created off the start path, in batches, on both databases."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from postburner_py import Postburner, Schedule, ScheduleExecution
from postburner_py.worker.chainer import Chainer
from tests.factories import ManualClock, create_schedule

MakePostburner = Callable[..., Postburner]
WAIT = 5.0
pytestmark = pytest.mark.usefixtures("database_url")


class HeldClock(ManualClock):
    """A manual clock whose first reading blocks until :attr:`released` is set: the chainer
    reads it at the start of each pass, so it stays in its first pass until then."""

    def __init__(self, start: datetime) -> None:
        super().__init__(start)
        self.reading = threading.Event()
        self.released = threading.Event()

    def __call__(self) -> datetime:
        if not self.released.is_set():
            self.reading.set()
            self.released.wait(WAIT)
        return self.now


@pytest.fixture
def make_chainer(make_postburner: MakePostburner) -> Iterator[Callable[..., Chainer]]:
    """``make_chainer(pb, clock)``; every chainer is closed at teardown, before the
    Postburners (and their databases) go."""
    chainers: list[Chainer] = []

    def make(pb: Postburner, clock: Callable[[], datetime]) -> Chainer:
        chainer = Chainer(pb, clock=clock)
        chainers.append(chainer)
        return chainer

    yield make
    for chainer in chainers:
        if isinstance(chainer.clock, HeldClock):
            chainer.clock.released.set()
        chainer.close()


def _first_execution(pb: Postburner, schedule_id: int) -> ScheduleExecution:
    with pb.session() as session:
        schedule = session.get_one(Schedule, schedule_id)
        [execution] = schedule.future_live(datetime.now(UTC))
        return execution


def _live_after(pb: Postburner, schedule_id: int, instant: datetime) -> list[ScheduleExecution]:
    with pb.session() as session:
        return session.get_one(Schedule, schedule_id).future_live(instant)


def _executions(pb: Postburner, schedule_id: int) -> int:
    with pb.session() as session:
        statement = select(func.count()).where(ScheduleExecution.schedule_id == schedule_id)
        return int(session.scalar(statement) or 0)


def _schedules(pb: Postburner, count: int) -> list[tuple[int, ScheduleExecution]]:
    """Hourly schedules, each with its first execution (all due at the same instant)."""
    ids = [create_schedule(pb) for _ in range(count)]
    return [(schedule_id, _first_execution(pb, schedule_id)) for schedule_id in ids]


def _assert_one_queued_next(pb: Postburner, schedule_id: int, first: ScheduleExecution) -> None:
    [following] = _live_after(pb, schedule_id, first.run_at)
    assert following.run_at == first.next_run_at
    assert following.status == "scheduled"
    assert following.beanstalk_job_id is not None


def test_requests_waiting_together_are_chained_in_one_pass(
    make_postburner: MakePostburner, make_chainer: Callable[..., Chainer]
) -> None:
    pb = make_postburner()
    (held_id, held_first), *waiting = _schedules(pb, 4)
    clock = HeldClock(held_first.run_at)
    chainer = make_chainer(pb, clock)
    chainer.request(held_id, held_first.run_at)
    assert clock.reading.wait(WAIT), "the chainer never started its first pass"
    for schedule_id, first in waiting:
        chainer.request(schedule_id, first.run_at)
    clock.released.set()
    assert chainer.wait_idle(WAIT)
    assert chainer.passes == 2  # the held pass, then one for the three waiting behind it
    for schedule_id, first in [(held_id, held_first), *waiting]:
        _assert_one_queued_next(pb, schedule_id, first)


def test_the_same_occurrence_requested_twice_creates_one_next_execution(
    make_postburner: MakePostburner, make_chainer: Callable[..., Chainer]
) -> None:
    pb = make_postburner()
    [(schedule_id, first)] = _schedules(pb, 1)
    chainer = make_chainer(pb, ManualClock(first.run_at))
    chainer.request(schedule_id, first.run_at)
    chainer.request(schedule_id, first.run_at)
    assert chainer.wait_idle(WAIT)
    chainer.request(schedule_id, first.run_at)  # a redelivery, after the next one exists
    assert chainer.wait_idle(WAIT)
    _assert_one_queued_next(pb, schedule_id, first)
    assert _executions(pb, schedule_id) == 2


def test_close_chains_every_request_still_waiting(
    make_postburner: MakePostburner, make_chainer: Callable[..., Chainer]
) -> None:
    pb = make_postburner()
    schedules = _schedules(pb, 3)
    clock = HeldClock(schedules[0][1].run_at)
    chainer = make_chainer(pb, clock)
    for schedule_id, first in schedules:
        chainer.request(schedule_id, first.run_at)
    assert clock.reading.wait(WAIT)
    closer = threading.Thread(target=chainer.close)
    closer.start()
    clock.released.set()
    closer.join(WAIT)
    assert not closer.is_alive()
    for schedule_id, first in schedules:
        _assert_one_queued_next(pb, schedule_id, first)


def test_wait_idle_times_out_while_a_pass_is_running(
    make_postburner: MakePostburner, make_chainer: Callable[..., Chainer]
) -> None:
    pb = make_postburner()
    [(schedule_id, first)] = _schedules(pb, 1)
    clock = HeldClock(first.run_at)
    chainer = make_chainer(pb, clock)
    chainer.request(schedule_id, first.run_at)
    assert clock.reading.wait(WAIT)
    assert chainer.wait_idle(0.05) is False
    clock.released.set()
    assert chainer.wait_idle(WAIT) is True
    assert chainer.passes == 1
