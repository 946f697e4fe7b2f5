"""Beanstalkd adapter: every call postburner_py makes to Beanstalkd goes through this module.

Facts it is built on (DESIGN section 5):

* A greenstalk ``Client`` must not be shared between threads, so each thread gets its own
  connection; :meth:`BeanstalkQueue.close` closes all of them.
* A lost connection is replaced once, transparently, for commands that are safe to repeat
  (``put``, ``delete``, ``peek``, ``stats*``, ``kick``; a put whose reply was lost may land
  twice, which the dispatch gate makes harmless). Commands on a *reserved* job are bound to
  the connection that reserved it: after a reconnect that reservation is gone, so those raise
  :class:`~postburner_py.errors.QueueUnavailableError` instead of retrying.
* ``delay`` is whole seconds, counted from when the put reaches the server:
  :func:`delay_seconds` floors, less :data:`PUT_LEAD`, and the worker waits out the rest.
* Tubes are namespaced, ``<namespace>.<queue>``: one tube per queue, never one per schedule.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import struct
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

import greenstalk

from postburner_py.errors import (
    ConfigurationError,
    PayloadTooLargeError,
    PostburnerError,
    QueueUnavailableError,
    ScheduleValidationError,
)

#: Beanstalkd's default ``-z`` maximum job size in bytes.
MAX_JOB_SIZE = 65535
#: Longest tube name Beanstalkd accepts, in bytes.
MAX_TUBE_NAME = 200
DEFAULT_PORT = 11300
_MAX_UINT32 = 2**32 - 1
_TUBE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-+/;.$_()")
_SCHEMES = ("beanstalk", "beanstalkd")
#: Errors meaning the connection is unusable. Socket errors (reset, broken pipe, EOF,
#: timeout) are all ``OSError``; an unknown reply means the stream is out of step.
_CONNECTION_LOST = (OSError, greenstalk.UnknownResponseError)
#: Puts written before reading their replies; small enough that replies never fill a buffer.
_PIPELINE_WINDOW = 256
#: Items per connection below which another connection (and thread) costs more than it saves.
_ITEMS_PER_EXTRA_CONNECTION = 2000
#: The job states of a tube, as :meth:`BeanstalkQueue.queue_stats` counts them.
TUBE_STATES = ("ready", "delayed", "reserved", "buried")
_STATUS_OF_ERROR = {cls: status for status, cls in greenstalk.ERROR_RESPONSES.items()}

T = TypeVar("T")

_BEANSTALKD_LOST = "beanstalkd.lost"
_BEANSTALKD_RECOVERED = "beanstalkd.recovered"


class ReservationLostError(PostburnerError, LookupError):
    """``release``/``bury``/``touch`` named a job this connection does not hold.

    Its TTR expired, it was deleted, or it was reserved on a connection since lost.
    """


class QueueOutage:
    """Whether Beanstalkd answers, as seen by every thread of one process: the first thread
    to fail logs the outage once (WARNING, action ``beanstalkd.lost``), the first to succeed
    afterwards logs its end once (INFO, ``beanstalkd.recovered``), however many threads
    keep failing or reconnecting meanwhile. :meth:`reachable` is called after every
    successful reserve, so while all is well it reads one attribute."""

    def __init__(self, logger: logging.Logger, url: str) -> None:
        self._log = logger
        self._url = url
        self._lock = threading.Lock()
        self.down = False
        #: Failed calls of this outage, over all threads.
        self.failures = 0
        #: Outages seen so far.
        self.outages = 0

    def unreachable(self, error: BaseException) -> bool:
        """Record a failed call; True for the one that starts the outage (and logged it)."""
        with self._lock:
            self.failures += 1
            if self.down:
                return False
            self.down = True
            self.outages += 1
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        self._log.warning(
            "Beanstalkd at %s is unreachable (%s); every thread retries with backoff",
            self._url,
            message,
            extra={"action": _BEANSTALKD_LOST, "beanstalkd": self._url, "error": message},
        )
        return True

    def _recover(self) -> int | None:
        """End the outage: its failed calls, or None if it had ended already."""
        with self._lock:
            if not self.down:
                return None
            self.down, failures, self.failures = False, self.failures, 0
            return failures

    def reachable(self) -> None:
        """Record a successful call; logs the end of an outage once."""
        if not self.down:
            return
        failures = self._recover()
        if failures is None:
            return  # another thread logged it since the check above
        self._log.info(
            "Beanstalkd at %s is reachable again after %d failed call(s)",
            self._url,
            failures,
            extra={"action": _BEANSTALKD_RECOVERED, "beanstalkd": self._url, "failures": failures},
        )


@dataclass(frozen=True)
class QueuedJob:
    """A job as Beanstalkd returns it."""

    id: int
    body: bytes


@dataclass(frozen=True)
class PutRequest:
    """One job for :meth:`BeanstalkQueue.put_many`."""

    body: bytes
    queue: str
    priority: int
    delay: int
    ttr: int


def parse_beanstalkd_url(url: str) -> tuple[str, int]:
    """``beanstalk://host:port`` (or ``beanstalkd://``) to ``(host, port)``; default port 11300."""
    try:
        parts = urlsplit(url)
        port = parts.port or DEFAULT_PORT
    except ValueError as exc:
        raise ConfigurationError(f"beanstalkd_url: {url!r} is not a valid URL ({exc})") from None
    if parts.scheme not in _SCHEMES or not parts.hostname or parts.path not in ("", "/"):
        raise ConfigurationError(
            f"beanstalkd_url: {url!r} must look like beanstalk://127.0.0.1:11300"
        )
    return parts.hostname, port


#: How long after ``now`` a put may reach Beanstalkd and still make its job ready by
#: ``run_at``. Beanstalkd counts a delay from when the put arrives, and a caller's ``now`` is
#: read before it: a pass reads it once for thousands of pipelined puts, ``enqueue_at`` before
#: a commit. Without the lead, a ``now`` read just before a whole second away from ``run_at``
#: made every job of that pass ready tens of milliseconds late.
PUT_LEAD = timedelta(milliseconds=100)


def delay_seconds(run_at: datetime, now: datetime) -> int:
    """Whole seconds of delay for a job due at ``run_at``, put at ``now``: ``run_at - now``
    less :data:`PUT_LEAD`, floored and never negative.

    Flooring makes the job ready up to a second (plus the lead) early; the worker waits out
    the rest, which is far more precise than Beanstalkd's one-second tick.
    """
    for field, value in (("run_at", run_at), ("now", now)):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ScheduleValidationError(field, f"{value.isoformat()} is naive; pass aware")
    return max(0, (run_at - now - PUT_LEAD) // timedelta(seconds=1))


def _tube_problem(name: str) -> str | None:
    if not name:
        return "must not be empty"
    if not set(name) <= _TUBE_CHARS:
        return "may only contain letters, digits and - + / ; . $ _ ( )"
    if name.startswith("-"):
        return "must not start with '-'"
    return None


def validate_queue_name(queue: str, *, namespace: str = "postburner") -> str:
    """Return ``queue`` if ``<namespace>.<queue>`` is a tube name Beanstalkd accepts."""
    problem = _tube_problem(queue) if isinstance(queue, str) else "must be a string"
    if problem is None and len(namespace) + 1 + len(queue) > MAX_TUBE_NAME:
        limit = MAX_TUBE_NAME - len(namespace) - 1
        problem = f"is {len(queue)} characters; with namespace {namespace!r} the limit is {limit}"
    if problem is not None:
        raise ScheduleValidationError("queue", f"{queue!r} {problem}")
    return queue


def _check_put(body: bytes, priority: int, delay: int, ttr: int) -> None:
    if len(body) > MAX_JOB_SIZE:
        raise PayloadTooLargeError(
            "body",
            f"is {len(body)} bytes; Beanstalkd accepts at most {MAX_JOB_SIZE}. "
            "Keep job bodies to ids; the database holds the arguments",
        )
    for field, value, low in (("priority", priority, 0), ("delay", delay, 0), ("ttr", ttr, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= _MAX_UINT32:
            raise ScheduleValidationError(
                field, f"{value!r} is not an integer {low}..{_MAX_UINT32}"
            )


def _refusal(status: bytes, detail: str = "") -> Exception:
    """Our error for a reply Beanstalkd gives when it will not take a job."""
    if status == b"JOB_TOO_BIG":
        return PayloadTooLargeError("body", "is larger than this Beanstalkd's -z max-job-size")
    return QueueUnavailableError(f"Beanstalkd refused the command: {status.decode()} {detail}")


class _Connection:
    """One socket, its greenstalk client, and the tube state already set on it."""

    def __init__(self, address: tuple[str, int], timeout: float) -> None:
        sock = socket.create_connection(address, timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        # A Python socket with a timeout polls before every send and recv: twice the system
        # calls, each one a release and re-acquisition of the GIL. The kernel enforces the
        # same timeouts on a blocking socket (a late reply raises an OSError all the same).
        sock.settimeout(None)
        _set_kernel_timeout(sock, socket.SO_SNDTIMEO, timeout)
        _set_kernel_timeout(sock, socket.SO_RCVTIMEO, timeout)
        self.sock = sock
        self.timeout = timeout
        self.receive_timeout = timeout
        self.client: greenstalk.Client[bytes] = greenstalk.Client(sock, encoding=None)
        # Replies to pipelined puts are read here. Sharing the socket with greenstalk's own
        # reader is safe: Beanstalkd only ever answers, so between commands both are empty.
        self.replies = sock.makefile("rb")
        self.using = greenstalk.DEFAULT_TUBE
        self.watching = frozenset({greenstalk.DEFAULT_TUBE})
        self.closed = False

    def allow_wait(self, seconds: float) -> None:
        """Let a reply take ``seconds`` (a reserve's own timeout) beyond the usual timeout.
        Only ever raised, so a worker alternating 0 and 1 s reserves sets it once."""
        needed = seconds + self.timeout
        if needed > self.receive_timeout:
            _set_kernel_timeout(self.sock, socket.SO_RCVTIMEO, needed)
            self.receive_timeout = needed

    def use(self, tube: str) -> None:
        if tube != self.using:
            self.client.use(tube)
            self.using = tube

    def watch(self, tubes: frozenset[str]) -> None:
        if tubes == self.watching:
            return
        for tube in tubes - self.watching:
            self.client.watch(tube)
        for tube in self.watching - tubes:
            self.client.ignore(tube)
        self.watching = tubes

    def put_pipelined(
        self, items: Sequence[PutRequest], tubes: Sequence[str], ids: list[int]
    ) -> None:
        """Put ``items``, appending each id to ``ids`` as its reply arrives.

        A caller whose connection breaks midway knows from ``len(ids)`` which items landed.
        Any failure leaves unread replies behind, so the connection is closed.
        """
        try:
            for start in range(0, len(items), _PIPELINE_WINDOW):
                end = start + _PIPELINE_WINDOW
                self._put_window(items[start:end], tubes[start:end], ids)
        except BaseException:
            self.close()
            raise

    def _put_window(
        self, items: Sequence[PutRequest], tubes: Sequence[str], ids: list[int]
    ) -> None:
        wire = bytearray()
        expected: list[bytes] = []
        for item, tube in zip(items, tubes, strict=True):
            if tube != self.using:
                wire += b"use %b\r\n" % tube.encode("ascii")
                expected.append(b"USING")
                self.using = tube
            wire += b"put %d %d %d %d\r\n%b\r\n" % (
                item.priority,
                item.delay,
                item.ttr,
                len(item.body),
                item.body,
            )
            expected.append(b"INSERTED")
        self.sock.sendall(wire)
        for status in expected:
            value = self._reply(status)
            if status == b"INSERTED":
                ids.append(int(value))

    def delete_then_reserve(self, job_ids: Sequence[int], seconds: int) -> QueuedJob | None:
        """Delete ``job_ids`` (gone already is no error) and reserve, in one round trip.

        Any failure leaves unread replies behind, so the connection is closed.
        """
        wire = b"".join(b"delete %d\r\n" % job_id for job_id in job_ids)
        try:
            self.sock.sendall(wire + b"reserve-with-timeout %d\r\n" % seconds)
            for _ in job_ids:
                status, _, value = self._line().partition(b" ")
                if status not in (b"DELETED", b"NOT_FOUND"):
                    raise _refusal(status, value.decode(errors="replace"))
            return self._reserved_job()
        except BaseException:
            self.close()
            raise

    def _reserved_job(self) -> QueuedJob | None:
        status, _, value = self._line().partition(b" ")
        if status in (b"TIMED_OUT", b"DEADLINE_SOON"):
            return None
        if status != b"RESERVED":
            raise _refusal(status, value.decode(errors="replace"))
        job_id, size = (int(part) for part in value.split())
        data = self.replies.read(size + 2)
        if len(data) != size + 2 or not data.endswith(b"\r\n"):
            raise ConnectionError("Beanstalkd closed the connection mid-job")
        return QueuedJob(job_id, data[:-2])

    def _line(self) -> bytes:
        line = self.replies.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("Beanstalkd closed the connection")
        return line[:-2]

    def _reply(self, expected: bytes) -> bytes:
        status, _, value = self._line().partition(b" ")
        if status != expected:
            raise _refusal(status, value.decode(errors="replace"))
        return value

    def close(self) -> None:
        self.closed = True
        # shutdown wakes a thread blocked in reserve on this socket; close alone does not.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.replies.close()
        self.client.close()


class BeanstalkQueue:
    """Beanstalkd as postburner_py uses it: namespaced tubes, one connection per thread.

    Safe to share between threads. After :meth:`close`, the next call reconnects.
    """

    def __init__(
        self, url: str, namespace: str = "postburner", *, connect_timeout: float = 5.0
    ) -> None:
        problem = _tube_problem(namespace)
        if problem is not None:
            raise ConfigurationError(f"namespace: {namespace!r} {problem}")
        self.url = url
        self.namespace = namespace
        self._address = parse_beanstalkd_url(url)
        self._timeout = connect_timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: set[_Connection] = set()
        self._tube_sets: dict[tuple[str, ...], frozenset[str]] = {}

    def __repr__(self) -> str:
        return f"BeanstalkQueue(url={self.url!r}, namespace={self.namespace!r})"

    def tube(self, queue: str) -> str:
        """The namespaced tube of ``queue``: ``<namespace>.<queue>``."""
        return f"{self.namespace}.{validate_queue_name(queue, namespace=self.namespace)}"

    # -- producing ---------------------------------------------------------------------

    def put(self, body: bytes, *, queue: str, priority: int, delay: int, ttr: int) -> int:
        """Put one job into ``queue``'s tube; return its id."""
        _check_put(body, priority, delay, ttr)
        tube = self.tube(queue)

        def op(conn: _Connection) -> int:
            conn.use(tube)
            try:
                return conn.client.put(body, priority=priority, delay=delay, ttr=ttr)
            except greenstalk.BeanstalkdError as exc:
                raise _refusal(_STATUS_OF_ERROR.get(type(exc), b"ERROR")) from None

        return self._call(op)

    def put_at(
        self,
        body: bytes,
        *,
        queue: str,
        priority: int,
        run_at: datetime,
        now: datetime,
        ttr: int,
    ) -> int:
        """Put one job that becomes ready at ``run_at`` (floored to whole seconds from ``now``)."""
        delay = delay_seconds(run_at, now)
        return self.put(body, queue=queue, priority=priority, delay=delay, ttr=ttr)

    def put_many(self, items: Sequence[PutRequest], *, connections: int = 1) -> list[int]:
        """Put every item, pipelined; return the ids in the order of ``items``.

        Everything is validated before the first byte is sent. Large batches are split into
        contiguous chunks put in parallel over up to ``connections`` connections.
        """
        for item in items:
            _check_put(item.body, item.priority, item.delay, item.ttr)
        tubes = [self.tube(item.queue) for item in items]
        parts = max(1, min(connections, len(items) // _ITEMS_PER_EXTRA_CONNECTION))
        if parts == 1:
            return self._put_batch(items, tubes)
        size = math.ceil(len(items) / parts)
        starts = range(0, len(items), size)
        with ThreadPoolExecutor(len(starts), thread_name_prefix="postburner-put") as pool:
            results = pool.map(
                lambda start: self._put_and_hang_up(
                    items[start : start + size], tubes[start : start + size]
                ),
                starts,
            )
            return [job_id for chunk in results for job_id in chunk]

    def _put_batch(self, items: Sequence[PutRequest], tubes: Sequence[str]) -> list[int]:
        ids: list[int] = []

        def op(conn: _Connection) -> list[int]:
            # A retry resumes after the items whose ids already came back.
            conn.put_pipelined(items[len(ids) :], tubes[len(ids) :], ids)
            return ids

        return self._call(op)

    def _put_and_hang_up(self, items: Sequence[PutRequest], tubes: Sequence[str]) -> list[int]:
        """Put a chunk from a short-lived pool thread, then close that thread's connection."""
        try:
            return self._put_batch(items, tubes)
        finally:
            self._discard(getattr(self._local, "conn", None))

    # -- inspecting and cancelling -----------------------------------------------------

    def delete(self, job_id: int) -> bool:
        """Delete a job; False when it is gone or reserved by another connection."""

        def op(conn: _Connection) -> bool:
            try:
                conn.client.delete(job_id)
            except greenstalk.NotFoundError:
                return False
            return True

        return self._call(op)

    def peek(self, job_id: int) -> QueuedJob | None:
        """The job's body, or None when Beanstalkd has no such job."""

        def op(conn: _Connection) -> QueuedJob | None:
            try:
                job = conn.client.peek(job_id)
            except greenstalk.NotFoundError:
                return None
            return QueuedJob(job.id, job.body)

        return self._call(op)

    def stats_job(self, job_id: int) -> dict[str, Any] | None:
        """``stats-job`` (tube, state, time-left, ...), or None when there is no such job."""
        return self._call(lambda conn: _or_none(lambda: dict(conn.client.stats_job(job_id))))

    def stats_tube(self, queue: str) -> dict[str, Any] | None:
        """``stats-tube`` of ``queue``'s tube, or None while the tube does not exist."""
        tube = self.tube(queue)
        return self._call(lambda conn: _or_none(lambda: dict(conn.client.stats_tube(tube))))

    def queues_on_server(self) -> list[str]:
        """The queues of this namespace that have a tube on the server now (``list-tubes``),
        sorted: where jobs may wait although no schedule names the queue."""
        prefix = f"{self.namespace}."
        tubes = self._call(lambda conn: list(conn.client.tubes()))
        return sorted(str(tube)[len(prefix) :] for tube in tubes if str(tube).startswith(prefix))

    def queue_stats(self) -> dict[str, dict[str, int]]:
        """Per queue of this namespace whose tube exists: its jobs by state (``ready``,
        ``delayed``, ``reserved``, ``buried``). One ``list-tubes`` and a ``stats-tube`` per
        tube of the namespace."""
        prefix = f"{self.namespace}."

        def op(conn: _Connection) -> dict[str, dict[str, int]]:
            found: dict[str, dict[str, int]] = {}
            for tube in conn.client.tubes():
                if tube.startswith(prefix):
                    stats = _tube_counts(conn.client, tube)
                    if stats is not None:
                        found[tube[len(prefix) :]] = stats
            return found

        return self._call(op)

    def stats(self) -> dict[str, Any]:
        """Server-wide ``stats``."""
        return self._call(lambda conn: dict(conn.client.stats()))

    def server_id(self) -> str:
        """The server's random ``id``: it changes when Beanstalkd restarts."""
        return str(self.stats()["id"])

    def kick_job(self, job_id: int) -> bool:
        """Make a delayed or buried job ready now; False when there is no such job."""

        def op(conn: _Connection) -> bool:
            try:
                conn.client.kick_job(job_id)
            except greenstalk.NotFoundError:
                return False
            return True

        return self._call(op)

    def ping(self) -> bool:
        """True when the server answers a command."""
        try:
            self._call(lambda conn: conn.client.using())
        except QueueUnavailableError:
            return False
        return True

    # -- consuming (bound to the reserving connection: never retried) ------------------

    def reserve(
        self, queues: Sequence[str], timeout: float, *, delete_first: Sequence[int] = ()
    ) -> QueuedJob | None:
        """Reserve the next ready job from ``queues``' tubes, or None after ``timeout`` seconds.

        Beanstalkd counts whole seconds, so ``timeout`` is rounded up (0 polls once).
        ``DEADLINE_SOON`` (a job this thread holds is about to time out) also returns None.
        ``delete_first``: jobs this thread reserved, deleted in the same round trip (one that
        is gone already is no error); after a lost connection, which of them were deleted is
        unknown.
        """
        tubes = self._watched_tubes(tuple(queues))
        seconds = max(0, math.ceil(timeout))

        def op(conn: _Connection) -> QueuedJob | None:
            conn.watch(tubes)
            conn.allow_wait(seconds)
            if delete_first:
                return conn.delete_then_reserve(delete_first, seconds)
            try:
                job = conn.client.reserve(seconds)
            except (greenstalk.TimedOutError, greenstalk.DeadlineSoonError):
                return None
            return QueuedJob(job.id, job.body)

        return self._call(op, retry=False)

    def _watched_tubes(self, queues: tuple[str, ...]) -> frozenset[str]:
        """The tubes of ``queues``, validated once per distinct list (reserve is hot)."""
        tubes = self._tube_sets.get(queues)
        if tubes is None:
            tubes = frozenset(self.tube(queue) for queue in queues)
            if not tubes:
                raise ValueError("reserve needs at least one queue")
            self._tube_sets[queues] = tubes
        return tubes

    def release(self, job_id: int, *, priority: int, delay: int) -> None:
        """Put a job this thread reserved back, ready after ``delay`` seconds."""
        job = greenstalk.Job(job_id, b"")
        self._reserved(lambda client: client.release(job, priority=priority, delay=delay), job_id)

    def bury(self, job_id: int, *, priority: int) -> None:
        """Bury a job this thread reserved."""
        job = greenstalk.Job(job_id, b"")
        self._reserved(lambda client: client.bury(job, priority=priority), job_id)

    def touch(self, job_id: int) -> None:
        """Restart the TTR of a job this thread reserved."""
        job = greenstalk.Job(job_id, b"")
        self._reserved(lambda client: client.touch(job), job_id)

    def toucher(self, job_id: int) -> Callable[[], None]:
        """A touch of ``job_id`` on this thread's connection (the one that reserved it), for
        another thread to call while this one is busy and does not use its connection (the
        worker runs a job inline while the lease keeper touches it). The two threads must
        never use the connection at once; a connection lost during the touch is closed, so
        this thread reconnects on its next call."""
        conn = self._connection()
        job = greenstalk.Job(job_id, b"")

        def touch() -> None:
            try:
                conn.client.touch(job)
            except greenstalk.NotFoundError:
                raise ReservationLostError(
                    f"job {job_id} is not reserved by its connection any more"
                ) from None
            except _CONNECTION_LOST as exc:
                conn.close()
                raise QueueUnavailableError(f"Beanstalkd at {self.url}: {exc}") from exc

        return touch

    def _reserved(self, command: Callable[[greenstalk.Client[bytes]], None], job_id: int) -> None:
        def op(conn: _Connection) -> None:
            try:
                command(conn.client)
            except greenstalk.NotFoundError:
                raise ReservationLostError(
                    f"job {job_id} is not reserved by this thread's connection"
                ) from None

        self._call(op, retry=False)

    # -- connections -------------------------------------------------------------------

    def close(self) -> None:
        """Close every thread's connection. A later call opens a new one."""
        with self._lock:
            connections, self._connections = self._connections, set()
        for conn in connections:
            conn.close()

    def _call(self, op: Callable[[_Connection], T], *, retry: bool = True) -> T:
        """Run ``op`` on this thread's connection; on connection loss, once more on a new one."""
        error: BaseException | None = None
        for _attempt in range(2 if retry else 1):
            conn = None
            try:
                conn = self._connection()
                return op(conn)
            except _CONNECTION_LOST as exc:
                self._discard(conn)
                error = exc
        raise QueueUnavailableError(f"Beanstalkd at {self.url} is unavailable: {error}") from error

    def _connection(self) -> _Connection:
        conn: _Connection | None = getattr(self._local, "conn", None)
        if conn is not None and conn.closed:
            self._discard(conn)  # closed by close() or by a failed pipeline
        if conn is None or conn.closed:
            conn = _Connection(self._address, self._timeout)
            self._local.conn = conn
            with self._lock:
                self._connections.add(conn)
        return conn

    def _discard(self, conn: _Connection | None) -> None:
        if conn is None:
            return
        with self._lock:
            self._connections.discard(conn)
        conn.close()
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None


def _set_kernel_timeout(sock: socket.socket, option: int, seconds: float) -> None:
    whole = int(seconds)
    timeval = struct.pack("ll", whole, int((seconds - whole) * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, option, timeval)


def _tube_counts(client: greenstalk.Client[bytes], tube: str) -> dict[str, int] | None:
    """A tube's jobs by state, or None when it vanished since it was listed."""
    try:
        stats: dict[str, Any] = dict(client.stats_tube(tube))
    except greenstalk.NotFoundError:
        return None
    return {state: int(stats.get(f"current-jobs-{state}", 0)) for state in TUBE_STATES}


def _or_none(read: Callable[[], T]) -> T | None:
    try:
        return read()
    except greenstalk.NotFoundError:
        return None
