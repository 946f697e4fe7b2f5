"""The benchmark harness (``bench/run.py``) still runs: its smoke mode, end to end.

Tiny sizes and one run, written to a temporary directory (never over bench/RESULTS.md).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.servers import BeanstalkdServer, PostgresServer, ServerUnavailable

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("materialize", "steady", "precision", "throughput", "peer", "memory")
TIMEOUT = 300


def _require_servers() -> None:
    """The harness starts its own servers: skip without their binaries (fail under CI)."""
    try:
        for server in (PostgresServer(), BeanstalkdServer()):
            server.close()  # nothing was started: this removes the empty data directory
    except ServerUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{exc} (CI=true: a missing server is a failure)", pytrace=False)
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """One smoke run of the harness for every test here: its results.json and output folder."""
    _require_servers()
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads((out / "results.json").read_text()), out


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def test_smoke_run_completes_every_scenario(smoke_results: tuple[dict[str, Any], Path]) -> None:
    results, _out = smoke_results
    assert results["complete"] is True
    assert results["mode"] == "smoke"
    assert tuple(results["scenarios"]) == SCENARIOS


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_headline_has_ours_theirs_and_a_ratio(
    smoke_results: tuple[dict[str, Any], Path], name: str
) -> None:
    scenario = smoke_results[0]["scenarios"][name]
    assert scenario["headlines"]
    for headline in scenario["headlines"]:
        for side in ("ours", "other", "ratio"):
            figure = headline[side]
            assert all(_number(figure[k]) for k in ("median", "min", "max")), (side, figure)
            assert figure["min"] <= figure["median"] <= figure["max"]
        assert headline["ours"]["median"] > 0 and headline["other"]["median"] > 0, headline
    assert all(_number(value) for run in scenario["runs"] for value in run.values())


def test_nothing_starts_early_and_nothing_is_lost(
    smoke_results: tuple[dict[str, Any], Path],
) -> None:
    figures = {
        key: figure["median"]
        for scenario in smoke_results[0]["scenarios"].values()
        for key, figure in scenario["figures"].items()
    }
    early = {key: value for key, value in figures.items() if key.endswith("_early")}
    missing = {key: value for key, value in figures.items() if key.endswith("_missing")}
    assert early and set(early.values()) == {0}, early
    assert missing and set(missing.values()) == {0}, missing


def test_the_report_names_every_scenario_and_the_machine(
    smoke_results: tuple[dict[str, Any], Path],
) -> None:
    results, out = smoke_results
    report = (out / "RESULTS.md").read_text()
    for scenario in results["scenarios"].values():
        assert f"## {scenario['title']}" in report
        assert scenario["summary"].startswith(tuple(SCENARIOS))
    assert "load average" in report
    assert results["versions"]["PostgreSQL"] and results["versions"]["Beanstalkd"]
