"""The watchdog role: set-based repair passes, the queue audit, heartbeats and metrics.

``postburner_py.watchdog`` is the documented import path of :func:`run_watchdog`,
:func:`tick` and :func:`watchdog_health`; the process lives in
:mod:`postburner_py.watchdog.process`.
"""

from postburner_py.watchdog.process import (
    PassReport,
    Retention,
    Watchdog,
    WatchdogHeartbeat,
    run_watchdog,
    tick,
    watchdog_health,
)

__all__ = [
    "PassReport",
    "Retention",
    "Watchdog",
    "WatchdogHeartbeat",
    "run_watchdog",
    "tick",
    "watchdog_health",
]
