"""The grid cost benchmark runs (tiny sizes), so it cannot rot; the figures are in bench/."""

from __future__ import annotations

from bench import grid_cost


def test_the_grid_cost_benchmark_times_every_case_against_the_baseline_and_the_peers() -> None:
    rows = grid_cost.measure(points=5, rounds=1, baseline=grid_cost.load_baseline("HEAD"))

    assert [(row.expression, row.zone) for row in rows] == list(grid_cost.CASES)
    assert all(row.us_per_point["ours"] > 0 for row in rows)
    assert {"baseline", "croniter", "apscheduler3"} <= set(rows[0].us_per_point)
    assert "ours÷croniter" in grid_cost.table(rows)
