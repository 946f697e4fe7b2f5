"""A schedule file cannot exhaust memory: bounds are checked while it is parsed.

The CLI refuses each hostile file with one line and exit 2, fast, and writes nothing.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from postburner_py import Postburner, Schedule
from postburner_py.errors import ScheduleFileError
from postburner_py.schedules.schedule_file import (
    MAX_ALIASES,
    MAX_EXPANDED_NODES,
    MAX_FILE_BYTES,
    MAX_YAML_DEPTH,
    read_entries,
)

JOB = '    - key: k\n      job_class: "tests.jobs:record_run"\n      cron: "0 * * * *"\n'


def _laughs(levels: int) -> str:
    """Ten aliases per level: ``levels`` levels stand for 10**levels strings."""
    lines = ['  l0: &l0 ["lol"]']
    for level in range(1, levels + 1):
        lines.append(f"  l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * 10)}]")
    return "shared:\n" + "\n".join(lines) + f"\ndefaults:\n  jobs:\n{JOB}      args: [*l{levels}]\n"


def _deep(levels: int) -> str:
    return f"defaults:\n  jobs:\n{JOB}      args: {'[' * levels}1{']' * levels}\n"


HOSTILE = {
    "billion-laughs": _laughs(9),
    "six-levels-of-ten": _laughs(6),
    "deep-nesting": _deep(10_000),
    "just-past-the-depth": _deep(MAX_YAML_DEPTH),
    "self-referencing-alias": f"defaults:\n  jobs:\n{JOB}      args: &me [*me]\n",
    "unhashable-key": f"defaults:\n  jobs:\n{JOB}      kwargs: {{[a, b]: 1}}\n",
    "unhashable-merged-key": f"defaults:\n  jobs:\n{JOB}      kwargs: {{<<: {{[a]: 1}}}}\n",
    "impossible-date": f"defaults:\n  jobs:\n{JOB}      kwargs: {{day: 2025-13-45}}\n",
    "too-many-aliases": "shared: &s 1\n"
    + f"defaults:\n  jobs:\n{JOB}      args: [{', '.join(['*s'] * (MAX_ALIASES + 1))}]\n",
}


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_schedule_file_is_refused_while_it_is_parsed(text: str) -> None:
    # CPU time, not wall time: the bound is on the work a hostile file causes, which a loaded
    # machine stealing this process's core does not change.
    started = time.process_time()
    with pytest.raises(ScheduleFileError) as raised:
        read_entries(text, env="production")
    assert time.process_time() - started < 0.5
    assert "line " in str(raised.value) or "not a valid schedule file" in str(raised.value)


def test_files_at_the_bounds_are_read() -> None:
    within = MAX_EXPANDED_NODES // 1000
    assert read_entries(_laughs(2), env="production")
    assert read_entries(_deep(MAX_YAML_DEPTH - 8), env="production")
    assert within > 10
    shared = (
        "shared: &s 1\n" + f"defaults:\n  jobs:\n{JOB}      args: [{', '.join(['*s'] * 100)}]\n"
    )
    (entry,) = read_entries(shared, env="production")
    assert entry.fields["args"] == [1] * 100


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    from postburner_py.schedules.schedule_file import load_schedule_file

    path = tmp_path / "schedules.yml"
    path.write_text("# " + "x" * MAX_FILE_BYTES + "\n", encoding="utf-8")
    with pytest.raises(ScheduleFileError, match="at most"):
        load_schedule_file(path, env="production")


def _sync(tmp_path: Path, database_url: str, beanstalkd_url: str, text: str, namespace: str) -> Any:
    path = tmp_path / "schedules.yml"
    path.write_text(text, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTBURNER_")}
    env.update(
        POSTBURNER_DATABASE_URL=database_url,
        POSTBURNER_BEANSTALKD_URL=beanstalkd_url,
        POSTBURNER_NAMESPACE=namespace,
        POSTBURNER_SECRET="test-secret",
        POSTBURNER_ALLOWED_JOB_PREFIXES="tests.jobs",
    )
    started = _children_cpu_seconds()
    result = subprocess.run(
        [sys.executable, "-m", "postburner_py", "sync", str(path)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result, _children_cpu_seconds() - started


def _children_cpu_seconds() -> float:
    """CPU seconds used by this process's finished children (the bound is on work done)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@pytest.mark.parametrize(
    "name", ["billion-laughs", "deep-nesting", "unhashable-key", "impossible-date"]
)
def test_sync_of_a_hostile_file_exits_2_with_one_line_and_writes_nothing(
    tmp_path: Path,
    database_url: str,
    beanstalkd_server: Any,
    namespace: str,
    make_postburner: Any,
    name: str,
) -> None:
    result, seconds = _sync(tmp_path, database_url, beanstalkd_server.url, HOSTILE[name], namespace)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("postburner: error: ")
    assert seconds < 10  # CPU seconds, the interpreter's start included; parsing is sub-millisecond
    pb: Postburner = make_postburner()
    with pb.session() as session:
        assert session.scalar(select(func.count()).select_from(Schedule)) == 0
