"""Health probes over HTTP, for Kubernetes probes, compose healthchecks and load balancers.

``postburner worker --health-port N`` and ``postburner watchdog --health-port N`` serve:

* ``GET /livez``: **liveness**, 200 while the process loop ticked recently (a worker's
  heartbeat loop and every serving thread, a watchdog's scheduler), 503 otherwise: restart
  the process. It never looks at the servers: a process that rides out an outage is alive.
* ``GET /readyz``: **readiness**, 200 while the database and Beanstalkd both answer, 503
  naming the one that does not: the process cannot do its work right now.

Each answer is a small JSON object, ``{"status": "ok" | "failing", "checks": {...}}``.
Requests are served one at a time on one daemon thread, so the probe holds one database
connection and one Beanstalkd connection at most, whatever the number of requests.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import TYPE_CHECKING

from sqlalchemy.exc import SQLAlchemyError

if TYPE_CHECKING:
    from postburner_py.app import Postburner

log = logging.getLogger("postburner_py.health")

#: Where the probe server listens unless told otherwise: this machine only (a compose
#: healthcheck runs inside the container). A kubelet reaches the pod's IP: ``0.0.0.0``.
DEFAULT_HEALTH_HOST = "127.0.0.1"
OK = "ok"
#: Seconds a probe request may take to arrive before the connection is dropped.
REQUEST_TIMEOUT = 5.0


@dataclass(frozen=True)
class Verdict:
    """One probe's answer: ``ok`` and, per check, ``"ok"`` or what is wrong."""

    ok: bool
    checks: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, checks: dict[str, str]) -> Verdict:
        """Healthy when every check says ``ok``."""
        return cls(all(value == OK for value in checks.values()), checks)

    def as_json(self) -> bytes:
        status = "ok" if self.ok else "failing"
        return json.dumps({"status": status, "checks": self.checks}).encode()


Probe = Callable[[], Verdict]


class Pulse:
    """When a process loop last ticked: alive while the last tick is at most ``within``
    seconds old, or while it is busy in one unit of work for at most ``busy_within``.

    ``tick()`` is one float store, cheap enough for a hot loop; readers see the latest.
    """

    def __init__(
        self,
        within: float,
        *,
        busy_within: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.within = within
        self.busy_within = max(within, busy_within or within)
        self._monotonic = monotonic
        self._last = monotonic()
        self._busy_since: float | None = None

    def tick(self) -> None:
        """The loop came round."""
        self._last = self._monotonic()

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Around one long unit of work (a watchdog pass): ticks before and after it."""
        self.tick()
        self._busy_since = self._last
        try:
            yield
        finally:
            self._busy_since = None
            self.tick()

    def check(self) -> str:
        """``ok``, or why the loop looks stuck."""
        now = self._monotonic()
        busy_since = self._busy_since
        if busy_since is not None:
            if now - busy_since <= self.busy_within:
                return OK
            return f"busy in one unit of work for {now - busy_since:.0f} s"
        if now - self._last <= self.within:
            return OK
        return f"the loop last ticked {now - self._last:.0f} s ago (limit {self.within:.0f} s)"


def servers_ready(pb: Postburner) -> Verdict:
    """Readiness: the database answers one query and Beanstalkd one command."""
    return Verdict.of({"database": _database(pb), "beanstalkd": _beanstalkd(pb)})


def _database(pb: Postburner) -> str:
    try:
        with pb.engine.connect() as connection:
            pb.store.ping(connection)
    except SQLAlchemyError as exc:
        return f"unreachable: {pb.settings.redact(_first_line(exc))}"
    return OK


def _beanstalkd(pb: Postburner) -> str:
    return OK if pb.queue.ping() else "unreachable"


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


@dataclass(frozen=True)
class HealthOptions:
    """Where a process serves its probes (``--health-port``, ``--health-host``)."""

    port: int
    host: str = DEFAULT_HEALTH_HOST

    def serve(self, liveness: Probe, readiness: Probe) -> HealthServer:
        """Bind and start serving; the caller closes the returned server."""
        return HealthServer(liveness, readiness, host=self.host, port=self.port).start()


class HealthServer:
    """Serves ``/livez`` (``liveness``) and ``/readyz`` (``readiness``) on ``host:port``.

    :meth:`start` binds (an error if the port is taken) and serves on a daemon thread;
    :meth:`close` stops it. ``port`` 0 picks a free port (see :attr:`port`).
    """

    def __init__(self, liveness: Probe, readiness: Probe, *, host: str, port: int) -> None:
        self.routes = {"/livez": liveness, "/readyz": readiness}
        self.server = HTTPServer((host, port), _handler(self.routes))
        self.server.timeout = REQUEST_TIMEOUT
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> HealthServer:
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="postburner-health", daemon=True
        )
        self._thread.start()
        host = self.server.server_address[0]
        log.info("health probes on http://%s:%d/livez and /readyz", host, self.port)
        return self

    def close(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
        self.server.server_close()


def _handler(routes: dict[str, Probe]) -> type[BaseHTTPRequestHandler]:
    class ProbeHandler(BaseHTTPRequestHandler):
        timeout = REQUEST_TIMEOUT

        def do_GET(self) -> None:
            probe = routes.get(self.path.split("?", 1)[0])
            if probe is None:
                self._answer(404, b'{"status": "unknown path: try /livez or /readyz"}')
                return
            try:
                verdict = probe()
            except Exception as exc:  # a probe that breaks is a failing probe, not a 500
                verdict = Verdict(False, {"probe": f"error: {_first_line(exc)}"})
            self._answer(200 if verdict.ok else 503, verdict.as_json())

        def _answer(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("probe %s", format % args)

    return ProbeHandler
