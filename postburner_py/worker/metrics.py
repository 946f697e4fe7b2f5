"""Prometheus metrics of one worker process (``docs/operations.md`` lists every series).

Every attempt passes through here twice (start, finish), so the per-job work is a dictionary
lookup of label children bound once per queue (and schedule, with ``per_schedule``) and a
few increments: no label resolution, no string formatting.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from postburner_py.metrics import TIME_BUCKETS, new_registry
from postburner_py.worker.admission import Occurrence, Outcome

__all__ = ["FINISHED", "TURNED_AWAY", "UNKNOWN_QUEUE", "WorkerMetrics"]

#: How a run attempt can end (the ``outcome`` label of the finished series).
FINISHED = (Outcome.COMPLETED, Outcome.PARTIAL, Outcome.RETRYING, Outcome.FAILED)
#: Why a delivery did not run (the ``reason`` label of the turned-away series).
TURNED_AWAY = (
    Outcome.FENCED,
    Outcome.FORGED,
    Outcome.REFUSED,
    Outcome.EARLY,
    Outcome.DUPLICATE,
    Outcome.BUSY,
    Outcome.MISSED,
)
#: The queue label of a delivery whose row is not known (a forged body, a vanished row).
UNKNOWN_QUEUE = "unknown"


@dataclass(frozen=True, slots=True)
class _Bound:
    """The label children of one queue (and schedule): bound once, used per job."""

    started: Counter
    lateness: Histogram
    duration: Histogram
    finished: dict[Outcome, Counter]


class WorkerMetrics:
    """The series of one worker, in a registry of its own (:attr:`registry`).

    ``per_schedule`` adds a ``schedule`` label (the schedule's name, ``job:<id>`` for a
    one-off job) to the started, finished, lateness and duration series: one series per
    schedule, so keep it for deployments with few schedules.
    """

    def __init__(self, *, per_schedule: bool = False) -> None:
        self.per_schedule = per_schedule
        self.registry: CollectorRegistry = new_registry()
        labels = ("queue", "schedule") if per_schedule else ("queue",)
        registry = self.registry
        self.started = Counter(
            "postburner_worker_attempts_started",
            "Run attempts started (the job was called)",
            labels,
            registry=registry,
        )
        self.finished = Counter(
            "postburner_worker_attempts_finished",
            "Run attempts that returned or raised, by outcome",
            (*labels, "outcome"),
            registry=registry,
        )
        self.deliveries_turned_away = Counter(
            "postburner_worker_deliveries_turned_away",
            "Deliveries that did not run, by reason",
            ("queue", "reason"),
            registry=registry,
        )
        self.lateness = Histogram(
            "postburner_worker_start_lateness_seconds",
            "Seconds from run_at to the job's start",
            labels,
            buckets=TIME_BUCKETS,
            registry=registry,
        )
        self.duration = Histogram(
            "postburner_worker_run_duration_seconds",
            "Seconds a job ran",
            labels,
            buckets=TIME_BUCKETS,
            registry=registry,
        )
        self.running = Gauge(
            "postburner_worker_running_jobs", "Jobs running now", registry=registry
        )
        self.takeovers = Counter(
            "postburner_worker_lease_takeovers",
            "Occurrences taken over from a worker whose lease expired",
            ("queue",),
            registry=registry,
        )
        self._bound: dict[tuple[str, ...], _Bound] = {}
        self._away: dict[tuple[str, Outcome], Counter] = {}

    def attempt_started(self, occurrence: Occurrence, lateness: float) -> None:
        """An attempt's job is about to be called, ``lateness`` seconds after its run_at."""
        bound = self._bound_for(occurrence)
        bound.started.inc()
        bound.lateness.observe(lateness if lateness > 0 else 0.0)
        self.running.inc()

    def attempt_finished(self, occurrence: Occurrence, outcome: Outcome, seconds: float) -> None:
        """An attempt's job returned or raised (or ran past its timeout) after ``seconds``."""
        bound = self._bound_for(occurrence)
        bound.finished[outcome].inc()
        bound.duration.observe(seconds)
        self.running.dec()

    def turned_away(self, outcome: Outcome, occurrence: Occurrence | None) -> None:
        """A delivery ended without running, for ``outcome``'s reason."""
        queue = occurrence.queue if occurrence is not None else UNKNOWN_QUEUE
        child = self._away.get((queue, outcome))
        if child is None:
            child = self._away[(queue, outcome)] = self.deliveries_turned_away.labels(
                queue, str(outcome)
            )
        child.inc()

    def taken_over(self, occurrence: Occurrence) -> None:
        """This delivery took the occurrence over from an attempt whose lease expired."""
        self.takeovers.labels(occurrence.queue).inc()

    def _bound_for(self, occurrence: Occurrence) -> _Bound:
        key = (occurrence.queue, occurrence.key) if self.per_schedule else (occurrence.queue,)
        bound = self._bound.get(key)
        if bound is None:
            # A race between two threads binds the same children twice: harmless.
            bound = self._bound[key] = _Bound(
                started=self.started.labels(*key),
                lateness=self.lateness.labels(*key),
                duration=self.duration.labels(*key),
                finished={
                    outcome: self.finished.labels(*key, str(outcome)) for outcome in FINISHED
                },
            )
        return bound
