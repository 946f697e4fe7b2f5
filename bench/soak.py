"""The fault soak: real processes and servers, faults every 20-40 s, then a verdict.

    python bench/soak.py --minutes 8                 # 300 schedules, the full soak
    python bench/soak.py --minutes 2 --schedules 50 --seed 7 --out soak-out

Starts its own PostgreSQL and Beanstalkd (binlog on), migrates, creates schedules firing
every 1-3 s, runs two ``postburner worker`` processes (concurrency 64) and two ``postburner
watchdog`` processes (interval 2 s), and injects faults: kill -9 of a worker or a watchdog,
Beanstalkd restarted with and without its binlog, PostgreSQL stopped for 10 s, an interval
changed, a queued occurrence skipped, a schedule disabled and enabled again. Then it stops
injecting, lets things settle, stops everything and checks, from the jobs' own records and
the database, that no occurrence started twice and none was lost, and that the end state is
one queued execution per enabled schedule (``bench/soak_checks.py``). Exit 1 if not.
See bench/README.md, "The fault soak".
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if __name__ == "__main__":  # run as a script: the repository, not bench/, heads sys.path
    sys.path[:] = [p for p in sys.path if p and Path(p).resolve() != ROOT / "bench"]
    sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402

from bench.soak_checks import (  # noqa: E402
    EndState,
    Facts,
    JobEvent,
    Kill,
    Verdict,
    Waiting,
    end_state_problems,
    judge,
    lateness,
)
from bench.soak_cluster import QUEUE, Members, Servers, wait_for_heartbeats  # noqa: E402
from bench.soak_faults import FAULT_KINDS, FaultInjector, FaultRecord, fault_plan  # noqa: E402
from bench.soak_schedules import Call, SoakSchedules  # noqa: E402
from postburner_py import Postburner, ScheduleExecution  # noqa: E402
from postburner_py.errors import SignatureError  # noqa: E402
from postburner_py.queue.signing import decode_body  # noqa: E402
from postburner_py.store.dispatch_log import DispatchRecord  # noqa: E402
from postburner_py.store.dispatch_records import NOT_RUN_STATUSES  # noqa: E402
from postburner_py.store.history import HistoryRecord  # noqa: E402
from postburner_py.store.models import LIVE_STATUSES, SUPERSEDED, Schedule  # noqa: E402

SETTLE_POLL = 2.0


@dataclass(frozen=True)
class SoakConfig:
    """What one soak does. ``forced`` (``(offset seconds, kind)`` pairs) replaces the
    random faults; otherwise one fault of ``kinds`` comes every ``fault_gap`` seconds."""

    seconds: float = 480.0
    schedules: int = 300
    seed: int = 1
    workers: int = 2
    concurrency: int = 64
    watchdogs: int = 2
    watchdog_interval: float = 2.0
    fault_gap: tuple[float, float] = (20.0, 40.0)
    kinds: tuple[str, ...] = FAULT_KINDS
    forced: tuple[tuple[float, str], ...] = ()
    postgres_stop_seconds: float = 10.0
    disable_seconds: tuple[float, float] = (3.0, 8.0)
    #: The schedules' TTR, so also their lease: a stall of the worker longer than this (a
    #: loaded machine) lets a live attempt's lease expire.
    ttr: int = 5
    long_permille: int = 20
    #: Long jobs take 0.5-1.0 times this: longer than the TTR, so a lease that is not kept
    #: alive while the job runs (a failed touch) expires mid-job.
    long_ms: int = 8000
    #: Schedules disabled once the faults end: the end state must show none of theirs.
    final_disabled: int = 2
    settle_max: float = 90.0
    strict: bool = False

    @property
    def settle_min(self) -> float:
        """Long enough for a take-over (TTR), the longest job and two watchdog passes."""
        return 2 * self.watchdog_interval + self.ttr + self.long_ms / 1000 + 2


@dataclass
class SoakReport:
    """The soak's figures; :attr:`ok` when nothing started twice, nothing was lost, no
    skipped occurrence ran and the end state is right."""

    config: dict[str, Any]
    verdict: Verdict
    lateness: dict[str, dict[str, float]]
    faults: list[FaultRecord]
    end_state: list[str]
    kills: list[Kill] = field(default_factory=list)
    #: The soak's calls on schedules (edit, skip, disable, enable), with their times.
    calls: list[Call] = field(default_factory=list)
    exit_codes: dict[str, int] = field(default_factory=dict)
    unparsed_records: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    run_dir: str = ""

    @property
    def duplicates(self) -> int:
        return len(self.verdict.duplicates)

    @property
    def lost(self) -> int:
        return len(self.verdict.lost)

    @property
    def violations(self) -> list[str]:
        found = list(self.verdict.violations)
        if self.end_state:
            found.append(f"end state: {len(self.end_state)} problem(s)")
        return found

    @property
    def ok(self) -> bool:
        return not self.violations

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "violations": self.violations,
            **self.verdict.as_dict(),
            "end_state_problems": self.end_state,
            "lateness": self.lateness,
            "faults": [fault.as_dict() for fault in self.faults],
            "kills": [asdict(kill) for kill in self.kills],
            "calls": [asdict(call) for call in self.calls],
            "exit_codes": self.exit_codes,
            "unparsed_records": self.unparsed_records,
            "seconds": self.seconds,
            "config": self.config,
            "run_dir": self.run_dir,
        }

    def describe(self) -> str:
        counts = self.verdict.as_dict()
        lines = [
            f"soak {'PASSED' if self.ok else 'FAILED'}: {'; '.join(self.violations) or 'ok'}",
            "occurrences expected {expected}: started {started}, missed-recorded "
            "{missed_recorded}, skipped {skipped}, dropped by a disable {dropped_by_disable}, "
            "lost {lost} (edge points {edge_points})".format(**counts),
            "starts {starts}: take-overs {takeovers}, duplicates {duplicates} "
            "{duplicates_by_kind}, re-runs after a kill between finish and commit "
            "{finish_window_reruns}".format(**counts),
            f"unexpected starts: {counts['unexpected_starts'] or 'none'}",
            f"end state: {'; '.join(self.end_state) or 'ok'}",
            "start lateness (ms, first starts, by due time):",
        ]
        for name, figures in self.lateness.items():
            lines.append(
                f"  {name:<26} n={figures['n']:<6} p50 {figures['p50_ms']:>9} "
                f"p99 {figures['p99_ms']:>9} max {figures['max_ms']:>9}"
            )
        lines.append("faults:")
        lines += [f"  {fault.describe()}" for fault in self.faults]
        for title, key in (
            ("duplicates", "duplicate_examples"),
            ("finish-window re-runs", "finish_window_examples"),
            ("lost", "lost_examples"),
            ("unexpected starts", "unexpected_examples"),
        ):
            if counts[key]:
                lines.append(f"{title} (first {len(counts[key])}):")
                lines += [f"  {example}" for example in counts[key]]
        lines.append(f"records and logs: {self.run_dir}")
        return "\n".join(lines)


def run_soak(config: SoakConfig, run_dir: Path | None = None) -> SoakReport:
    """Run one soak in ``run_dir`` (default: a new temporary directory, kept)."""
    run_dir = run_dir or Path(tempfile.mkdtemp(prefix="pb-soak-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(config.seed)
    servers = Servers()
    pb: Postburner | None = None
    members: Members | None = None
    clock = _Stopwatch()
    try:
        servers.start()
        pb = servers.postburner()
        members = Members(
            servers,
            run_dir,
            workers=config.workers,
            concurrency=config.concurrency,
            watchdogs=config.watchdogs,
            watchdog_interval=config.watchdog_interval,
        )
        members.start()
        wait_for_heartbeats(pb, config.watchdogs)
        clock.lap("startup")
        schedules = SoakSchedules(pb, rng, seed=config.seed, ttr=config.ttr)
        schedules.create(
            config.schedules, long_permille=config.long_permille, long_ms=config.long_ms
        )
        injector = FaultInjector(
            servers,
            members,
            schedules,
            rng,
            postgres_stop_seconds=config.postgres_stop_seconds,
            disable_seconds=config.disable_seconds,
        )
        phase_start = time.time()
        _inject(config, injector, rng)
        phase_end = datetime.now(UTC)
        clock.lap("faults")
        for _ in range(config.final_disabled):
            schedules.disable()
        facts, unparsed = _settle(config, pb, members, schedules, injector, phase_end)
        clock.lap("settle")
        codes = members.stop(members.watchdogs)
        codes.update(members.stop(members.workers))
        facts, unparsed = _facts(pb, members, schedules, injector, phase_end)
        state = read_end_state(pb, schedules)
        clock.lap("stop_and_check")
    finally:
        if members is not None:
            members.kill_all()
        if pb is not None:
            pb.dispose()
        servers.close()
    report = SoakReport(
        config=_config_dict(config),
        verdict=judge(facts, strict=config.strict),
        lateness=lateness(
            facts.events,
            [fault.window for fault in injector.log],
            phase_start=phase_start,
            phase_end=phase_end.timestamp(),
        ),
        faults=injector.log,
        kills=injector.kills,
        calls=schedules.calls,
        end_state=end_state_problems(state),
        exit_codes=codes,
        unparsed_records=unparsed,
        seconds=clock.laps,
        run_dir=str(run_dir),
    )
    (run_dir / "report.json").write_text(json.dumps(report.as_dict(), indent=2, default=str))
    return report


def _inject(config: SoakConfig, injector: FaultInjector, rng: random.Random) -> None:
    """The fault phase: each planned fault at its offset, then wait out the duration."""
    start = time.monotonic()
    plan = config.forced or tuple(
        fault_plan(rng, seconds=config.seconds, gap=config.fault_gap, kinds=config.kinds)
    )
    for offset, kind in plan:
        time.sleep(max(0.0, start + offset - time.monotonic()))
        record = injector.inject(kind, time.monotonic() - start)
        print(record.describe(), flush=True)
    time.sleep(max(0.0, start + config.seconds - time.monotonic()))


def _settle(
    config: SoakConfig,
    pb: Postburner,
    members: Members,
    schedules: SoakSchedules,
    injector: FaultInjector,
    phase_end: datetime,
) -> tuple[Facts, int]:
    """Wait ``settle_min``, then until every expected occurrence is accounted for (at most
    ``settle_max`` more seconds): late catch-ups and take-overs finish here."""
    time.sleep(config.settle_min)
    deadline = time.monotonic() + config.settle_max
    while True:
        facts, unparsed = _facts(pb, members, schedules, injector, phase_end)
        if not judge(facts).lost or time.monotonic() > deadline:
            return facts, unparsed
        time.sleep(SETTLE_POLL)


# --- what the records and the database say ---------------------------------------------------


def _facts(
    pb: Postburner,
    members: Members,
    schedules: SoakSchedules,
    injector: FaultInjector,
    phase_end: datetime,
) -> tuple[Facts, int]:
    events, unparsed = read_events(members.records_dir)
    facts = Facts(
        events=events,
        kills=list(injector.kills),
        segments=schedules.segments,
        phase_end=phase_end,
        skipped=set(schedules.skipped),
    )
    read_database(pb, schedules, facts)
    return facts, unparsed


def read_events(records_dir: Path) -> tuple[list[JobEvent], int]:
    """Every job record of every worker process; and how many lines did not parse (a kill
    can cut a process's last line short)."""
    events, unparsed = [], 0
    for path in sorted(records_dir.glob("*.jsonl")):
        for line in path.read_text(errors="replace").splitlines():
            try:
                events.append(JobEvent.from_record(json.loads(line)))
            except (ValueError, KeyError, TypeError):
                unparsed += 1
    return events, unparsed


def read_database(pb: Postburner, schedules: SoakSchedules, facts: Facts) -> None:
    """Missed occurrences, committed outcomes, and the occurrences a disable dropped."""
    with pb.session() as session:
        # Recorded as not run: missed, or turned away by the overlap policy while an earlier
        # occurrence (a killed worker's, until its TTR) held the schedule's running slot.
        missed = session.execute(
            select(DispatchRecord.key, DispatchRecord.fire_time).where(
                DispatchRecord.status.in_(NOT_RUN_STATUSES)
            )
        )
        facts.missed = {(key, fire_time) for key, fire_time in missed}
        done = session.execute(
            select(HistoryRecord.schedule_name, HistoryRecord.run_at, HistoryRecord.attempt).where(
                HistoryRecord.status == "completed", HistoryRecord.schedule_name.is_not(None)
            )
        )
        facts.committed = {(str(key), at, attempt) for key, at, attempt in done if at is not None}
        superseded = session.execute(
            select(
                ScheduleExecution.schedule_id,
                ScheduleExecution.run_at,
                ScheduleExecution.updated_at,
            ).where(ScheduleExecution.status == SUPERSEDED)
        ).all()
    facts.dropped = _dropped_by_disable(schedules, superseded)


def _dropped_by_disable(
    schedules: SoakSchedules, superseded: Sequence[Any]
) -> set[tuple[str, datetime]]:
    """Occurrences already due, not started, that one of the soak's disables superseded."""
    calls = [call for call in schedules.calls if call.action == "disable"]
    dropped = set()
    for schedule_id, run_at, updated_at in superseded:
        for call in calls:
            if (
                call.schedule_id == schedule_id
                and run_at <= call.t1
                and (call.t0 <= updated_at <= call.t1)
            ):
                dropped.add((call.key, run_at))
    return dropped


def read_end_state(pb: Postburner, schedules: SoakSchedules) -> EndState:
    """With every process stopped: per schedule the live executions nothing started or
    recorded missed, whether each one's job is in Beanstalkd, and the tube's job counts."""
    with pb.session() as session:
        enabled = dict(session.execute(select(Schedule.name, Schedule.enabled)).all())
        live = session.execute(
            select(
                Schedule.name,
                ScheduleExecution.id,
                ScheduleExecution.run_at,
                ScheduleExecution.beanstalk_job_id,
                ScheduleExecution.beanstalk_server_id,
            )
            .join(Schedule, Schedule.id == ScheduleExecution.schedule_id)
            .where(ScheduleExecution.status.in_(LIVE_STATUSES))
        ).all()
        known = set(session.execute(select(DispatchRecord.key, DispatchRecord.fire_time)).all())
    server_id = pb.queue.server_id()
    waiting: dict[str, list[Waiting]] = {}
    for name, execution_id, run_at, job_id, job_server in live:
        if (name, run_at) in known:
            continue
        found = job_server == server_id and _job_names(pb, job_id, execution_id)
        waiting.setdefault(name, []).append(Waiting(execution_id, run_at, found))
    stats = pb.queue.stats_tube(QUEUE) or {}
    tube = {
        state: int(stats.get(f"current-jobs-{state}", 0))
        for state in ("ready", "delayed", "reserved", "buried")
    }
    return EndState(enabled=enabled, waiting=waiting, tube=tube)


def _job_names(pb: Postburner, job_id: int | None, execution_id: int) -> bool:
    job = pb.queue.peek(job_id) if job_id is not None else None
    if job is None:
        return False
    try:
        body = decode_body(job.body, pb.secret())
    except SignatureError:
        return False
    return body.kind == "execution" and body.id == execution_id


# --- the command ---------------------------------------------------------------------------


class _Stopwatch:
    def __init__(self) -> None:
        self.last = time.monotonic()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.laps[name] = round(now - self.last, 1)
        self.last = now


def _config_dict(config: SoakConfig) -> dict[str, Any]:
    return asdict(config)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=8.0, help="fault phase (default 8)")
    parser.add_argument("--schedules", type=int, default=300, help="default 300")
    parser.add_argument("--seed", type=int, default=1, help="faults, schedules, job lengths")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--watchdogs", type=int, default=2)
    parser.add_argument("--watchdog-interval", type=float, default=2.0)
    parser.add_argument("--postgres-stop", type=float, default=10.0, help="seconds down")
    parser.add_argument("--ttr", type=int, default=5, help="the schedules' TTR (default 5)")
    parser.add_argument(
        "--kinds", default=",".join(FAULT_KINDS), help="fault kinds (comma-separated)"
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="count a re-run after a kill between a job's finish and its commit as a duplicate",
    )
    parser.add_argument("--out", type=Path, default=None, help="run directory (default: temp)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    kinds = tuple(kind.strip() for kind in args.kinds.split(",") if kind.strip())
    unknown = sorted(set(kinds) - set(FAULT_KINDS))
    if unknown:
        print(
            f"soak: error: unknown fault kind(s) {unknown}; known: {FAULT_KINDS}", file=sys.stderr
        )
        return 2
    config = SoakConfig(
        seconds=args.minutes * 60,
        schedules=args.schedules,
        seed=args.seed,
        workers=args.workers,
        concurrency=args.concurrency,
        watchdogs=args.watchdogs,
        watchdog_interval=args.watchdog_interval,
        postgres_stop_seconds=args.postgres_stop,
        ttr=args.ttr,
        kinds=kinds,
        strict=args.strict,
    )
    report = run_soak(config, args.out)
    print(report.describe())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
