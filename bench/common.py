"""What every scenario shares: the servers, fresh databases, bulk schedule rows, counters,
child processes and small statistics."""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

import psycopg
from sqlalchemy import Engine, Table, event, insert

from postburner_py import Postburner, Schedule
from tests.servers import BeanstalkdServer, PostgresServer

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret"
JOB_PREFIX = "postburner_py.bench_jobs"
NOOP = f"{JOB_PREFIX}:noop"
TEMPLATE = "bench_template"
INSERT_BATCH = 10_000
#: Time zones of the generated schedules (their local hour decides when a cron fires).
ZONES = ("UTC", "Europe/Prague", "America/New_York", "Asia/Tokyo")


class Servers:
    """PostgreSQL and Beanstalkd started for one benchmark run, and a migrated template
    database that makes each fresh database a cheap copy."""

    def __init__(self) -> None:
        self.pg = PostgresServer()
        self.beanstalkd = BeanstalkdServer()

    def __enter__(self) -> Servers:
        self.pg.start()
        self.beanstalkd.start()
        self._create(TEMPLATE, template=None)
        pb = make_postburner(self.pg.url_for(TEMPLATE), self.beanstalkd.url, TEMPLATE)
        pb.migrate()
        pb.dispose()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.beanstalkd.close()
        self.pg.close()

    def fresh_database(self, name: str) -> str:
        """An empty migrated database named ``name`` (replacing any); its SQLAlchemy URL."""
        self._create(name, template=TEMPLATE)
        return self.pg.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name``, closing whatever is still connected to it."""
        self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def admin(self, statement: str) -> None:
        """Run one statement on the ``postgres`` database (autocommit)."""
        with psycopg.connect(self.pg.admin_url, autocommit=True) as connection:
            connection.execute(statement)

    def postburner(self, url: str, namespace: str) -> Postburner:
        """A Postburner on ``url`` and this run's Beanstalkd, in its own namespace."""
        return make_postburner(url, self.beanstalkd.url, namespace)

    def _create(self, name: str, template: str | None) -> None:
        self.drop_database(name)
        suffix = f" TEMPLATE {template}" if template else ""
        self.admin(f"CREATE DATABASE {name}{suffix}")


def make_postburner(url: str, beanstalkd_url: str, namespace: str) -> Postburner:
    """The configuration every benchmark process uses."""
    return Postburner(
        database_url=url,
        beanstalkd_url=beanstalkd_url,
        namespace=namespace,
        secret=SECRET,
        allowed_job_prefixes=[JOB_PREFIX],
    )


def libpq_url(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as psycopg wants it."""
    return url.replace("postgresql+psycopg://", "postgresql://")


def beanstalkd_address(url: str) -> tuple[str, int]:
    """``beanstalk://host:port`` to ``(host, port)``."""
    host, port = url.removeprefix("beanstalk://").split(":")
    return host, int(port)


# --- schedules inserted in bulk (no session hook runs) ----------------------------------------


def healthy_rows(count: int, now: datetime, *, intervals: bool = True) -> list[dict[str, Any]]:
    """``count`` schedules of the usual kinds, none firing within the next hour.

    Daily crons in one of :data:`ZONES` at a local hour 2 to 21 hours on from now's and, with
    ``intervals``, every fourth one an every-day interval anchored 2 to 3 hours from ``now``:
    a pass over them finds nothing due and nothing to repair (the steady state).
    """
    hours = {zone: now.astimezone(ZoneInfo(zone)).hour for zone in ZONES}
    rows = []
    for index in range(count):
        zone = ZONES[index % len(ZONES)]
        when: dict[str, Any]
        if intervals and index % 4 == 3:
            anchor = now + timedelta(hours=2, seconds=index % 3600)
            when = {"anchor": anchor.replace(microsecond=0), "interval": 1, "interval_unit": "days"}
        else:
            when = {"cron": f"{index % 60} {(hours[zone] + 2 + index % 20) % 24} * * *"}
        rows.append(
            schedule_row(f"s{index}", zone=zone, queue=f"q{index % 4}", args=[index], **when)
        )
    return rows


def interval_rows(prefix: str, anchors: Sequence[datetime]) -> list[dict[str, Any]]:
    """One every-day interval schedule per anchor: its first occurrence is the anchor."""
    return [
        schedule_row(f"{prefix}{index}", anchor=at, interval=1, interval_unit="days")
        for index, at in enumerate(anchors)
    ]


def schedule_row(
    name: str,
    *,
    zone: str = "UTC",
    queue: str = "default",
    args: list[Any] | None = None,
    **when: Any,
) -> dict[str, Any]:
    """The column values of one schedule of the no-op job."""
    stamp = datetime.now(UTC)
    return {
        "name": name,
        "job_class": NOOP,
        "args": args or [],
        "kwargs": {"tenant": len(name) % 97},
        "queue": queue,
        "priority": 65536,
        "ttr": 60,
        "max_attempts": 3,
        "timezone": zone,
        "catch_up": False,
        "enabled": True,
        "created_at": stamp,
        "updated_at": stamp,
        # Every row names every column: one multi-row INSERT needs the same keys throughout.
        "cron": None,
        "anchor": None,
        "interval": None,
        "interval_unit": None,
        **when,
    }


def bulk_insert_schedules(engine: Engine, rows: Sequence[dict[str, Any]]) -> None:
    """One multi-row INSERT per :data:`INSERT_BATCH` rows, one commit: no ORM object, no hook."""
    table = cast(Table, Schedule.__table__)
    with engine.begin() as connection:
        for start in range(0, len(rows), INSERT_BATCH):
            connection.execute(insert(table), list(rows[start : start + INSERT_BATCH]))


def analyze(engine: Engine) -> None:
    """Planner statistics, as autovacuum would have them on a database that has settled."""
    with engine.connect() as connection:
        connection.exec_driver_sql("ANALYZE")
        connection.commit()


# --- counting what a pass does ----------------------------------------------------------------


@dataclass
class StatementCounter:
    """SQL statements sent through ``engine`` (an executemany counts once)."""

    engine: Engine
    count: int = 0

    def __enter__(self) -> StatementCounter:
        event.listen(self.engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *_exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._seen)

    def _seen(self, *_args: Any) -> None:
        self.count += 1


QUEUE_METHODS = (
    "put",
    "put_many",
    "delete",
    "peek",
    "stats",
    "stats_tube",
    "stats_job",
    "kick_job",
    "reserve",
    "release",
    "bury",
    "touch",
)


@dataclass
class QueueCallCounter:
    """Calls to the Beanstalkd adapter's methods on one ``pb.queue`` (``put_many`` counts
    once, whatever its size; :func:`server_commands` counts what reached the server)."""

    queue: Any
    calls: dict[str, int] = field(default_factory=dict)

    def __enter__(self) -> QueueCallCounter:
        for name in QUEUE_METHODS:
            setattr(self.queue, name, self._counted(name, getattr(self.queue, name)))
        return self

    def __exit__(self, *_exc: object) -> None:
        for name in QUEUE_METHODS:
            delattr(self.queue, name)  # the instance attribute: the class method shows again

    @property
    def total(self) -> int:
        """Every counted call."""
        return sum(self.calls.values())

    def _counted(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return method(*args, **kwargs)

        return counted


def server_commands(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    """The ``cmd-*`` counters that moved between two ``stats`` replies (the second
    ``stats`` itself included)."""
    return {
        name: int(after[name]) - int(before[name])
        for name in after
        if name.startswith("cmd-") and after[name] != before[name]
    }


# --- child processes ----------------------------------------------------------------------------


def child_command(kind: str) -> list[str]:
    """The command line of a ``bench.child`` process (its arguments come as JSON on stdin)."""
    return [sys.executable, "-m", "bench.child", kind]


def child_env() -> dict[str, str]:
    """The environment of a child: the repository importable, nothing else changed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def run_child(kind: str, payload: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
    """Run a ``bench.child`` process to its end; its JSON result (the last stdout line)."""
    done = subprocess.run(
        child_command(kind),
        input=json.dumps(payload),
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"child {kind} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return parse_child_output(done.stdout)


def parse_child_output(stdout: str) -> dict[str, Any]:
    """The JSON object a child printed last."""
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"child printed no result: {stdout[-2000:]!r}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


# --- statistics ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of ``values`` (``fraction`` 0.99 for p99)."""
    ordered = sorted(values)
    rank = math.ceil(round(fraction * len(ordered), 9))  # round: 0.99 * 200 is not 198.0
    return ordered[min(max(rank, 1), len(ordered)) - 1]


def lateness_summary(prefix: str, late_ms: Sequence[float], expected: int) -> dict[str, float]:
    """p50/p99/max start lateness (ms), how many started early, how many of ``expected`` ran."""
    if not late_ms:
        raise RuntimeError(f"{prefix}: nothing ran")
    return {
        f"{prefix}_runs": len(late_ms),
        f"{prefix}_missing": expected - len(late_ms),
        f"{prefix}_p50_ms": statistics.median(late_ms),
        f"{prefix}_p99_ms": percentile(late_ms, 0.99),
        f"{prefix}_max_ms": max(late_ms),
        f"{prefix}_early": sum(1 for value in late_ms if value < 0),
    }


def spread(start: datetime, count: int, seconds: float) -> list[datetime]:
    """``count`` instants evenly spaced over ``seconds`` from ``start``."""
    return [start + timedelta(seconds=seconds * index / count) for index in range(count)]


def ratio(ours: float, other: float) -> float:
    """``ours / other`` (0 when the other figure is 0)."""
    return ours / other if other else 0.0


def rate(count: int, seconds: float) -> float:
    """Items per second."""
    return count / seconds if seconds > 0 else 0.0


def chunked(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    """Consecutive slices of at most ``size`` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
