"""What the worker's and the watchdog's Prometheus metrics share: a registry per process
object, the time buckets, and the ``/metrics`` HTTP server.

Each :class:`~postburner_py.worker.metrics.WorkerMetrics` and
:class:`~postburner_py.watchdog.metrics.WatchdogMetrics` has its own registry (never the
global default), so several live in one process (tests do) and each serves only its own
series. The ``_created`` series are off for the whole process (prometheus_client keeps that
switch global): they double the series for nothing a dashboard uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, disable_created_metrics, start_http_server

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

__all__ = ["DEFAULT_METRICS_HOST", "TIME_BUCKETS", "new_registry", "serve_metrics"]

#: Where a metrics server listens unless told otherwise: this machine only. A container
#: (or a scraper on another host) needs ``0.0.0.0``, set explicitly.
DEFAULT_METRICS_HOST = "127.0.0.1"

#: Histogram buckets for lateness and durations, in seconds: 1 ms to 1 h.
TIME_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    1800.0,
    3600.0,
)


def new_registry() -> CollectorRegistry:
    """A registry of its own for one process object, with ``_created`` series off."""
    disable_created_metrics()  # type: ignore[no-untyped-call]
    return CollectorRegistry(auto_describe=True)


def serve_metrics(
    registry: CollectorRegistry, port: int, host: str = DEFAULT_METRICS_HOST
) -> WSGIServer:
    """Serve ``registry`` on ``http://host:port/metrics`` from a daemon thread; returns the
    server (``shutdown()`` and ``server_close()`` it to stop). Port 0 picks a free port
    (``server.server_port`` tells which)."""
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server
