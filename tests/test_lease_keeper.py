"""The lease keeper renews running jobs on its own thread, and never after they returned."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from postburner_py.worker.lease_keeper import LeaseKeeper


def test_a_kept_job_is_renewed_every_interval_until_it_returns() -> None:
    keeper = LeaseKeeper(poll=0.01)
    calls: list[float] = []
    try:
        with keeper.keeping(lambda: calls.append(time.monotonic()), 0.05):
            deadline = time.monotonic() + 5
            while len(calls) < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
        after = len(calls)
        time.sleep(0.15)
    finally:
        keeper.close()
    assert after >= 3
    assert len(calls) == after, "renewed after the block ended"
    assert all(b - a >= 0.045 for a, b in itertools.pairwise(calls))


def test_a_job_that_returns_within_its_interval_is_never_renewed() -> None:
    keeper = LeaseKeeper(poll=0.01)
    calls: list[float] = []
    try:
        for _ in range(100):
            with keeper.keeping(lambda: calls.append(0.0), 10.0):
                pass
        time.sleep(0.05)
    finally:
        keeper.close()
    assert calls == []
    assert keeper.renewals == 0


def test_leaving_the_block_waits_for_a_renewal_in_progress() -> None:
    keeper = LeaseKeeper(poll=0.01)
    renewing, release = threading.Event(), threading.Event()
    finished: list[str] = []

    def slow_renewal() -> None:
        renewing.set()
        release.wait(5)
        finished.append("renewal")

    try:
        with keeper.keeping(slow_renewal, 0.01):
            assert renewing.wait(5)
            threading.Timer(0.1, release.set).start()
        finished.append("block")
    finally:
        keeper.close()
    assert finished == ["renewal", "block"]


def test_a_failing_renewal_is_logged_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    keeper = LeaseKeeper(poll=0.01)
    failures: list[int] = []

    def failing() -> None:
        failures.append(1)
        raise ConnectionError("Beanstalkd went away")

    try:
        with keeper.keeping(failing, 0.02):
            deadline = time.monotonic() + 5
            while len(failures) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
    finally:
        keeper.close()
    assert len(failures) >= 2
    assert "could not keep a running job alive" in caplog.text


def test_poll_must_be_positive() -> None:
    with pytest.raises(ValueError, match="poll"):
        LeaseKeeper(poll=0)
