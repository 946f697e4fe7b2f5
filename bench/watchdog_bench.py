"""Watchdog speed: the first pass over new schedules, and a steady pass over healthy ones.

    python bench/watchdog_bench.py [--first 10000] [--steady 100000] [--small]

Starts its own PostgreSQL and Beanstalkd (tests/servers.py), then measures:

- first pass: ``tick`` over N schedules inserted in bulk (no hook ran, nothing exists yet):
  executions created and queued per second, against the floor measured in the same run (the
  same execution rows inserted in batches of 2,000 with psycopg, plus the same puts with bare
  greenstalk on one connection, one round trip each);
- steady pass: ``tick`` over M healthy schedules, run in a fresh process: its duration, the
  Beanstalkd commands it sent (from the server's ``cmd-*`` counters) and the process's peak RSS.

Targets: first pass >= 5,000/s and >= half the floor; steady pass <= 1 s with a constant
number of Beanstalkd commands, RSS <= 200 MB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BATCH = 2000
SCHEDULE_CRONS = ("*/5 * * * *", "0 * * * *", "15 3 * * *", "0 9 * * 1-5")


def _imports() -> None:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def fresh_database(pg: Any, name: str) -> str:
    """Create an empty migrated database; returns its SQLAlchemy URL."""
    import psycopg

    from postburner_py import Postburner

    with psycopg.connect(pg.admin_url, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {name}")
        connection.execute(f"CREATE DATABASE {name}")
    url = str(pg.url_for(name))
    pb = Postburner(database_url=url, beanstalkd_url="beanstalk://127.0.0.1:1", secret="b")
    pb.migrate()
    pb.dispose()
    return url


def insert_schedules(pb: Any, count: int) -> None:
    """Bulk INSERT of ``count`` schedules (bypasses the session hooks, like an import would)."""
    from sqlalchemy import insert

    from postburner_py import Schedule

    rows = [
        {
            "name": f"bench-{index}",
            "job_class": "postburner_py.bench_jobs:noop",
            "args": [index],
            "kwargs": {"tenant": index % 97},
            "queue": f"q{index % 4}",
            "priority": 65536,
            "ttr": 60,
            "max_attempts": 3,
            "timezone": "UTC" if index % 3 else "Europe/Prague",
            "cron": SCHEDULE_CRONS[index % len(SCHEDULE_CRONS)],
            "catch_up": False,
            "enabled": True,
        }
        for index in range(count)
    ]
    with pb.session() as session:
        for start in range(0, count, 10_000):
            session.execute(insert(Schedule), rows[start : start + 10_000])
        session.commit()


def first_pass(pg: Any, beanstalkd: Any, count: int) -> dict[str, Any]:
    """Time ``tick`` over ``count`` new schedules; check every one is queued once."""
    from postburner_py import Postburner
    from postburner_py.watchdog.process import tick

    url = fresh_database(pg, "bench_first")
    pb = Postburner(database_url=url, beanstalkd_url=beanstalkd.url, namespace="first", secret="b")
    insert_schedules(pb, count)
    started = time.perf_counter()
    report = tick(pb)
    elapsed = time.perf_counter() - started
    queued = sum(_tube_jobs(pb, f"q{n}") for n in range(4))
    assert report.created == count == queued, (report.describe(), queued)
    pb.dispose()
    return {"schedules": count, "seconds": elapsed, "per_second": count / elapsed}


def _tube_jobs(pb: Any, queue: str) -> int:
    stats = pb.queue.stats_tube(queue) or {}
    return int(stats.get("current-jobs-delayed", 0)) + int(stats.get("current-jobs-ready", 0))


def floor(pg: Any, beanstalkd: Any, count: int) -> dict[str, Any]:
    """The same rows inserted in batches with psycopg, the same puts with bare greenstalk."""
    import greenstalk
    import psycopg
    from psycopg.types.json import Jsonb

    from postburner_py import Postburner
    from postburner_py.queue.signing import JobBody, encode_body

    url = fresh_database(pg, "bench_floor")
    pb = Postburner(database_url=url, beanstalkd_url=beanstalkd.url, namespace="floor", secret="b")
    insert_schedules(pb, count)
    pb.dispose()
    rows, bodies = _floor_rows(
        count, Jsonb, lambda i, at: encode_body(JobBody("execution", i + 1, f"bench-{i}", at), b"b")
    )
    libpq = url.replace("postgresql+psycopg://", "postgresql://")
    host, port = beanstalkd.url.removeprefix("beanstalk://").split(":")
    started = time.perf_counter()
    with psycopg.connect(libpq) as connection, connection.cursor() as cursor:
        for start in range(0, count, BATCH):
            cursor.executemany(_FLOOR_INSERT, rows[start : start + BATCH])
            connection.commit()
    with greenstalk.Client((host, int(port)), encoding=None, use="floor.q0") as client:
        for body in bodies:
            client.put(body, priority=65536, delay=3600, ttr=60)
    elapsed = time.perf_counter() - started
    return {"rows": count, "seconds": elapsed, "per_second": count / elapsed}


_FLOOR_INSERT = (
    "INSERT INTO postburner_schedule_executions (schedule_id, run_at, next_run_at, "
    "enqueued_at, status, cached_schedule, created_at, updated_at) "
    "VALUES (%s, %s, %s, %s, 'scheduled', %s, %s, %s)"
)


def _floor_rows(count: int, jsonb: Any, body: Any) -> tuple[list[tuple[Any, ...]], list[bytes]]:
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    at = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    snapshot = {"name": "bench", "queue": "q0", "priority": 65536, "ttr": 60, "args": [1]}
    rows = [
        (index + 1, at, at + timedelta(hours=1), now, jsonb(snapshot), now, now)
        for index in range(count)
    ]
    return rows, [body(index, at) for index in range(count)]


def steady_pass(pg: Any, beanstalkd: Any, count: int) -> dict[str, Any]:
    """Populate ``count`` healthy schedules, then time one tick in a fresh process."""
    from postburner_py import Postburner
    from postburner_py.watchdog.process import tick

    url = fresh_database(pg, "bench_steady")
    pb = Postburner(database_url=url, beanstalkd_url=beanstalkd.url, namespace="steady", secret="b")
    insert_schedules(pb, count)
    started = time.perf_counter()
    populate = tick(pb)
    populated_in = time.perf_counter() - started
    _analyze(pb)  # a steady system has planner statistics (autovacuum would run it shortly)
    pb.dispose()
    child = subprocess.run(
        [sys.executable, __file__, "--steady-child", url, beanstalkd.url],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(child.stdout)
    result.update(schedules=count, first_pass_seconds=populated_in, created=populate.created)
    return result


def _analyze(pb: Any) -> None:
    from sqlalchemy import text

    with pb.engine.connect() as connection:
        connection.execute(text("ANALYZE"))
        connection.commit()


def steady_child(url: str, beanstalkd_url: str) -> None:
    """Run in a fresh process: one warm-up tick, then the measured one; print JSON."""
    from postburner_py import Postburner
    from postburner_py.watchdog.process import tick

    pb = Postburner(database_url=url, beanstalkd_url=beanstalkd_url, namespace="steady", secret="b")
    tick(pb)  # warm-up: connections, statement caches
    before = pb.queue.stats()
    started = time.perf_counter()
    report = tick(pb)
    elapsed = time.perf_counter() - started
    after = pb.queue.stats()
    commands = {
        name: int(after[name]) - int(before[name])
        for name in after
        if name.startswith("cmd-") and after[name] != before[name]
    }
    commands["cmd-stats"] -= 1  # the ``after`` read above
    rss_mb = _peak_rss_mb()
    print(
        json.dumps(
            {
                "seconds": elapsed,
                "beanstalkd_commands": commands,
                "rss_mb": rss_mb,
                "report": report.counts(),
            }
        )
    )


def _peak_rss_mb() -> float:
    """This process's peak resident set. Linux: VmHWM (ru_maxrss survives exec, so a child
    would report its parent's peak); elsewhere ru_maxrss."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--first", type=int, default=10_000, help="schedules for the first pass")
    parser.add_argument("--steady", type=int, default=100_000, help="schedules, steady pass")
    parser.add_argument("--small", action="store_true", help="1,000 and 10,000: a quick check")
    parser.add_argument("--steady-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    _imports()
    if args.steady_child:
        steady_child(*args.steady_child)
        return
    if args.small:
        args.first, args.steady = 1_000, 10_000
    from tests.servers import BeanstalkdServer, PostgresServer

    pg, beanstalkd = PostgresServer(), BeanstalkdServer()
    pg.start()
    beanstalkd.start()
    try:
        results = {
            "first_pass": first_pass(pg, beanstalkd, args.first),
            "floor": floor(pg, beanstalkd, args.first),
            "steady_pass": steady_pass(pg, beanstalkd, args.steady),
        }
    finally:
        pg.close()
        beanstalkd.close()
    first, raw = results["first_pass"]["per_second"], results["floor"]["per_second"]
    results["first_pass"]["share_of_floor"] = first / raw
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
