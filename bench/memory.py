"""Scenario 6: memory.

- Beanstalkd bytes per pending execution: a Beanstalkd of its own, its ``VmRSS`` read from
  ``/proc/<pid>/status`` before and after N delayed jobs with bodies exactly like ours
  (``stats`` has no memory field). Floor: the body's own size.
- Worker and watchdog resident sets, from the processes of scenarios 4, 2 and 5 in the same
  run. Floor: a bare Python process with psycopg and greenstalk connected.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from bench.common import SECRET, libpq_url, ratio, run_child
from bench.procfs import proc_status_kb
from postburner_py.queue.beanstalk import BeanstalkQueue, PutRequest
from postburner_py.queue.signing import JobBody, encode_body
from tests.servers import BeanstalkdServer

if TYPE_CHECKING:
    from bench.run import Context


def memory(ctx: Context, index: int) -> dict[str, float]:
    """Beanstalkd bytes per job, and each process's resident set against a bare process."""
    per_job, body = _beanstalkd_bytes_per_job(ctx.sizes.beanstalkd_jobs)
    bare = run_child(
        "bare",
        {"libpq_url": libpq_url(ctx.servers.pg.url), "beanstalkd": ctx.servers.beanstalkd.url},
    )["rss_mb"]
    worker = ctx.result("throughput", index)["c4_worker_rss_mb"]
    steady = ctx.result("steady", index)["rss_mb"]
    watchdog = ctx.result("peer", index)["ours_rss_mb"]
    return {
        "beanstalkd_jobs": ctx.sizes.beanstalkd_jobs,
        "beanstalkd_bytes_per_job": per_job,
        "body_bytes": body,
        "ratio_beanstalkd": ratio(per_job, body),
        "bare_rss_mb": bare,
        "worker_rss_mb": worker,
        "watchdog_rss_mb": watchdog,
        "watchdog_steady_rss_mb": steady,
        "ratio_worker": ratio(worker, bare),
        "ratio_watchdog": ratio(watchdog, bare),
    }


def _beanstalkd_bytes_per_job(count: int) -> tuple[float, int]:
    server = BeanstalkdServer()
    server.start()
    try:
        assert server.pid is not None
        queue = BeanstalkQueue(server.url, "bench")
        at = datetime.now(UTC) + timedelta(hours=1)
        requests = [
            PutRequest(
                body=encode_body(
                    JobBody("execution", 10_000_000 + n, f"schedule-{n}", at), SECRET.encode()
                ),
                queue=f"q{n % 4}",
                priority=65536,
                delay=3600,
                ttr=60,
            )
            for n in range(count)
        ]
        queue.ping()
        before = proc_status_kb("VmRSS", server.pid)
        queue.put_many(requests, connections=4)
        after = proc_status_kb("VmRSS", server.pid)
        queue.close()
    finally:
        server.close()
    return (after - before) * 1024 / count, len(requests[0].body)
