"""Run every benchmark scenario and write bench/RESULTS.md and bench/results.json.

    python bench/run.py            # the full run (a few minutes)
    python bench/run.py --smoke    # tiny sizes, one run: checks the harness works
    python bench/run.py --only materialize,steady --runs 1 --out bench-out

Starts its own PostgreSQL and Beanstalkd. See bench/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.common import Servers

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Sizes:
    """How much work each scenario does, and how many times it is repeated."""

    runs: int = 3
    materialize: int = 10_000
    steady: int = 100_000
    spread: int = 200
    spread_seconds: float = 10.0
    burst: int = 1_000
    #: Seconds between creating the precision jobs and the first one being due.
    lead: float = 3.0
    #: Jobs per concurrency per run: the issue's size.
    throughput: int = 20_000
    enqueue_at: int = 1_000
    peer_jobs: int = 10_000
    beanstalkd_jobs: int = 50_000
    child_timeout: float = 900.0
    #: Seconds after the last due instant before a lateness measurement gives up waiting.
    grace: float = 60.0
    #: Seconds the peer scheduler runs after its jobs were added, before its memory is read.
    settle: float = 1.0


SMOKE = Sizes(
    runs=1,
    materialize=200,
    steady=1_000,
    spread=10,
    spread_seconds=0.5,
    burst=20,
    lead=0.5,
    throughput=100,
    enqueue_at=20,
    peer_jobs=200,
    beanstalkd_jobs=2_000,
    child_timeout=120.0,
    grace=15.0,
    settle=0.2,
)


@dataclass
class Context:
    """What a scenario run can use: the servers, the sizes, the results so far."""

    servers: Servers
    sizes: Sizes
    results: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    _steady: dict[str, Any] | None = None

    def result(self, scenario: str, index: int) -> dict[str, float]:
        """Run ``index`` of an earlier scenario (scenarios declare what they need)."""
        return self.results[scenario][index]

    def steady_database(self) -> dict[str, Any]:
        """The database of M healthy schedules, built on first use (see ``build_steady``)."""
        if self._steady is None:
            from bench.materialize import build_steady

            self._steady = build_steady(self)
        return self._steady


Run = Callable[[Context, int], dict[str, float]]


@dataclass(frozen=True)
class Headline:
    """One figure of ours against the floor or peer: ``ratio`` is ours / theirs. ``label``
    may name sizes (``{spread}``): they are filled in from the run's :class:`Sizes`."""

    label: str
    ours: str
    other: str
    ratio: str
    unit: str
    better: str  # "higher" or "lower"


@dataclass(frozen=True)
class Scenario:
    """A named measurement repeated ``runs`` times (``title`` may name sizes too)."""

    name: str
    title: str
    module: str
    function: str
    peer: str
    headlines: tuple[Headline, ...]
    needs: tuple[str, ...] = ()

    def runner(self) -> Run:
        """The function that measures one run."""
        run: Run = getattr(importlib.import_module(self.module), self.function)
        return run


SCENARIOS = (
    Scenario(
        "materialize",
        "1. Materialize: one watchdog pass queues the first executions of {materialize:,} "
        "new schedules",
        "bench.materialize",
        "materialize",
        "floor: the same execution rows inserted with psycopg in batches of 2,000, plus the "
        "same puts with bare greenstalk (one connection, one round trip each)",
        (Headline("schedules queued per second", "per_s", "floor_per_s", "ratio", "/s", "higher"),),
    ),
    Scenario(
        "steady",
        "2. Steady pass: one watchdog pass over {steady:,} healthy schedules",
        "bench.materialize",
        "steady",
        "floor: the one grouped query that finds schedules without exactly one live future "
        "execution, with bare psycopg",
        (Headline("pass duration", "pass_s", "floor_s", "ratio", "s", "lower"),),
    ),
    Scenario(
        "precision",
        "3. Precision: start lateness of one worker process (concurrency 4)",
        "bench.worker_bench",
        "precision",
        "floor: bare greenstalk reservers (4 threads) committing one row per job with psycopg, "
        "same instants",
        (
            Headline(
                "p99, {spread} one-off jobs over {spread_seconds:g} s",
                "oneoff_spread_p99_ms",
                "floor_spread_p99_ms",
                "ratio_spread_p99",
                "ms",
                "lower",
            ),
            Headline(
                "p99, {burst:,} scheduled executions due in one second",
                "sched_burst_p99_ms",
                "floor_burst_p99_ms",
                "ratio_burst_p99",
                "ms",
                "lower",
            ),
        ),
    ),
    Scenario(
        "throughput",
        "4. Throughput: one worker process drains {throughput:,} one-off jobs due now",
        "bench.worker_bench",
        "throughput",
        "floor: reserve + INSERT/commit + delete with bare greenstalk and psycopg, one thread",
        (
            Headline(
                "jobs per second, concurrency 1",
                "c1_per_s",
                "floor_per_s",
                "ratio_c1",
                "/s",
                "higher",
            ),
            Headline(
                "jobs per second, concurrency 4",
                "c4_per_s",
                "floor_per_s",
                "ratio_c4",
                "/s",
                "higher",
            ),
        ),
    ),
    Scenario(
        "peer",
        "5. Against APScheduler 3 (SQLAlchemyJobStore on the same PostgreSQL)",
        "bench.peer",
        "peer",
        "peer: APScheduler 3 BackgroundScheduler with SQLAlchemyJobStore",
        (
            Headline(
                "create {peer_jobs:,} cron jobs (ours: bulk INSERT + watchdog pass)",
                "ours_bulk_s",
                "aps_add_s",
                "ratio_create_bulk",
                "s",
                "lower",
            ),
            Headline(
                "create {peer_jobs:,} cron jobs (ours: ORM session, one commit)",
                "ours_orm_s",
                "aps_add_s",
                "ratio_create_orm",
                "s",
                "lower",
            ),
            Headline(
                "start lateness p50, {spread} jobs over {spread_seconds:g} s",
                "ours_p50_ms",
                "aps_p50_ms",
                "ratio_p50",
                "ms",
                "lower",
            ),
            Headline(
                "start lateness p99, {spread} jobs over {spread_seconds:g} s",
                "ours_p99_ms",
                "aps_p99_ms",
                "ratio_p99",
                "ms",
                "lower",
            ),
            Headline(
                "scheduler process RSS with {peer_jobs:,} jobs",
                "ours_rss_mb",
                "aps_rss_mb",
                "ratio_rss",
                "MiB",
                "lower",
            ),
        ),
        needs=("precision",),
    ),
    Scenario(
        "memory",
        "6. Memory",
        "bench.memory",
        "memory",
        "floors: the job body's size; a bare Python process with psycopg and greenstalk connected",
        (
            Headline(
                "Beanstalkd bytes per pending job, {beanstalkd_jobs:,} jobs; floor: body size",
                "beanstalkd_bytes_per_job",
                "body_bytes",
                "ratio_beanstalkd",
                "B",
                "lower",
            ),
            Headline(
                "worker RSS, concurrency 4; floor: bare process",
                "worker_rss_mb",
                "bare_rss_mb",
                "ratio_worker",
                "MiB",
                "lower",
            ),
            Headline(
                "watchdog RSS after passes over {peer_jobs:,} schedules; floor: bare process",
                "watchdog_rss_mb",
                "bare_rss_mb",
                "ratio_watchdog",
                "MiB",
                "lower",
            ),
        ),
        needs=("throughput", "steady", "peer"),
    ),
)
BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}


def selected(names: list[str] | None) -> list[Scenario]:
    """The scenarios asked for plus the ones they need, in their fixed order."""
    wanted = set(names or BY_NAME)
    unknown = wanted - set(BY_NAME)
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    pending = list(wanted)
    while pending:
        for need in BY_NAME[pending.pop()].needs:
            if need not in wanted:
                wanted.add(need)
                pending.append(need)
    return [scenario for scenario in SCENARIOS if scenario.name in wanted]


def measure(scenarios: list[Scenario], sizes: Sizes, out: Path, smoke: bool) -> dict[str, Any]:
    """Run each scenario ``sizes.runs`` times; write the report after each one."""
    from bench.common import Servers
    from bench.procfs import cpu_jiffies, steal_percent
    from bench.report import Report

    report = Report(sizes=sizes, smoke=smoke)
    with Servers() as servers:
        report.describe_servers(servers)
        ctx = Context(servers, sizes)
        for scenario in scenarios:
            run = scenario.runner()
            for index in range(sizes.runs):
                started, cpu_before = time.perf_counter(), cpu_jiffies()
                figures = run(ctx, index)
                figures["machine_steal_pct"] = steal_percent(cpu_before, cpu_jiffies())
                ctx.results.setdefault(scenario.name, []).append(figures)
                elapsed = time.perf_counter() - started
                print(
                    f"  {scenario.name} run {index + 1}/{sizes.runs}: {elapsed:.1f} s",
                    file=sys.stderr,
                )
            print(report.add(scenario, ctx.results[scenario.name]), flush=True)
            report.write(out, complete=False)
    report.write(out, complete=True)
    return report.data


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one run (seconds)")
    parser.add_argument("--runs", type=int, help="repetitions of each scenario (default 3)")
    parser.add_argument("--only", help="comma-separated scenarios: " + ",".join(BY_NAME))
    parser.add_argument("--out", type=Path, default=ROOT / "bench", help="where the results go")
    for name in ("throughput", "steady", "materialize", "peer_jobs"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, help=f"override sizes.{name}")
    return parser.parse_args(argv)


def sizes_of(args: argparse.Namespace) -> Sizes:
    """The default or smoke sizes with the command line's overrides."""
    sizes = SMOKE if args.smoke else Sizes()
    overrides = {
        name: getattr(args, name)
        for name in ("runs", "throughput", "steady", "materialize", "peer_jobs")
        if getattr(args, name) is not None
    }
    return dataclasses.replace(sizes, **overrides)


def _importable_from_root() -> None:
    """Run as ``python bench/run.py``, the script's folder heads sys.path (where our module
    names could shadow others): put the repository there instead, for ``bench`` and ``tests``."""
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [entry for entry in sys.path if not entry or Path(entry).resolve() != Path(here)]
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Entry point; returns what was written to results.json."""
    _importable_from_root()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    scenarios = selected(args.only.split(",") if args.only else None)
    args.out.mkdir(parents=True, exist_ok=True)
    return measure(scenarios, sizes_of(args), args.out, args.smoke)


if __name__ == "__main__":
    main()
