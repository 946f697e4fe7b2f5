"""Health probes: ``/readyz`` answers 200 while the database and Beanstalkd answer and 503
naming the one that does not, as real servers come and go; ``/livez`` answers 503 once the
process loop stopped ticking or a serving thread died. Worker and watchdog, in-process and
from the command line."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from postburner_py import Postburner
from postburner_py.health import HealthOptions, HealthServer, Pulse, Verdict, servers_ready
from postburner_py.watchdog.process import Watchdog
from postburner_py.worker import Worker
from tests.test_cli import Cli, cli, pb

MakePostburner = Callable[..., Postburner]
__all__ = ["cli", "pb"]  # fixtures shared with tests/test_cli.py


def _get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _eventually(port: int, path: str, code: int, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        got, body = _get(port, path)
        if got == code or time.monotonic() > deadline:
            assert got == code, body
            return body
        time.sleep(0.1)


@contextmanager
def _worker_with_probes(worker: Worker, pb: Postburner) -> Iterator[int]:
    probes = HealthOptions(port=0).serve(worker.liveness, lambda: servers_ready(pb))
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        yield probes.port
    finally:
        worker.stop()
        thread.join(timeout=30)
        probes.close()


def test_readiness_follows_beanstalkd_and_the_database_as_they_come_and_go(
    make_postburner: MakePostburner,
    postgres_url: str,
    beanstalkd_factory: Callable[..., Any],
    pg_server: Any,
) -> None:
    beanstalkd = beanstalkd_factory()
    pb = make_postburner(database_url=postgres_url, beanstalkd_url=beanstalkd.url)
    worker = Worker(pb, reserve_timeout=0.2, heartbeat_interval=0.2)
    with _worker_with_probes(worker, pb) as port:
        assert _eventually(port, "/readyz", 200)["checks"] == {"database": "ok", "beanstalkd": "ok"}
        beanstalkd.stop()
        assert _eventually(port, "/readyz", 503)["checks"]["beanstalkd"] == "unreachable"
        assert _get(port, "/livez")[0] == 200  # riding out an outage is being alive
        beanstalkd.start()
        _eventually(port, "/readyz", 200)
        pg_server.stop()
        try:
            checks = _eventually(port, "/readyz", 503)["checks"]
            assert checks["database"].startswith("unreachable") and checks["beanstalkd"] == "ok"
            assert _get(port, "/livez")[0] == 200
        finally:
            pg_server.start()
        _eventually(port, "/readyz", 200)


def test_liveness_fails_when_a_serving_thread_dies(
    make_postburner: MakePostburner, postgres_url: str
) -> None:
    pb = make_postburner(database_url=postgres_url)
    worker = Worker(pb, reserve_timeout=0.2, heartbeat_interval=0.2)
    with _worker_with_probes(worker, pb) as port:
        assert _eventually(port, "/livez", 200)["checks"]["threads"] == "ok"

        def broken(*_args: Any, **_kwargs: Any) -> None:
            raise RuntimeError("a bug in the reserving loop")

        pb.queue.reserve = broken  # type: ignore[method-assign]
        body = _eventually(port, "/livez", 503)
        assert "ended unexpectedly" in body["checks"]["threads"]


def test_a_pulse_that_stops_ticking_is_not_alive_but_a_long_unit_of_work_is() -> None:
    now = [0.0]
    pulse = Pulse(30.0, busy_within=900.0, monotonic=lambda: now[0])
    assert pulse.check() == "ok"
    now[0] = 31.0
    assert "last ticked 31 s ago" in pulse.check()
    with pulse.busy():
        now[0] = 500.0
        assert pulse.check() == "ok"
        now[0] = 932.0
        assert "busy in one unit of work for 901 s" in pulse.check()
    assert pulse.check() == "ok"


def test_the_watchdogs_liveness_is_its_scheduler_running_jobs(
    make_postburner: MakePostburner, postgres_url: str
) -> None:
    now = [0.0]
    pb = make_postburner(database_url=postgres_url)
    watchdog = Watchdog(pb, interval=10, monotonic=lambda: now[0])
    assert watchdog.liveness().ok
    now[0] = 61.0  # three intervals, at least a minute, without a job
    assert not watchdog.liveness().ok
    watchdog.reconcile()
    assert watchdog.liveness().ok


def test_an_unknown_path_is_404_and_a_probe_that_raises_is_503() -> None:
    def raising() -> Verdict:
        raise RuntimeError("boom")

    server = HealthServer(lambda: Verdict(True), raising, host="127.0.0.1", port=0).start()
    try:
        assert _get(server.port, "/readyz") == (
            503,
            {"status": "failing", "checks": {"probe": "error: boom"}},
        )
        assert _get(server.port, "/livez") == (200, {"status": "ok", "checks": {}})
        assert _get(server.port, "/metrics")[0] == 404
    finally:
        server.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("command", [["worker"], ["watchdog", "--interval", "1"]], ids=str)
def test_the_command_line_serves_the_probes_on_health_port(
    cli: Cli, pb: Postburner, tmp_path: Path, command: list[str]
) -> None:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "postburner_py", *command, "--health-port", str(port)],
        env=cli.env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                assert _get(port, "/livez")[0] == 200
                break
            except urllib.error.URLError:
                time.sleep(0.1)
        assert _eventually(port, "/livez", 200)["status"] == "ok"
        assert _eventually(port, "/readyz", 200)["checks"] == {"database": "ok", "beanstalkd": "ok"}
        _wait_for_a_heartbeat(pb)  # its signal handlers are in place once it beats
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
        process.wait(timeout=10)


def _wait_for_a_heartbeat(pb: Postburner) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with pb.session() as session:
            if pb.store.worker_heartbeats(session) or pb.store.heartbeats(session):
                return
        time.sleep(0.1)
    pytest.fail("no heartbeat in 30 s")
