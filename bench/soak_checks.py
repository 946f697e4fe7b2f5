"""The fault soak's verdict (``bench/soak.py``), from the jobs' own records and what the
database and Beanstalkd hold at the end. Pure: every input is a value, nothing is read here.

An *occurrence* is ``(key, run_at)``: a schedule name and one point of its grid.

- **Repeats.** The first start of an occurrence is its run. A later start is a *take-over*
  only when every earlier attempt's process was SIGKILLed by the soak (after that attempt
  started, before this one did) without recording its finish. Everything else is a
  *duplicate*: a start while an earlier attempt's process was alive and had not finished
  (``overlap``), after an earlier attempt finished in a process the soak did not kill
  (``after_finish``), or after an attempt that finished and committed its outcome before
  its process was killed (``after_commit``). One case sits between: the process was killed
  after its job recorded its finish but before the worker committed the outcome
  (``finish_window``). To the database that is a worker lost mid-job, so it is counted
  apart and, unless ``strict``, not as a duplicate.
- **Lost.** Each :class:`Segment` is a stretch of one schedule's life with one definition,
  enabled. Each of its grid points up to the end of the fault phase must have started, be
  recorded as not run in the dispatch log (``missed``, or ``skipped_overlap``: the schedule's
  overlap policy turned it away while an earlier occurrence, a killed worker's until its TTR,
  still held the running slot), be skipped by the soak (``skip()`` returned True),
  or have been dropped, not yet started, by the soak's own disable (its row superseded by
  that call). Otherwise it is lost.
- **Unexpected starts.** A start of a point no segment allows: a skipped occurrence (a
  violation: ``skip()`` promised it would not run), or a point after its schedule was
  disabled or changed (reported: an occurrence admitted ahead of its ``run_at``).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from postburner_py.timegrid.grid import TimeGrid

Occurrence = tuple[str, datetime]

#: How a later start of an occurrence is judged against one earlier attempt, worst last.
TAKEOVER, FINISH_WINDOW = "takeover", "finish_window"
DUPLICATE_KINDS = ("after_finish", "overlap", "after_commit")
_SEVERITY = {TAKEOVER: 0, FINISH_WINDOW: 1, "after_finish": 2, "overlap": 2, "after_commit": 2}
#: Seconds after a fault during which starts count as "after" it for lateness.
AFTER_FAULT_SECONDS = 30.0
MAX_EXAMPLES = 10


@dataclass(frozen=True)
class JobEvent:
    """One line a job wrote: its start or its finish, in process ``pid``."""

    kind: str
    key: str
    run_at: datetime
    attempt: int
    pid: int
    mono: float
    wall: float

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> JobEvent:
        """From the JSON object :func:`postburner_py.bench_jobs.soak_job` writes."""
        return cls(
            kind=str(record["e"]),
            key=str(record["key"]),
            run_at=datetime.fromisoformat(str(record["run_at"])).astimezone(UTC),
            attempt=int(record["attempt"]),
            pid=int(record["pid"]),
            mono=float(record["mono"]),
            wall=float(record["wall"]),
        )

    @property
    def occurrence(self) -> Occurrence:
        return (self.key, self.run_at)


@dataclass(frozen=True)
class Kill:
    """The soak SIGKILLed process ``pid``; ``mono`` is when it was known dead."""

    role: str
    pid: int
    mono: float


@dataclass(frozen=True)
class Segment:
    """One schedule enabled with one definition: grid points ``p`` with ``start < p <= end``
    are expected (``end`` None: still enabled when the soak stopped); the call that ended it
    ran until ``edge``, and points in ``(end, edge]`` may or may not have run."""

    key: str
    grid: TimeGrid
    start: datetime
    end: datetime | None = None
    edge: datetime | None = None
    closed_by: str = ""

    def expected(self, until: datetime) -> Iterator[datetime]:
        """The points that must be accounted for, up to ``until`` (the end of the faults)."""
        stop = until if self.end is None else min(self.end, until)
        return self.grid.between(self.start, stop) if stop > self.start else iter(())

    def allows(self, run_at: datetime) -> bool:
        """True when a start of ``run_at`` is in order for this segment."""
        last = self.edge or self.end
        return (
            run_at > self.start
            and (last is None or run_at <= last)
            and (self.grid.is_on_grid(run_at))
        )


@dataclass(frozen=True)
class Repeat:
    """A later start ``then`` of an occurrence, judged ``kind`` against the earlier start
    ``earlier`` (of all earlier attempts, the one that makes the worst case)."""

    kind: str
    earlier: JobEvent
    then: JobEvent

    def describe(self) -> str:
        return (
            f"{self.kind}: {self.then.key} @ {self.then.run_at.isoformat()} attempt "
            f"{self.earlier.attempt} pid {self.earlier.pid} then attempt {self.then.attempt} "
            f"pid {self.then.pid} {self.then.mono - self.earlier.mono:+.2f}s later"
        )


@dataclass
class Facts:
    """Everything the verdict is drawn from."""

    events: list[JobEvent]
    kills: list[Kill]
    segments: list[Segment]
    #: The end of the fault phase: points after it are not counted.
    phase_end: datetime
    missed: set[Occurrence] = field(default_factory=set)
    skipped: set[Occurrence] = field(default_factory=set)
    dropped: set[Occurrence] = field(default_factory=set)
    #: ``(key, run_at, attempt)`` the history records as ``completed`` (the attempt's own
    #: outcome committed; a ``failed`` row may be a take-over closing a lost attempt).
    committed: set[tuple[str, datetime, int]] = field(default_factory=set)


@dataclass
class Verdict:
    """The counts of :func:`judge`, with examples of what went wrong."""

    expected: int = 0
    started: int = 0
    missed_recorded: int = 0
    skipped: int = 0
    dropped: int = 0
    edge_points: int = 0
    starts: int = 0
    lost: list[Occurrence] = field(default_factory=list)
    repeats: list[Repeat] = field(default_factory=list)
    unexpected: list[tuple[str, Occurrence]] = field(default_factory=list)
    strict: bool = False

    def repeats_of(self, *kinds: str) -> list[Repeat]:
        return [repeat for repeat in self.repeats if repeat.kind in kinds]

    @property
    def duplicates(self) -> list[Repeat]:
        kinds = (*DUPLICATE_KINDS, FINISH_WINDOW) if self.strict else DUPLICATE_KINDS
        return self.repeats_of(*kinds)

    @property
    def violations(self) -> list[str]:
        """Why the soak failed (empty: it passed)."""
        found = []
        if self.duplicates:
            found.append(f"{len(self.duplicates)} duplicate start(s)")
        if self.lost:
            found.append(f"{len(self.lost)} lost occurrence(s)")
        skipped_starts = [item for item in self.unexpected if item[0] == "skipped"]
        if skipped_starts:
            found.append(f"{len(skipped_starts)} start(s) of skipped occurrences")
        return found

    def as_dict(self) -> dict[str, Any]:
        by_kind: dict[str, int] = defaultdict(int)
        for repeat in self.repeats:
            by_kind[repeat.kind] += 1
        unexpected: dict[str, int] = defaultdict(int)
        for reason, _ in self.unexpected:
            unexpected[reason] += 1
        return {
            "expected": self.expected,
            "started": self.started,
            "missed_recorded": self.missed_recorded,
            "skipped": self.skipped,
            "dropped_by_disable": self.dropped,
            "edge_points": self.edge_points,
            "starts": self.starts,
            "takeovers": by_kind[TAKEOVER],
            "finish_window_reruns": by_kind[FINISH_WINDOW],
            "duplicates": len(self.duplicates),
            "duplicates_by_kind": {k: v for k, v in by_kind.items() if k in DUPLICATE_KINDS},
            "duplicate_examples": [r.describe() for r in self.duplicates[:MAX_EXAMPLES]],
            "finish_window_examples": [
                r.describe() for r in self.repeats_of(FINISH_WINDOW)[:MAX_EXAMPLES]
            ],
            "lost": len(self.lost),
            "lost_examples": [f"{k} @ {t.isoformat()}" for k, t in self.lost[:MAX_EXAMPLES]],
            "unexpected_starts": dict(unexpected),
            "unexpected_examples": [
                f"{reason}: {k} @ {t.isoformat()}" for reason, (k, t) in self.unexpected[:10]
            ],
        }


def judge(facts: Facts, *, strict: bool = False) -> Verdict:
    """Count what :class:`Facts` show; ``strict`` counts ``finish_window`` re-runs as
    duplicates too."""
    verdict = Verdict(strict=strict)
    starts = [event for event in facts.events if event.kind == "start"]
    verdict.starts = len(starts)
    verdict.repeats = find_repeats(facts.events, facts.kills, facts.committed)
    started = {event.occurrence for event in starts}
    _account(verdict, facts, started)
    verdict.unexpected = unexpected_starts(started, facts.segments, facts.skipped)
    return verdict


def _account(verdict: Verdict, facts: Facts, started: set[Occurrence]) -> None:
    seen: set[Occurrence] = set()
    for segment in facts.segments:
        for run_at in segment.expected(facts.phase_end):
            occurrence = (segment.key, run_at)
            if occurrence in seen:
                continue
            seen.add(occurrence)
            verdict.expected += 1
            if occurrence in started:
                verdict.started += 1
            elif occurrence in facts.skipped:
                verdict.skipped += 1
            elif occurrence in facts.missed:
                verdict.missed_recorded += 1
            elif occurrence in facts.dropped:
                verdict.dropped += 1
            else:
                verdict.lost.append(occurrence)
        verdict.edge_points += _edge_count(segment)
    verdict.lost.sort(key=lambda item: (item[1], item[0]))


def _edge_count(segment: Segment) -> int:
    if segment.end is None or segment.edge is None or segment.edge <= segment.end:
        return 0
    return sum(1 for _ in segment.grid.between(segment.end, segment.edge))


# --- repeats -------------------------------------------------------------------------------


def find_repeats(
    events: Iterable[JobEvent],
    kills: Sequence[Kill],
    committed: set[tuple[str, datetime, int]] | None = None,
) -> list[Repeat]:
    """Every start after the first of its occurrence, judged against the earlier attempts."""
    starts: dict[Occurrence, list[JobEvent]] = defaultdict(list)
    finishes: dict[tuple[Occurrence, int, int], JobEvent] = {}
    for event in events:
        if event.kind == "start":
            starts[event.occurrence].append(event)
        elif event.kind == "finish":
            finishes[(event.occurrence, event.pid, event.attempt)] = event
    killed_at = _kills_by_pid(kills)
    repeats = []
    for attempts in starts.values():
        attempts.sort(key=lambda event: event.mono)
        for index, later in enumerate(attempts[1:], start=1):
            judged = [
                Repeat(
                    _judge_pair(earlier, later, finishes, killed_at, committed or set()),
                    earlier,
                    later,
                )
                for earlier in attempts[:index]
            ]
            repeats.append(max(judged, key=lambda repeat: _SEVERITY[repeat.kind]))
    repeats.sort(key=lambda repeat: repeat.then.mono)
    return repeats


def _kills_by_pid(kills: Sequence[Kill]) -> dict[int, list[float]]:
    found: dict[int, list[float]] = defaultdict(list)
    for kill in kills:
        found[kill.pid].append(kill.mono)
    return found


def _judge_pair(
    earlier: JobEvent,
    later: JobEvent,
    finishes: Mapping[tuple[Occurrence, int, int], JobEvent],
    killed_at: Mapping[int, list[float]],
    committed: set[tuple[str, datetime, int]],
) -> str:
    finish = finishes.get((earlier.occurrence, earlier.pid, earlier.attempt))
    finished = finish is not None and finish.mono < later.mono
    killed = any(earlier.mono < moment < later.mono for moment in killed_at.get(earlier.pid, []))
    if not finished:
        return TAKEOVER if killed else "overlap"
    if not killed:
        return "after_finish"
    # Killed after its finish: a lost worker to the database, unless the outcome committed.
    committed_outcome = (earlier.key, earlier.run_at, earlier.attempt) in committed
    return "after_commit" if committed_outcome else FINISH_WINDOW


# --- starts nothing allowed -----------------------------------------------------------------


def unexpected_starts(
    started: Iterable[Occurrence], segments: Sequence[Segment], skipped: set[Occurrence]
) -> list[tuple[str, Occurrence]]:
    """Starts of points no segment allows, with the reason (``skipped``, ``after_disable``,
    ``after_edit``, ``off_grid``), oldest first."""
    by_key: dict[str, list[Segment]] = defaultdict(list)
    for segment in segments:
        by_key[segment.key].append(segment)
    found = []
    for occurrence in sorted(started, key=lambda item: (item[1], item[0])):
        key, run_at = occurrence
        if occurrence in skipped:
            found.append(("skipped", occurrence))
        elif not any(segment.allows(run_at) for segment in by_key[key]):
            found.append((_reason(by_key[key], run_at), occurrence))
    return found


def _reason(segments: Sequence[Segment], run_at: datetime) -> str:
    """``after_<call>`` when the point is on the grid of a segment that call had ended."""
    ended = [
        segment
        for segment in segments
        if segment.end is not None and segment.end < run_at and segment.grid.is_on_grid(run_at)
    ]
    if not ended:
        return "off_grid"
    return f"after_{max(ended, key=lambda segment: segment.start).closed_by or 'end'}"


# --- end state ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Waiting:
    """A live execution nothing has started or recorded missed: a schedule's next run."""

    execution_id: int
    run_at: datetime
    #: Its recorded Beanstalkd job exists on the current server and its body names it.
    job_found: bool


@dataclass
class EndState:
    """What the database and Beanstalkd hold once every process has stopped."""

    enabled: dict[str, bool]
    waiting: dict[str, list[Waiting]]
    #: Jobs in the soak's tube by state (``ready``, ``delayed``, ``reserved``, ``buried``).
    tube: dict[str, int]


def end_state_problems(state: EndState) -> list[str]:
    """Each enabled schedule has exactly one waiting execution, its job in Beanstalkd; a
    disabled one has none; the tube holds one job per enabled schedule and nothing else."""
    problems = []
    for key, enabled in sorted(state.enabled.items()):
        waiting = state.waiting.get(key, [])
        if not enabled and waiting:
            problems.append(f"{key} (disabled): {len(waiting)} live execution(s), want 0")
        elif enabled and len(waiting) != 1:
            problems.append(f"{key}: {len(waiting)} live execution(s) not started, want 1")
        elif enabled and not waiting[0].job_found:
            problems.append(f"{key}: execution {waiting[0].execution_id} has no job")
    jobs = sum(state.tube.values())
    want = sum(1 for enabled in state.enabled.values() if enabled)
    if jobs != want:
        problems.append(f"{jobs} job(s) in the tube {dict(state.tube)}, want {want}")
    for status in ("reserved", "buried"):
        if state.tube.get(status):
            problems.append(f"{state.tube[status]} {status} job(s) at the end")
    return problems


# --- lateness -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaultWindow:
    """A fault of ``kind`` from ``wall0`` to ``wall1`` (seconds since the epoch)."""

    kind: str
    wall0: float
    wall1: float

    def covers(self, instant: float) -> bool:
        return self.wall0 <= instant <= self.wall1 + AFTER_FAULT_SECONDS


def lateness(
    events: Iterable[JobEvent],
    windows: Sequence[FaultWindow],
    *,
    phase_start: float,
    phase_end: float,
) -> dict[str, dict[str, float]]:
    """Start lateness (ms) of each occurrence's first start, due in the fault phase: ``calm``
    (due outside every fault window) and ``after_<kind>`` (due within 30 s of a fault)."""
    first: dict[Occurrence, JobEvent] = {}
    for event in events:
        if event.kind == "start":
            known = first.get(event.occurrence)
            if known is None or event.mono < known.mono:
                first[event.occurrence] = event
    groups: dict[str, list[float]] = defaultdict(list)
    for event in first.values():
        due = event.run_at.timestamp()
        if not phase_start <= due <= phase_end:
            continue
        late_ms = (event.wall - due) * 1000
        kinds = {window.kind for window in windows if window.covers(due)}
        for kind in kinds or {"calm"}:
            groups[kind if kind == "calm" else f"after_{kind}"].append(late_ms)
    return {name: summarize(values) for name, values in sorted(groups.items())}


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Count, p50, p99 and max."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * 99 // 100))
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered), 1),
        "p99_ms": round(ordered[rank - 1], 1),
        "max_ms": round(ordered[-1], 1),
    }
