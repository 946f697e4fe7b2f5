"""Scenarios 3 and 4: start precision and worker throughput, on PostgreSQL with the gate and
history.

3. *precision*: one worker process (concurrency 4, prefetch 16) runs, one after the other,
   200 one-off jobs over 10 s (``pb.enqueue_at``, one every 50 ms), 200 scheduled executions
   over 10 s (every-day interval schedules anchored at those instants; a schedule's grid is
   whole seconds, so 20 fall due per second), and 1,000 scheduled executions due in the same
   second.
   Lateness comes from the job history (``queue_time_ms``). Floor: bare greenstalk
   reservers (4 threads) that commit one row per job with psycopg and wait out the
   sub-second rest, over the same instants (the spread floor runs in the one-off window,
   25 ms after each one-off job).
4. *throughput*: N one-off jobs due now drained by one worker process (``burst``) at
   concurrency 1 and 4. The jobs are stored and put in bulk (see :func:`bulk_enqueue`);
   ``enqueue_at`` is timed on its own. Floor: reserve, one INSERT and commit, delete, with
   bare greenstalk and psycopg on one connection each.
"""

from __future__ import annotations

import json
import math
import subprocess
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import greenstalk
import psycopg
from sqlalchemy import Table, func, insert, select, text

from bench.common import (
    NOOP,
    ROOT,
    beanstalkd_address,
    bulk_insert_schedules,
    child_command,
    child_env,
    chunked,
    interval_rows,
    lateness_summary,
    parse_child_output,
    rate,
    ratio,
    run_child,
    spread,
)
from bench.procfs import cpu_jiffies, steal_percent
from postburner_py import Postburner
from postburner_py.queue.beanstalk import PutRequest, delay_seconds
from postburner_py.schedules.one_off import PENDING, DelayedJob, delayed_body
from postburner_py.store.history import HistoryRecord, HistoryStore
from postburner_py.watchdog.process import tick

if TYPE_CHECKING:
    from bench.run import Context

FLOOR_THREADS = 4
PRECISION_CONCURRENCY = 4
#: Sized to the largest cluster (20 due per second): concurrency + prefetch threads hold
#: every occurrence of a cluster admitted before it is due (docs/worker.md).
PRECISION_PREFETCH = 16
_RECORD_JOB_IDS = text(
    """
    UPDATE postburner_delayed_jobs AS d
    SET beanstalk_job_id = v.job_id, beanstalk_server_id = :server
    FROM unnest(CAST(:ids AS bigint[]), CAST(:jobs AS bigint[])) AS v(id, job_id)
    WHERE d.id = v.id
    """
)


# --- 4. throughput -----------------------------------------------------------------------------


def throughput(ctx: Context, index: int) -> dict[str, float]:
    """Drain N jobs due now at concurrency 1 and 4; the bare floor; ``enqueue_at`` alone."""
    count = ctx.sizes.throughput
    result: dict[str, float] = {"jobs": count}
    enqueue_seconds = 0.0
    for concurrency in (1, 4):
        drained, enqueued = _drain(ctx, f"bench_tp{concurrency}_{index}", count, concurrency)
        result.update(drained)
        enqueue_seconds += enqueued
    for concurrency in (1, 4):
        result.update(_drain_executions(ctx, f"bench_ts{concurrency}_{index}", count, concurrency))
    floor = _floor_rate(ctx, count)
    result.update(
        bulk_enqueue_per_s=rate(2 * count, enqueue_seconds),
        floor_per_s=floor,
        ratio_c1=ratio(result["c1_per_s"], floor),
        ratio_c4=ratio(result["c4_per_s"], floor),
        enqueue_at_per_s=_enqueue_at_rate(ctx, f"bench_eq{index}", ctx.sizes.enqueue_at),
    )
    return result


def _drain(ctx: Context, name: str, count: int, concurrency: int) -> tuple[dict[str, float], float]:
    """Enqueue ``count`` jobs in bulk, drain them with one worker process: its figures, and
    the seconds the bulk enqueue took."""
    url = ctx.servers.fresh_database(name)
    pb = ctx.servers.postburner(url, name)
    started = time.perf_counter()
    bulk_enqueue(pb, [datetime.now(UTC)] * count, prefix="t")
    enqueued = time.perf_counter() - started
    child, stolen = _burst_worker(ctx, pb, url, name, count, concurrency, "throughput")
    prefix = f"c{concurrency}"
    drained = {
        f"{prefix}_per_s": rate(count, child["seconds"]),
        f"{prefix}_s": child["seconds"],
        # CPU time of the worker process per job: far less sensitive to a busy host than
        # the rate (the same work, whoever else runs).
        f"{prefix}_worker_cpu_ms_per_job": child["cpu_seconds"] * 1000 / count,
        f"{prefix}_worker_rss_mb": child["rss_mb"],
        f"{prefix}_worker_peak_rss_mb": child["peak_rss_mb"],
        f"{prefix}_steal_pct": stolen,
    }
    return drained, enqueued


def _drain_executions(ctx: Context, name: str, count: int, concurrency: int) -> dict[str, float]:
    """``count`` schedules (every-day intervals, default overlap policy: ``skip`` where the
    schedule has one, so each claim takes its schedule's running slot), their first
    executions created and put by one pass and due together; once due, one worker process
    drains them (each run also chains its next execution). Its figures, ``sched_c{N}_*``."""
    url = ctx.servers.fresh_database(name)
    pb = ctx.servers.postburner(url, name)
    # Lead time for the bulk INSERT and the pass to finish before the executions fall due.
    due = _whole_second(10 + count / 1000)
    _schedule(pb, "ts", [due] * count)
    time.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds() + 0.5))
    child, stolen = _burst_worker(ctx, pb, url, name, count, concurrency, "scheduled throughput")
    prefix = f"sched_c{concurrency}"
    return {
        f"{prefix}_per_s": rate(count, child["seconds"]),
        f"{prefix}_s": child["seconds"],
        f"{prefix}_steal_pct": stolen,
    }


def _burst_worker(
    ctx: Context, pb: Postburner, url: str, name: str, count: int, concurrency: int, what: str
) -> tuple[dict[str, Any], float]:
    """One burst worker process drains the database ``name``; its report and the stolen CPU
    share. Checks every one of ``count`` jobs completed, then drops the database."""
    cpu_before = cpu_jiffies()
    child = run_child(
        "worker",
        {
            "url": url,
            "beanstalkd": ctx.servers.beanstalkd.url,
            "namespace": name,
            "concurrency": concurrency,
            "burst": True,
        },
        timeout=ctx.sizes.child_timeout,
    )
    stolen = steal_percent(cpu_before, cpu_jiffies())
    completed = _completed(pb)
    pb.dispose()
    ctx.servers.drop_database(name)
    if completed != count or child["outcomes"].get("completed") != count:
        raise RuntimeError(f"{what} c{concurrency}: {completed} of {count}: {child}")
    return child, stolen


def bulk_enqueue(pb: Postburner, run_at: Sequence[datetime], *, prefix: str) -> list[int]:
    """Store one-off no-op jobs due at ``run_at`` and put them, the way a pass puts executions:
    one multi-row INSERT per 5,000, pipelined puts over 4 connections, one UPDATE for the job
    ids. The library has no bulk ``enqueue_at``; bodies come from its ``delayed_body``."""
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = [
        {
            "job_id": f"{prefix}{index}",
            "job_class": NOOP,
            "args": [],
            "kwargs": {},
            "queue": "default",
            "priority": 65536,
            "ttr": 60,
            "max_attempts": 3,
            "run_at": at,
            "status": PENDING,
            "enqueued_at": now,
            "created_at": now,
            "updated_at": now,
        }
        for index, at in enumerate(run_at)
    ]
    table = cast(Table, DelayedJob.__table__)
    statement = insert(table).returning(table.c.id, sort_by_parameter_order=True)
    with pb.engine.begin() as connection:
        ids = [
            row_id
            for chunk in chunked(rows, 5000)
            for row_id in connection.execute(statement, list(chunk)).scalars()
        ]
    requests = [
        PutRequest(
            body=delayed_body(
                pb, DelayedJob(id=row_id, job_id=row["job_id"], run_at=row["run_at"])
            ),
            queue="default",
            priority=65536,
            delay=delay_seconds(row["run_at"], now),
            ttr=60,
        )
        for row_id, row in zip(ids, rows, strict=True)
    ]
    job_ids = pb.queue.put_many(requests, connections=4)
    with pb.engine.begin() as connection:
        connection.execute(
            _RECORD_JOB_IDS, {"server": pb.queue.server_id(), "ids": ids, "jobs": job_ids}
        )
    return ids


def _completed(pb: Postburner) -> int:
    statement = select(func.count()).where(HistoryRecord.status == "completed")
    with pb.engine.connect() as connection:
        return int(connection.execute(statement).scalar_one())


def _enqueue_at_rate(ctx: Context, name: str, count: int) -> float:
    """``pb.enqueue_at`` one job at a time (jobs due in an hour: nothing runs them)."""
    url = ctx.servers.fresh_database(name)
    pb = ctx.servers.postburner(url, name)
    at = datetime.now(UTC) + timedelta(hours=1)
    started = time.perf_counter()
    for index in range(count):
        pb.enqueue_at(at, NOOP, job_id=f"e{index}")
    elapsed = time.perf_counter() - started
    pb.dispose()
    ctx.servers.drop_database(name)
    return rate(count, elapsed)


def _floor_rate(ctx: Context, count: int) -> float:
    """Reserve, INSERT + commit, delete: ``count`` times with bare greenstalk and psycopg."""
    address, tube = beanstalkd_address(ctx.servers.beanstalkd.url), "bench_floor_rate"
    with greenstalk.Client(address, use=tube, watch=tube, encoding=None) as client:
        for _ in range(count):
            client.put(b"x" * 180)
        with psycopg.connect(ctx.servers.pg.admin_url) as connection:
            connection.execute("CREATE TEMP TABLE floor_log (id bigint, at timestamptz)")
            connection.commit()
            started = time.perf_counter()
            for _ in range(count):
                job = client.reserve(timeout=5)
                connection.execute("INSERT INTO floor_log VALUES (%s, now())", (job.id,))
                connection.commit()
                client.delete(job)
            elapsed = time.perf_counter() - started
    return rate(count, elapsed)


# --- 3. precision ------------------------------------------------------------------------------


def precision(ctx: Context, index: int) -> dict[str, float]:
    """Spread and burst lateness of one worker process, and of the bare floor."""
    sizes = ctx.sizes
    name = f"bench_prec{index}"
    url = ctx.servers.fresh_database(name)
    pb = ctx.servers.postburner(url, name)
    worker = _start_worker(url, ctx.servers.beanstalkd.url, name)
    result: dict[str, float] = {}
    try:
        oneoff = spread(_from_now(sizes.lead), sizes.spread, sizes.spread_seconds)
        floor = _FloorReservers(ctx, [at + timedelta(milliseconds=25) for at in oneoff])
        for position, at in enumerate(oneoff):
            pb.enqueue_at(at, NOOP, job_id=f"spo{position}")
        _wait_for(pb, sizes.spread, oneoff[-1] + timedelta(seconds=sizes.grace))
        result.update(lateness_summary("floor_spread", floor.finish(), sizes.spread))
        scheduled = spread(_whole_second(sizes.lead), sizes.spread, sizes.spread_seconds)
        _schedule(pb, "sps", scheduled)
        _wait_for(pb, 2 * sizes.spread, scheduled[-1] + timedelta(seconds=sizes.grace))
        burst_at = _whole_second(sizes.lead)
        _schedule(pb, "spb", [burst_at] * sizes.burst)
        _wait_for(pb, 2 * sizes.spread + sizes.burst, burst_at + timedelta(seconds=sizes.grace))
        burst_floor = _FloorReservers(ctx, [_from_now(sizes.lead)] * sizes.burst)
        result.update(lateness_summary("floor_burst", burst_floor.finish(), sizes.burst))
    finally:
        memory = _stop_worker(worker)
    late = _lateness_by_kind(pb, 2 * sizes.spread + sizes.burst)
    pb.dispose()
    ctx.servers.drop_database(name)
    result.update(lateness_summary("oneoff_spread", late["job:spo"], sizes.spread))
    result.update(lateness_summary("sched_spread", late["sps"], sizes.spread))
    result.update(lateness_summary("sched_burst", late["spb"], sizes.burst))
    result["ratio_spread_p99"] = ratio(
        result["oneoff_spread_p99_ms"], result["floor_spread_p99_ms"]
    )
    result["ratio_burst_p99"] = ratio(result["sched_burst_p99_ms"], result["floor_burst_p99_ms"])
    result["worker_rss_mb"] = memory["rss_mb"]
    return result


def _from_now(lead: float) -> datetime:
    """``lead`` seconds from now."""
    return datetime.now(UTC) + timedelta(seconds=lead)


def _whole_second(lead: float) -> datetime:
    """The first whole second at least ``lead`` seconds from now (a schedule's grid point)."""
    return _from_now(lead).replace(microsecond=0) + timedelta(seconds=1)


def _schedule(pb: Postburner, prefix: str, instants: list[datetime]) -> None:
    """Every-day interval schedules whose first occurrences are ``instants``, queued by a pass
    (which may also create next executions the worker's chainer has not created yet)."""
    bulk_insert_schedules(pb.engine, interval_rows(prefix, instants))
    report = tick(pb)
    if report.created < len(instants):
        raise RuntimeError(f"precision: {report.describe()}")


def _start_worker(url: str, beanstalkd_url: str, namespace: str) -> subprocess.Popen[str]:
    payload = {
        "url": url,
        "beanstalkd": beanstalkd_url,
        "namespace": namespace,
        "concurrency": PRECISION_CONCURRENCY,
        "prefetch": PRECISION_PREFETCH,
        "burst": False,
    }
    worker = subprocess.Popen(
        child_command("worker"),
        cwd=ROOT,
        env=child_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert worker.stdin is not None and worker.stdout is not None
    worker.stdin.write(json.dumps(payload))
    worker.stdin.close()
    if worker.stdout.readline().strip() != "ready":
        worker.kill()
        raise RuntimeError("the precision worker did not start")
    return worker


def _stop_worker(worker: subprocess.Popen[str]) -> dict[str, Any]:
    """SIGTERM (running jobs finish first); the worker's result line."""
    assert worker.stdout is not None
    worker.terminate()
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
        raise
    return parse_child_output(worker.stdout.read())


def _wait_for(pb: Postburner, completed: int, deadline: datetime) -> None:
    """Poll the history until ``completed`` runs finished or ``deadline`` passed (the summary
    then counts the missing ones)."""
    while _completed(pb) < completed and datetime.now(UTC) < deadline:
        time.sleep(0.1)


def _lateness_by_kind(pb: Postburner, limit: int) -> dict[str, list[float]]:
    """Start lateness (ms) of the completed runs, by name prefix (``job:spo``, ``sps``, ``spb``)."""
    late: dict[str, list[float]] = {"job:spo": [], "sps": [], "spb": []}
    for entry in HistoryStore(pb.session_factory).query(status="completed", limit=limit):
        kind = (entry.schedule_name or "").rstrip("0123456789")
        if kind in late and entry.queue_time_ms is not None:
            late[kind].append(entry.queue_time_ms)
    return late


class _FloorReservers:
    """Bare greenstalk jobs due at ``instants``, reserved by threads that each commit one row
    per job with psycopg, then wait out the rest of the second (as the worker does).

    The thread that records the last job puts one stop job per thread, so none of them
    lingers in a blocking reserve (its timeout is whole seconds).
    """

    def __init__(self, ctx: Context, instants: list[datetime]) -> None:
        self.address = beanstalkd_address(ctx.servers.beanstalkd.url)
        self.dsn = ctx.servers.pg.admin_url
        self.tube = f"bench_floor_{id(self)}"
        self.total = len(instants)
        self.deadline = max(instants).timestamp() + ctx.sizes.grace
        self.late_ms: list[float] = []
        self._lock = threading.Lock()
        self._put([json.dumps(at.timestamp()).encode() for at in instants], instants)
        self._threads = [threading.Thread(target=self._reserve) for _ in range(FLOOR_THREADS)]
        for thread in self._threads:
            thread.start()

    def finish(self) -> list[float]:
        """Wait until every job ran (or the deadline passed); their lateness in ms."""
        for thread in self._threads:
            thread.join()
        return self.late_ms

    def _put(self, bodies: list[bytes], instants: list[datetime] | None = None) -> None:
        with greenstalk.Client(self.address, use=self.tube, encoding=None) as client:
            for position, body in enumerate(bodies):
                due = instants[position].timestamp() if instants else time.time()
                client.put(body, delay=max(0, math.floor(due - time.time())), ttr=60)

    def _reserve(self) -> None:
        with (
            greenstalk.Client(self.address, watch=self.tube, encoding=None) as client,
            psycopg.connect(self.dsn) as connection,
        ):
            connection.execute("CREATE TEMP TABLE floor_log (due double precision)")
            connection.commit()
            while time.time() < self.deadline:
                try:
                    job = client.reserve(timeout=1)
                except greenstalk.TimedOutError:
                    continue
                last = job.body == _STOP or self._run_one(connection, job.body)
                client.delete(job)
                if last:
                    return

    def _run_one(self, connection: Any, body: bytes) -> bool:
        """Run one job; True when it was the last one (the stop jobs are put then)."""
        due = float(json.loads(body))
        connection.execute("INSERT INTO floor_log VALUES (%s)", (due,))
        connection.commit()
        wait = due - time.time()
        if wait > 0:
            time.sleep(wait)
        late_ms = (time.time() - due) * 1000
        with self._lock:
            self.late_ms.append(late_ms)
            last = len(self.late_ms) == self.total
        if last:
            self._put([_STOP] * (FLOOR_THREADS - 1))
        return last


_STOP = b"stop"
