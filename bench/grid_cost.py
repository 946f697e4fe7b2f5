"""What one grid point costs: ``next_after`` chained over many points, against peers.

Standalone (no servers), from the repository root with the project's virtualenv::

    python bench/grid_cost.py                  # ~1 minute
    python bench/grid_cost.py --points 500 --rounds 3 --json grid-cost.json

For each expression and zone it times, interleaved round by round so load hits all alike:
this checkout's :class:`~postburner_py.timegrid.CronGrid`, the grid of a baseline commit
(``--baseline``, default the commit before the DST policy and the L/W/# extensions; loaded
from ``git show`` under another module name), croniter and APScheduler 3's ``CronTrigger``.
Each measures microseconds per point over ``--points`` successive points from a fixed start,
the median of ``--rounds`` rounds; the ratios are ours over theirs (lower is better).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
#: The last commit before issue 18's grid (DST policy, L/W/#).
DEFAULT_BASELINE = "9b00cd8"
START = datetime(2025, 1, 1, tzinfo=UTC)

#: (expression, zone): everyday shapes, DST zones, and the new syntax (ours only, where the
#: baseline or a peer cannot read it).
CASES: tuple[tuple[str, str], ...] = (
    ("*/15 * * * *", "UTC"),
    ("7 * * * *", "Europe/London"),
    ("30 2 * * *", "Europe/Prague"),
    ("0 9 * * 1-5", "America/New_York"),
    ("0 0 1 * *", "Australia/Sydney"),
    ("0 0 L * *", "Europe/Prague"),
    ("0 18 * * FRIL", "America/Santiago"),
    ("0 8 LW * *", "Pacific/Chatham"),
)

Chain = Callable[[int], float]


@dataclass
class Row:
    expression: str
    zone: str
    us_per_point: dict[str, float]

    def ratio(self, peer: str) -> float | None:
        ours, theirs = self.us_per_point.get("ours"), self.us_per_point.get(peer)
        return None if ours is None or theirs is None else ours / theirs


def load_baseline(ref: str) -> ModuleType | None:
    """The time grid of ``ref`` as a module of its own, or None when git cannot show it."""
    try:
        source = subprocess.run(
            ["git", "show", f"{ref}:postburner_py/timegrid/grid.py"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    spec = importlib.util.spec_from_loader("baseline_grid", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    exec(compile(source, f"{ref}:grid.py", "exec"), module.__dict__)
    return module


def _timed(step: Callable[[], object], points: int) -> float:
    begin = time.perf_counter()
    for _ in range(points):
        step()
    return (time.perf_counter() - begin) / points * 1e6


def grid_chain(module: Any, expression: str, zone: str) -> Chain | None:
    try:
        grid = module.CronGrid(expression, zone)
    except ValueError:
        return None

    def chain(points: int) -> float:
        state = [START]

        def step() -> None:
            state[0] = grid.next_after(state[0])

        return _timed(step, points)

    return chain


def croniter_chain(expression: str, zone: str) -> Chain | None:
    from croniter import croniter

    try:
        croniter(expression, START.astimezone(ZoneInfo(zone))).get_next(datetime)
    except (ValueError, KeyError, TypeError):
        return None

    def chain(points: int) -> float:
        iterator = croniter(expression, START.astimezone(ZoneInfo(zone)))
        return _timed(lambda: iterator.get_next(datetime), points)

    return chain


def apscheduler_chain(expression: str, zone: str) -> Chain | None:
    from apscheduler.triggers.cron import CronTrigger

    try:
        trigger = CronTrigger.from_crontab(expression, timezone=ZoneInfo(zone))
    except (ValueError, KeyError, TypeError):
        return None

    def chain(points: int) -> float:
        state: list[datetime | None] = [None]

        def step() -> None:
            now = state[0] or START
            state[0] = trigger.get_next_fire_time(state[0], now + (now - now).resolution)

        return _timed(step, points)

    return chain


def measure(points: int, rounds: int, baseline: ModuleType | None) -> list[Row]:
    """Microseconds per point for every case and implementation (median of the rounds)."""
    from postburner_py import timegrid

    rows = []
    for expression, zone in CASES:
        chains = {
            "ours": grid_chain(timegrid, expression, zone),
            "baseline": grid_chain(baseline, expression, zone) if baseline else None,
            "croniter": croniter_chain(expression, zone),
            "apscheduler3": apscheduler_chain(expression, zone),
        }
        present = {name: chain for name, chain in chains.items() if chain is not None}
        samples: dict[str, list[float]] = {name: [] for name in present}
        for _ in range(rounds):
            for name, chain in present.items():
                samples[name].append(chain(points))
        medians = {name: statistics.median(values) for name, values in samples.items()}
        rows.append(Row(expression, zone, medians))
    return rows


def table(rows: list[Row]) -> str:
    """The rows as a markdown table: µs per point and ours ÷ theirs."""
    lines = [
        "| expression | zone | ours µs | baseline µs | croniter µs | APScheduler 3 µs "
        "| ours÷baseline | ours÷croniter | ours÷APScheduler 3 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        figures = [_us(row.us_per_point.get(n)) for n in ("ours", "baseline", "croniter")]
        figures.append(_us(row.us_per_point.get("apscheduler3")))
        ratios = [_ratio(row.ratio(n)) for n in ("baseline", "croniter", "apscheduler3")]
        lines.append(f"| `{row.expression}` | {row.zone} | " + " | ".join(figures + ratios) + " |")
    return "\n".join(lines)


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"x{value:.2f}"


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=2000, help="points per chain")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="git ref to compare with")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    rows = measure(args.points, args.rounds, load_baseline(args.baseline))
    print(table(rows))
    if args.json:
        figures = [row.__dict__ for row in rows]
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return rows


if __name__ == "__main__":
    main()
