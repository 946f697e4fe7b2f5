"""The fault soak (``bench/soak.py``), short: the same code as the full soak with small
parameters and faults at fixed offsets, against real processes and servers.

Lateness is reported, never asserted: on a loaded machine it is noise; duplicates, lost
occurrences and a wrong end state are not.
"""

from __future__ import annotations

from pathlib import Path

from bench.soak import SoakConfig, run_soak
from tests.test_bench_smoke import _require_servers

SHORT = SoakConfig(
    seconds=23.0,
    schedules=20,
    concurrency=16,
    watchdog_interval=1.0,
    forced=(
        (2.5, "kill_worker"),
        (6.0, "beanstalkd_restart"),
        (9.5, "postgres_stop"),
        (15.0, "skip"),
        (18.0, "edit"),
    ),
    postgres_stop_seconds=3.0,
    ttr=5,
    long_ms=3000,
    settle_max=30.0,
)


def test_a_short_fault_soak_starts_no_occurrence_twice_loses_none_and_ends_converged(
    tmp_path: Path,
) -> None:
    _require_servers()
    report = run_soak(SHORT, tmp_path / "soak")
    print(report.describe())
    assert [(fault.kind, fault.error) for fault in report.faults] == [
        (kind, None) for _, kind in SHORT.forced
    ]
    assert report.verdict.started > 0, report.describe()
    assert report.duplicates == 0, report.describe()
    assert report.lost == 0, report.describe()
    assert report.end_state == [], report.describe()
    assert report.ok, report.describe()
