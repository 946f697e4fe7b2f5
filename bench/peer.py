"""Scenario 5: against APScheduler 3 (``SQLAlchemyJobStore`` on the same PostgreSQL).

- *create*: APScheduler adds N cron jobs to a running (paused) scheduler, one ``add_job``
  each; we create N cron schedules with their first executions queued, two ways: a bulk
  INSERT then a watchdog pass in a fresh watchdog process, and ORM objects added to one
  session with one commit (its hook runs one set-based pass).
- *lateness*: APScheduler (``BackgroundScheduler``, same job store) runs one job every 50 ms
  for 10 s; each job records its own start against its scheduled time. Ours: the one-off
  jobs of scenario 3 in the same run (same pattern; lateness from the job history).
- *memory*: resident set of each scheduler process holding N jobs: APScheduler after its
  first wake-up with the jobs in its store; ours, a watchdog process after a pass over N
  schedules. APScheduler's in-memory job store is measured too, for scale.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bench.common import (
    bulk_insert_schedules,
    healthy_rows,
    lateness_summary,
    ratio,
    run_child,
    spread,
)
from postburner_py import Schedule

if TYPE_CHECKING:
    from bench.run import Context

#: Seconds an APScheduler child needs to start, on top of the usual lead time.
APS_START = 1.0


def peer(ctx: Context, index: int) -> dict[str, float]:
    """Creation time, start lateness and memory: ours against APScheduler's."""
    count = ctx.sizes.peer_jobs
    rows = healthy_rows(count, datetime.now(UTC), intervals=False)
    result: dict[str, float] = {"jobs": count}
    result.update(_apscheduler_create(ctx, index, rows))
    result.update(_ours_bulk(ctx, index, rows))
    result.update(_ours_orm(ctx, index, rows))
    result.update(_apscheduler_lateness(ctx, index))
    ours = ctx.result("precision", index)
    for name in ("p50_ms", "p99_ms", "max_ms", "early"):
        result[f"ours_{name}"] = ours[f"oneoff_spread_{name}"]
    result.update(
        ratio_create_bulk=ratio(result["ours_bulk_s"], result["aps_add_s"]),
        ratio_create_orm=ratio(result["ours_orm_s"], result["aps_add_s"]),
        ratio_p50=ratio(result["ours_p50_ms"], result["aps_p50_ms"]),
        ratio_p99=ratio(result["ours_p99_ms"], result["aps_p99_ms"]),
        ratio_rss=ratio(result["ours_rss_mb"], result["aps_rss_mb"]),
    )
    return result


def _apscheduler_create(ctx: Context, index: int, rows: list[dict[str, Any]]) -> dict[str, float]:
    name = f"bench_aps{index}"
    url = ctx.servers.fresh_database(name)
    payload = {"crons": [row["cron"] for row in rows], "zones": [row["timezone"] for row in rows]}
    stored = run_child(
        "apscheduler_add",
        {**payload, "url": url, "paused": True, "settle": ctx.sizes.settle},
        ctx.sizes.child_timeout,
    )
    in_memory = run_child(
        "apscheduler_add", {**payload, "paused": True, "settle": ctx.sizes.settle}
    )
    ctx.servers.drop_database(name)
    if stored["jobs"] != len(rows) or in_memory["jobs"] != len(rows):
        raise RuntimeError(f"APScheduler holds {stored['jobs']} and {in_memory['jobs']} jobs")
    return {
        "aps_add_s": stored["seconds"],
        "aps_rss_mb": stored["rss_mb"],
        "aps_memory_store_add_s": in_memory["seconds"],
        "aps_memory_store_rss_mb": in_memory["rss_mb"],
    }


def _ours_bulk(ctx: Context, index: int, rows: list[dict[str, Any]]) -> dict[str, float]:
    """Bulk INSERT here, then a fresh watchdog process's first pass queues them."""
    name = f"bench_peerb{index}"
    url = ctx.servers.fresh_database(name)
    pb = ctx.servers.postburner(url, name)
    started = time.perf_counter()
    bulk_insert_schedules(pb.engine, rows)
    inserted = time.perf_counter() - started
    pb.dispose()
    watchdog = run_child(
        "watchdog_memory", {"url": url, "beanstalkd": ctx.servers.beanstalkd.url, "namespace": name}
    )
    ctx.servers.drop_database(name)
    if watchdog["created"] != len(rows):
        raise RuntimeError(f"the watchdog pass created {watchdog['created']} of {len(rows)}")
    return {
        "ours_bulk_s": inserted + watchdog["first_pass_s"],
        "ours_rss_mb": watchdog["rss_mb"],
        "ours_peak_rss_mb": watchdog["peak_rss_mb"],
    }


def _ours_orm(ctx: Context, index: int, rows: list[dict[str, Any]]) -> dict[str, float]:
    """``Schedule`` objects in one session, one commit (the hook queues them)."""
    name = f"bench_peero{index}"
    url = ctx.servers.fresh_database(name)
    pb = ctx.servers.postburner(url, name)
    started = time.perf_counter()
    with pb.session() as session:
        session.add_all(Schedule(**row) for row in rows)
        session.commit()
    elapsed = time.perf_counter() - started
    queued = sum(
        int((pb.queue.stats_tube(f"q{n}") or {}).get("current-jobs-delayed", 0)) for n in range(4)
    )
    pb.dispose()
    ctx.servers.drop_database(name)
    if queued != len(rows):
        raise RuntimeError(f"ORM create: {queued} of {len(rows)} queued")
    return {"ours_orm_s": elapsed}


def _apscheduler_lateness(ctx: Context, index: int) -> dict[str, float]:
    name = f"bench_apsl{index}"
    url = ctx.servers.fresh_database(name)
    start = datetime.now(UTC).timestamp() + APS_START + ctx.sizes.lead
    due = [
        at.timestamp()
        for at in spread(
            datetime.fromtimestamp(start, UTC), ctx.sizes.spread, ctx.sizes.spread_seconds
        )
    ]
    child = run_child("apscheduler_lateness", {"url": url, "due": due, "grace": ctx.sizes.grace})
    ctx.servers.drop_database(name)
    summary = lateness_summary("aps", child["lateness_ms"], len(due))
    return {key: value for key, value in summary.items() if key != "aps_runs"}
