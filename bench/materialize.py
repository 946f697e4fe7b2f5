"""Scenarios 1 and 2: the watchdog pass that materializes new schedules, and the steady pass.

1. *materialize*: N schedules inserted in bulk (no hook ran), then one timed ``tick``: every
   schedule gets its first execution created and put. Floor: the same execution rows
   inserted with psycopg in batches of :data:`FLOOR_BATCH`, plus the same puts with bare
   greenstalk on one connection (one round trip each, grouped by tube).
2. *steady*: one ``tick`` over M healthy schedules in a fresh process (after a first, cold
   tick in that process): wall time, SQL statements, Beanstalkd calls, RSS. Floor: the one
   grouped query that finds the schedules without exactly one live future execution, run
   with bare psycopg.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import greenstalk
import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy import select

from bench.common import (
    SECRET,
    QueueCallCounter,
    StatementCounter,
    analyze,
    beanstalkd_address,
    bulk_insert_schedules,
    healthy_rows,
    libpq_url,
    rate,
    ratio,
    run_child,
)
from postburner_py import ScheduleExecution
from postburner_py.queue.signing import JobBody, encode_body
from postburner_py.watchdog.process import tick

if TYPE_CHECKING:
    from bench.run import Context

FLOOR_BATCH = 2000

_FLOOR_INSERT = (
    "INSERT INTO postburner_schedule_executions (schedule_id, run_at, next_run_at, "
    "enqueued_at, status, cached_schedule, created_at, updated_at) "
    "VALUES (%s, %s, %s, %s, 'scheduled', %s, %s, %s)"
)

#: The heart of a steady pass, as one statement: enabled schedules without exactly one live
#: future execution.
_FLOOR_STEADY = """
SELECT s.id FROM postburner_schedules s
LEFT JOIN postburner_schedule_executions e
  ON e.schedule_id = s.id AND e.status IN ('pending', 'scheduled') AND e.run_at > now()
WHERE s.enabled
GROUP BY s.id
HAVING count(e.id) <> 1
"""


# --- 1. materialize --------------------------------------------------------------------------


def materialize(ctx: Context, index: int) -> dict[str, float]:
    """Bulk insert N schedules and time the pass that queues their first executions."""
    count = ctx.sizes.materialize
    name = f"bench_mat{index}"
    url = ctx.servers.fresh_database(name)
    pb = ctx.servers.postburner(url, name)
    rows = healthy_rows(count, datetime.now(UTC))
    started = time.perf_counter()
    bulk_insert_schedules(pb.engine, rows)
    inserted = time.perf_counter() - started
    with StatementCounter(pb.engine) as statements, QueueCallCounter(pb.queue) as calls:
        started = time.perf_counter()
        report = tick(pb)
        elapsed = time.perf_counter() - started
    queued = sum(_tube_jobs(pb, f"q{n}") for n in range(4))
    if not report.created == queued == count:
        raise RuntimeError(f"materialize: {report.describe()}, {queued} queued of {count}")
    executions = _executions(pb)
    pb.dispose()
    floor_seconds = _floor(ctx, index, rows, executions)
    ctx.servers.drop_database(name)
    ours, floor = rate(count, elapsed), rate(count, floor_seconds)
    return {
        "schedules": count,
        "insert_s": inserted,
        "tick_s": elapsed,
        "per_s": ours,
        "statements": statements.count,
        "queue_calls": calls.total,
        "floor_s": floor_seconds,
        "floor_per_s": floor,
        "ratio": ratio(ours, floor),
        "create_total_s": inserted + elapsed,
    }


def _tube_jobs(pb: Any, queue: str) -> int:
    stats = pb.queue.stats_tube(queue) or {}
    return int(stats.get("current-jobs-delayed", 0)) + int(stats.get("current-jobs-ready", 0))


def _executions(pb: Any) -> list[Any]:
    columns = (
        ScheduleExecution.id,
        ScheduleExecution.schedule_id,
        ScheduleExecution.run_at,
        ScheduleExecution.next_run_at,
        ScheduleExecution.cached_schedule,
    )
    with pb.session() as session:
        return list(session.execute(select(*columns).order_by(ScheduleExecution.id)).all())


def _floor(ctx: Context, index: int, schedules: list[Any], executions: list[Any]) -> float:
    """Insert the same execution rows (into a copy holding the same schedules) and put the
    same bodies, the plain way; returns the seconds it took."""
    name = f"bench_matf{index}"
    url = ctx.servers.fresh_database(name)
    pb = ctx.servers.postburner(url, name)
    bulk_insert_schedules(pb.engine, schedules)
    pb.dispose()
    now = datetime.now(UTC)
    rows = [
        (e.schedule_id, e.run_at, e.next_run_at, now, Jsonb(e.cached_schedule), now, now)
        for e in executions
    ]
    puts = sorted(
        (
            (
                f"{name}.{e.cached_schedule['queue']}",
                encode_body(
                    JobBody("execution", e.id, e.cached_schedule["name"], e.run_at), SECRET.encode()
                ),
                max(0, int((e.run_at - now).total_seconds())),
            )
            for e in executions
        ),
        key=lambda put: put[0],
    )
    started = time.perf_counter()
    with psycopg.connect(libpq_url(url)) as connection, connection.cursor() as cursor:
        for start in range(0, len(rows), FLOOR_BATCH):
            cursor.executemany(_FLOOR_INSERT, rows[start : start + FLOOR_BATCH])
            connection.commit()
    with greenstalk.Client(beanstalkd_address(ctx.servers.beanstalkd.url), encoding=None) as client:
        tube = None
        for put_tube, body, delay in puts:
            if put_tube != tube:
                client.use(put_tube)
                tube = put_tube
            client.put(body, priority=65536, delay=delay, ttr=60)
    elapsed = time.perf_counter() - started
    ctx.servers.drop_database(name)
    return elapsed


# --- 2. steady pass ----------------------------------------------------------------------------


def steady(ctx: Context, index: int) -> dict[str, float]:
    """One pass over M healthy schedules, measured in a fresh watchdog process."""
    setup = ctx.steady_database()
    child = run_child(
        "steady",
        {
            "url": setup["url"],
            "beanstalkd": ctx.servers.beanstalkd.url,
            "namespace": "bench_steady",
        },
    )
    floor_seconds = _steady_floor(setup["url"])
    result: dict[str, float] = {
        "schedules": ctx.sizes.steady,
        "pass_s": child["seconds"],
        "cold_pass_s": child["cold_seconds"],
        "statements": child["statements"],
        "queue_calls": child["queue_calls"],
        "server_commands": child["server_commands"],
        "changed": child["changed"],
        "rss_mb": child["rss_mb"],
        "peak_rss_mb": child["peak_rss_mb"],
        "floor_s": floor_seconds,
        "ratio": ratio(child["seconds"], floor_seconds),
    }
    if index == 0:  # how the healthy state was reached: measured once
        result.update(setup_insert_s=setup["insert_s"], setup_pass_s=setup["pass_s"])
    return result


def build_steady(ctx: Context) -> dict[str, Any]:
    """Bulk insert M schedules and materialize them with one pass (scenario 1 at scale)."""
    url = ctx.servers.fresh_database("bench_steady")
    pb = ctx.servers.postburner(url, "bench_steady")
    rows = healthy_rows(ctx.sizes.steady, datetime.now(UTC))
    started = time.perf_counter()
    bulk_insert_schedules(pb.engine, rows)
    inserted = time.perf_counter() - started
    started = time.perf_counter()
    report = tick(pb)
    elapsed = time.perf_counter() - started
    if report.created != ctx.sizes.steady:
        raise RuntimeError(f"steady set-up: {report.describe()}")
    analyze(pb.engine)
    pb.dispose()
    return {"url": url, "insert_s": inserted, "pass_s": elapsed}


def _steady_floor(url: str) -> float:
    with psycopg.connect(libpq_url(url)) as connection:
        connection.execute(_FLOOR_STEADY).fetchall()  # warm, like the measured pass
        started = time.perf_counter()
        found = connection.execute(_FLOOR_STEADY).fetchall()
        elapsed = time.perf_counter() - started
    if found:
        raise RuntimeError(f"steady floor: {len(found)} schedules are not healthy")
    return elapsed
