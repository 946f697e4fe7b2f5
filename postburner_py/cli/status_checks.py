"""What makes ``postburner status`` unhealthy: one line per problem, each saying what to do.

:func:`find_problems` reads a collected report (:func:`postburner_py.cli.status.collect_status`)
and never touches a server, so every rule is a plain function of the report:

* a server that does not answer, or a database that is not migrated;
* an enabled schedule whose stored row cannot be planned;
* no live worker (no heartbeat within ``WORKER_STALE_AFTER``);
* a queue with ready jobs (Beanstalkd) or due occurrences (the database) that no live worker
  serves, or with enabled schedules and no live worker serving it;
* buried jobs in a queue;
* an enabled schedule whose last occurrence failed;
* no watchdog that passed within :data:`WATCHDOG_STALE_AFTER`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from postburner_py.worker.heartbeat import WORKER_STALE_AFTER

OK = "ok"
#: A watchdog whose last pass is older than this is reported stale (seconds).
WATCHDOG_STALE_AFTER = 300.0
Report = dict[str, Any]


def find_problems(report: Report) -> list[str]:
    """Every problem of ``report``, servers first; empty when all is well."""
    problems = _servers(report)
    if report["database"] != OK:
        return problems  # nothing below can be known without the tables
    for rule in _TABLE_RULES:
        problems += rule(report)
    return problems


def _servers(report: Report) -> list[str]:
    found = []
    if report["database"] != OK:
        found.append(
            f"database: {report['database']}; start it, or fix --database-url / "
            "POSTBURNER_DATABASE_URL"
        )
    if report["beanstalkd"] != OK:
        found.append(
            "Beanstalkd does not answer; queued jobs cannot be checked, put or run: start it, "
            "or fix --beanstalkd-url / POSTBURNER_BEANSTALKD_URL"
        )
    return found


def _invalid_schedules(report: Report) -> list[str]:
    return [
        f"schedule {item['name']!r} cannot be planned, nothing of it is queued: "
        f"{item['invalid']}; fix the row, or `postburner schedules disable {item['name']}`"
        for item in report["schedules"]
        if item["enabled"] and item.get("invalid")
    ]


def _live_workers(report: Report) -> list[dict[str, Any]]:
    return [worker for worker in report["workers"] if worker["live"]]


def _no_live_worker(report: Report) -> list[str]:
    if _live_workers(report):
        return []
    seen = [worker["seconds_since_seen"] for worker in report["workers"]]
    last = f"the last heartbeat is {min(seen):.0f} s old" if seen else "no worker has reported"
    return [
        f"no live worker ({last}; a worker beats every few seconds and is live for "
        f"{WORKER_STALE_AFTER:.0f} s): nothing runs; start `postburner worker`"
    ]


def _unserved_queues(report: Report) -> list[str]:
    served = {name for worker in _live_workers(report) for name in worker["queues"]}
    scheduled = _enabled_schedules_by_queue(report)
    found = []
    for queue in sorted(set(report["queues"]) | set(report["due"]) | set(scheduled)):
        if queue in served:
            continue
        waiting = _waiting(report, queue)
        if waiting:
            found.append(f"queue `{queue}` has {waiting} and no worker serves it")
        elif scheduled.get(queue):
            found.append(
                f"queue `{queue}` has {_plural(scheduled[queue], 'enabled schedule')} "
                "and no worker serves it"
            )
        else:
            continue
        found[-1] += f"; start `postburner worker --queue {queue}`"
    return found


def _waiting(report: Report, queue: str) -> str:
    ready = report["queues"].get(queue, {}).get("ready", 0)
    due = report["due"].get(queue, 0)
    parts = [_plural(ready, "ready job")] if ready else []
    parts += [_plural(due, "due occurrence")] if due else []
    return " and ".join(parts)


def _enabled_schedules_by_queue(report: Report) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in report["schedules"]:
        if item["enabled"] and not item.get("paused_at") and not item.get("invalid"):
            counts[item["queue"]] = counts.get(item["queue"], 0) + 1
    return counts


def _buried(report: Report) -> list[str]:
    return [
        f"queue `{queue}` has {_plural(counts['buried'], 'buried job')} (refused or given up "
        "by a worker; never retried on their own): see `postburner history --status failed`, "
        "then kick or delete them in Beanstalkd"
        for queue, counts in report["queues"].items()
        if counts.get("buried")
    ]


def _failed_last_occurrence(report: Report) -> list[str]:
    found = []
    for item in report["schedules"]:
        dispatch = item["last_dispatch"]
        if not item["enabled"] or dispatch is None or dispatch["status"] != "failed":
            continue
        run = item["last_run"]
        error = f": {str(run['error']).splitlines()[0][:120]}" if run and run["error"] else ""
        found.append(
            f"schedule {item['name']!r}: its last occurrence ({dispatch['fire_time']}) "
            f"failed{error}; see `postburner dispatches --key {item['name']}` and "
            "`postburner history --status failed`"
        )
    return found


def _no_live_watchdog(report: Report) -> list[str]:
    if any(not beat["stale"] for beat in report["watchdogs"]):
        return []
    return [
        f"no watchdog has passed in the last {WATCHDOG_STALE_AFTER:.0f} s; queued jobs still "
        "fire, but nothing repairs drift or lost jobs: start `postburner watchdog`"
    ]


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


_TABLE_RULES: tuple[Callable[[Report], list[str]], ...] = (
    _invalid_schedules,
    _no_live_worker,
    _unserved_queues,
    _buried,
    _failed_last_occurrence,
    _no_live_watchdog,
)
