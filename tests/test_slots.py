"""Run slots: at most ``concurrency`` at once, and bookkeeping waits for due starts."""

from __future__ import annotations

import threading
import time

import pytest

from postburner_py.worker.slots import RunSlots


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_no_more_than_concurrency_slots_are_taken() -> None:
    slots = RunSlots(2)
    assert slots.acquire(0) and slots.acquire(0)
    assert not slots.acquire(0.01)
    slots.release()
    assert slots.acquire(0)


def test_a_released_slot_wakes_a_waiting_job() -> None:
    slots = RunSlots(1)
    assert slots.acquire(0)
    got: list[bool] = []
    waiter = threading.Thread(target=lambda: got.append(slots.acquire(5)))
    waiter.start()
    time.sleep(0.05)
    slots.release()
    waiter.join(5)
    assert got == [True]


def test_bookkeeping_waits_for_a_due_job_to_begin() -> None:
    slots = RunSlots(4)
    announced = slots.starting(0.0)
    threading.Timer(0.05, slots.started, [announced]).start()
    began = time.monotonic()
    slots.yield_to_starts(5)
    waited = time.monotonic() - began
    assert 0.04 <= waited < 1


def test_bookkeeping_does_not_wait_for_a_job_due_later() -> None:
    clock = FakeMonotonic()
    slots = RunSlots(4, monotonic=clock)
    slots.starting(0.5)
    began = time.monotonic()
    slots.yield_to_starts(5)
    assert time.monotonic() - began < 0.5


def test_bookkeeping_waits_at_most_its_timeout() -> None:
    slots = RunSlots(4)
    slots.starting(0.0)  # never begins
    began = time.monotonic()
    slots.yield_to_starts(0.05)
    assert 0.04 <= time.monotonic() - began < 1


def test_concurrency_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        RunSlots(0)
