"""Prometheus metrics of one watchdog (``docs/operations.md`` lists every series).

The pass counters (one per :class:`~postburner_py.schedules.chaining.PassReport` count:
created, missed, invalid, ...), each pass's duration and time, whether Beanstalkd answers,
and two views of the work waiting: Beanstalkd's jobs per tube and state (read after each
queue audit) and the database's live rows per queue (read after each reconcile pass).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge

from postburner_py.metrics import DEFAULT_METRICS_HOST, new_registry, serve_metrics
from postburner_py.queue.beanstalk import TUBE_STATES
from postburner_py.schedules.chaining import PassReport

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

__all__ = ["WatchdogMetrics"]


class WatchdogMetrics:
    """The series of one watchdog, in a registry of its own (:attr:`registry`)."""

    def __init__(self) -> None:
        self.registry: CollectorRegistry = new_registry()
        registry = self.registry
        self.counters = {
            name: Counter(
                f"postburner_watchdog_{name}", f"Watchdog count: {name}", registry=registry
            )
            for name in PassReport().counts()
        }
        self.duration = Gauge(
            "postburner_watchdog_pass_duration_seconds",
            "Duration of the last pass",
            ["kind"],
            registry=registry,
        )
        self.last_pass = Gauge(
            "postburner_watchdog_last_pass_timestamp_seconds",
            "Unix time of the last pass",
            ["kind"],
            registry=registry,
        )
        self.queue_up = Gauge(
            "postburner_watchdog_beanstalkd_up", "1 while Beanstalkd answers", registry=registry
        )
        self.invalid_schedules = Gauge(
            "postburner_watchdog_invalid_schedules",
            "Schedules the last reconcile pass could not plan (see postburner status)",
            registry=registry,
        )
        self.jobs = Gauge(
            "postburner_beanstalkd_jobs",
            "Jobs in Beanstalkd per queue and state (ready, delayed, reserved, buried)",
            ["queue", "state"],
            registry=registry,
        )
        self.live = Gauge(
            "postburner_live_executions",
            "Live rows in the database per queue: executions still to run and pending "
            "one-off jobs (kind execution or delayed)",
            ["queue", "kind"],
            registry=registry,
        )

    def observe(self, kind: str, report: PassReport, *, queue_up: bool) -> None:
        """Add a pass's counts."""
        for name, value in report.counts().items():
            self.counters[name].inc(value)
        self.duration.labels(kind).set(report.duration)
        self.last_pass.labels(kind).set(time.time())
        self.queue_up.set(1 if queue_up else 0)
        if kind == "reconcile":
            self.invalid_schedules.set(report.invalid)

    def observe_tubes(self, tubes: dict[str, dict[str, int]]) -> None:
        """Set the jobs per queue and state (Beanstalkd's ``stats-tube`` of each tube); a
        queue whose tube is gone is dropped."""
        self.jobs.clear()
        for queue, counts in tubes.items():
            for state in TUBE_STATES:
                self.jobs.labels(queue, state).set(counts.get(state, 0))

    def observe_live(self, counts: dict[tuple[str, str], int]) -> None:
        """Set the live rows per ``(kind, queue)``; a queue with none is dropped."""
        self.live.clear()
        for (kind, queue), count in counts.items():
            self.live.labels(queue, kind).set(count)

    def serve(self, port: int, host: str = DEFAULT_METRICS_HOST) -> WSGIServer:
        """Serve ``/metrics`` on ``host:port`` in a daemon thread; returns the HTTP server."""
        return serve_metrics(self.registry, port, host)
