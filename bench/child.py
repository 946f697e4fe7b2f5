"""The benchmark's child processes: ``python -m bench.child KIND`` with JSON arguments on stdin.

Each prints one JSON object as its last line. They run apart from the harness so that their
memory is their own and nothing else competes inside them.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bench.procfs import memory_mb

Child = Callable[[dict[str, Any]], dict[str, Any]]


def steady(args: dict[str, Any]) -> dict[str, Any]:
    """A cold ``tick``, then the measured one with its statements and Beanstalkd calls."""
    from bench.common import QueueCallCounter, StatementCounter, make_postburner, server_commands
    from postburner_py.watchdog.process import tick

    pb = make_postburner(args["url"], args["beanstalkd"], args["namespace"])
    started = time.perf_counter()
    tick(pb)
    cold = time.perf_counter() - started
    before = pb.queue.stats()
    with StatementCounter(pb.engine) as statements, QueueCallCounter(pb.queue) as calls:
        started = time.perf_counter()
        report = tick(pb)
        elapsed = time.perf_counter() - started
    commands = server_commands(before, pb.queue.stats())
    commands["cmd-stats"] -= 1  # the ``stats`` read just above
    pb.dispose()
    return {
        "seconds": elapsed,
        "cold_seconds": cold,
        "statements": statements.count,
        "queue_calls": calls.total,
        "queue_call_names": calls.calls,
        "server_commands": sum(commands.values()),
        "server_command_names": {name: n for name, n in commands.items() if n},
        "changed": sum(report.counts().values()),
        **memory_mb(),
    }


def worker(args: dict[str, Any]) -> dict[str, Any]:
    """A worker (``concurrency`` threads) until the queue is empty (``burst``) or SIGTERM.

    It runs as deployed: its INFO lines are formatted and written (to the null device; text,
    or JSON with ``POSTBURNER_LOG_FORMAT=json``; ``BENCH_WORKER_LOG_LEVEL=WARNING`` for none)
    and its metrics are kept, so their cost is in the figures."""
    from bench.common import make_postburner
    from postburner_py.logs import configure_logging
    from postburner_py.worker.process import Worker

    sink = open(os.devnull, "w")  # noqa: SIM115 (open for the whole process)
    level = logging.getLevelName(os.environ.get("BENCH_WORKER_LOG_LEVEL", "INFO"))
    configure_logging(os.environ.get("POSTBURNER_LOG_FORMAT", "text"), level=level, stream=sink)
    pb = make_postburner(args["url"], args["beanstalkd"], args["namespace"])
    work = Worker(
        pb,
        concurrency=args["concurrency"],
        prefetch=args.get("prefetch"),
        burst=args["burst"],
    )
    signal.signal(signal.SIGTERM, lambda _signum, _frame: work.stop())
    print("ready", flush=True)
    started, cpu = time.perf_counter(), time.process_time()
    work.run()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    pb.dispose()
    outcomes = {str(outcome): count for outcome, count in work.outcomes.items()}
    return {"seconds": elapsed, "cpu_seconds": cpu, "outcomes": outcomes, **memory_mb()}


def watchdog_memory(args: dict[str, Any]) -> dict[str, Any]:
    """A watchdog process's memory after a pass over the schedules of ``url`` (the first
    pass creates their executions) and a second, steady one."""
    from bench.common import make_postburner
    from postburner_py.watchdog.process import tick

    pb = make_postburner(args["url"], args["beanstalkd"], args["namespace"])
    started = time.perf_counter()
    first = tick(pb)
    elapsed = time.perf_counter() - started
    tick(pb)
    pb.dispose()
    return {"created": first.created, "first_pass_s": elapsed, **memory_mb()}


def apscheduler_add(args: dict[str, Any]) -> dict[str, Any]:
    """APScheduler 3: add cron jobs to a running scheduler's job store (timed), then its
    memory once it has looked at them."""
    from apscheduler.triggers.cron import CronTrigger

    scheduler = _apscheduler(args)
    scheduler.start(paused=args["paused"])
    started = time.perf_counter()
    for index, expression in enumerate(args["crons"]):
        trigger = CronTrigger.from_crontab(expression, timezone=args["zones"][index])
        # A standard-library callable: importing our package would swell the peer's memory.
        scheduler.add_job("time:time", trigger, id=f"j{index}", name=f"j{index}")
    elapsed = time.perf_counter() - started
    scheduler.resume()
    time.sleep(args["settle"])  # its wake-up after the last add has run
    memory = memory_mb()  # before get_jobs, which loads every job of the store into memory
    jobs = len(scheduler.get_jobs())
    scheduler.shutdown(wait=False)
    return {"seconds": elapsed, "jobs": jobs, **memory}


def apscheduler_lateness(args: dict[str, Any]) -> dict[str, Any]:
    """APScheduler 3 with its SQLAlchemy job store runs one job per instant in ``due``; each
    job records its own start lateness."""
    from apscheduler.triggers.date import DateTrigger

    from postburner_py import bench_jobs

    scheduler = _apscheduler(args)
    scheduler.start()
    for index, due in enumerate(args["due"]):
        at = datetime.fromtimestamp(due, UTC)
        scheduler.add_job(
            "postburner_py.bench_jobs:record_lateness",
            DateTrigger(run_date=at),
            args=[due],
            id=f"late{index}",
            misfire_grace_time=None,
        )
    deadline = max(args["due"]) + args["grace"]
    while len(bench_jobs.LATENESS_MS) < len(args["due"]) and time.time() < deadline:
        time.sleep(0.05)
    scheduler.shutdown(wait=True)
    return {"lateness_ms": list(bench_jobs.LATENESS_MS), **memory_mb()}


def _apscheduler(args: dict[str, Any]) -> Any:
    from apscheduler.jobstores.memory import MemoryJobStore
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler

    store = SQLAlchemyJobStore(url=args["url"]) if args.get("url") else MemoryJobStore()
    return BackgroundScheduler(jobstores={"default": store}, timezone="UTC")


def bare(args: dict[str, Any]) -> dict[str, Any]:
    """The least a Python process on this stack holds: psycopg and greenstalk connected."""
    import greenstalk
    import psycopg

    host, port = args["beanstalkd"].removeprefix("beanstalk://").split(":")
    with (
        psycopg.connect(args["libpq_url"]) as connection,
        greenstalk.Client((host, int(port))) as client,
    ):
        connection.execute("SELECT 1").fetchall()
        client.stats()
        return memory_mb()


CHILDREN: dict[str, Child] = {
    "steady": steady,
    "worker": worker,
    "watchdog_memory": watchdog_memory,
    "apscheduler_add": apscheduler_add,
    "apscheduler_lateness": apscheduler_lateness,
    "bare": bare,
}


def main(argv: list[str]) -> None:
    """``KIND``: run that child on the JSON object read from stdin; print its result."""
    (kind,) = argv
    threading.current_thread().name = f"bench-{kind}"
    print(json.dumps(CHILDREN[kind](json.load(sys.stdin))), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
