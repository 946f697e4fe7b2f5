"""The README's main job: ``postburner dev`` on the embedded default, as a real process."""

from __future__ import annotations

import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.servers import free_port

REPO = Path(__file__).resolve().parent.parent


def _start_demo(workdir: Path, port: int) -> tuple[subprocess.Popen[str], queue.Queue[str]]:
    env = dict(os.environ)
    for name in list(env):
        if name.startswith("POSTBURNER_"):
            del env[name]
    env.update(POSTBURNER_BEANSTALKD_URL=f"beanstalk://127.0.0.1:{port}", PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "postburner_py", "dev", "--interval", "2"],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return process, lines


def _collect_until(lines: queue.Queue[str], needle: str, count: int, timeout: float) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while sum(needle in line for line in seen) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(
                f"saw {sum(needle in s for s in seen)} of {count} {needle!r}:\n{''.join(seen)}"
            )
        try:
            seen.append(lines.get(timeout=remaining))
        except queue.Empty:
            continue
    return seen


def _stop(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGINT)
    try:
        return process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()


def _answers(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
def test_the_demo_shows_heartbeats_and_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    process, lines = _start_demo(tmp_path, port)
    try:
        output = _collect_until(lines, "heartbeat #", 2, timeout=40)
    finally:
        code = _stop(process)
    assert code == 0, "".join(output)
    assert "started a local beanstalkd" in "".join(output)
    assert not _answers(port), "the demo's beanstalkd outlived it"
    assert (tmp_path / "postburner.sqlite3").exists()

    process, lines = _start_demo(tmp_path, port)
    try:
        _collect_until(lines, "heartbeat #", 1, timeout=40)
    finally:
        assert _stop(process) == 0
    with sqlite3.connect(tmp_path / "postburner.sqlite3") as database:
        names = [row[0] for row in database.execute("SELECT name FROM postburner_schedules")]
    assert sorted(names) == ["examples:heartbeat", "examples:minute_report"]
