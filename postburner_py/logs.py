"""Log output of the long-running processes: plain text or one JSON object per line.

Every line an operator may want to filter on carries a stable ``action`` key (the constants
below, documented in ``docs/operations.md``), and its facts as keys of their own: in JSON they
are fields of the line, in text the message already spells them out. Call sites on the hot
path check ``logger.isEnabledFor`` before they build those fields, so a level that is off
costs one comparison.

``configure_logging`` sets up the root logger for ``postburner worker``, ``watchdog`` and
``dev`` (``--log-format text|json``, env ``POSTBURNER_LOG_FORMAT``); a library user keeps
their own logging set-up and may use :class:`JsonFormatter` in it.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from typing import Any, TextIO

from pythonjsonlogger.json import JsonFormatter as _MaintainedJsonFormatter

__all__ = [
    "ACTIONS",
    "LOG_FORMATS",
    "JsonFormatter",
    "configure_logging",
    "parse_log_format",
]

#: The ``--log-format`` values.
LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Seconds between the writer thread's writes (see :func:`configure_logging`).
WRITE_INTERVAL = 0.1

# --- actions: the stable ``action`` key of a line ----------------------------------------------

#: An attempt starts (INFO): schedule, run_at, attempt, lateness, queue.
RUN_STARTED = "run.started"
#: An attempt ended well (INFO): also duration and outcome (completed, partial_success).
RUN_FINISHED = "run.finished"
#: An attempt raised (ERROR, with the traceback): outcome retrying or failed, retry_in.
RUN_FAILED = "run.failed"
#: An attempt ran past its timeout (ERROR): it is failed and its thread abandoned.
RUN_TIMED_OUT = "run.timed_out"
#: A delivery that does not run (INFO or worse): outcome fenced, forged, refused, missed.
DELIVERY_TURNED_AWAY = "delivery.turned_away"
#: A dead worker's attempt taken over by this one (WARNING).
LEASE_TAKEN_OVER = "lease.taken_over"
#: Beanstalkd stopped answering (WARNING), once per outage for the whole process.
BEANSTALKD_LOST = "beanstalkd.lost"
#: Beanstalkd answers again (INFO), once per outage.
BEANSTALKD_RECOVERED = "beanstalkd.recovered"
#: The database stopped answering (WARNING), once per outage (the watchdog).
DATABASE_LOST = "database.lost"
#: The database answers again (INFO).
DATABASE_RECOVERED = "database.recovered"
#: A worker started (INFO): queues, concurrency, prefetch.
WORKER_STARTED = "worker.started"
#: A worker stopped (INFO): outcomes.
WORKER_STOPPED = "worker.stopped"
#: A watchdog started (INFO), and stopped.
WATCHDOG_STARTED = "watchdog.started"
WATCHDOG_STOPPED = "watchdog.stopped"
#: One watchdog pass (INFO when it changed something, else DEBUG): kind and its counts.
WATCHDOG_PASS = "watchdog.pass"

#: Every action, for the documentation test.
ACTIONS = (
    RUN_STARTED,
    RUN_FINISHED,
    RUN_FAILED,
    RUN_TIMED_OUT,
    DELIVERY_TURNED_AWAY,
    LEASE_TAKEN_OVER,
    BEANSTALKD_LOST,
    BEANSTALKD_RECOVERED,
    DATABASE_LOST,
    DATABASE_RECOVERED,
    WORKER_STARTED,
    WORKER_STOPPED,
    WATCHDOG_STARTED,
    WATCHDOG_STOPPED,
    WATCHDOG_PASS,
)


class JsonFormatter(_MaintainedJsonFormatter):
    """One JSON object per line: ``time`` (ISO 8601), ``level``, ``logger``, ``message``, the
    ``action`` and fields the call site gave (``extra=``), and ``exc_info`` (the traceback)
    for a line logged with one."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            json_ensure_ascii=False,
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """UTC, ISO 8601 with milliseconds."""
        seconds = time.gmtime(record.created)
        return (
            f"{seconds.tm_year:04d}-{seconds.tm_mon:02d}-{seconds.tm_mday:02d}T"
            f"{seconds.tm_hour:02d}:{seconds.tm_min:02d}:{seconds.tm_sec:02d}."
            f"{int(record.msecs):03d}Z"
        )


def parse_log_format(text: str) -> str:
    """``text`` if it names a log format; raises ``ValueError`` saying which exist."""
    if text not in LOG_FORMATS:
        raise ValueError(f"log format: give one of {', '.join(LOG_FORMATS)}, not {text!r}")
    return text


def configure_logging(
    log_format: str = "text",
    *,
    level: int | None = None,
    stream: TextIO | None = None,
    background: bool = True,
    caller_info: bool = False,
) -> logging.Handler:
    """Send the root logger's lines to ``stream`` (standard error) as text or JSON, at
    ``level`` (None: the root logger's level stays). Replaces the plain stream handler
    ``logging.basicConfig`` installed (the command line's) and any this function installed
    before; other handlers stay. Returns the new handler.

    With ``background`` (the processes' default), the calling thread only keeps the record
    and one writer thread formats and writes the lines, in order, every
    :data:`WRITE_INTERVAL` seconds in one write: a line costs its thread no system call and
    no wait for another thread (written in place, each line's write let the interpreter
    switch threads; with a worker's eight threads logging two lines per job that cost it
    about a third of its CPU time). Lines are written up to that interval late; what is
    kept is written when the process exits normally (``logging.shutdown``).

    Unless ``caller_info``, the process's records no longer look up the calling file, line,
    thread and process (the logging HOWTO's optimisations): neither format shows them, and
    the look-ups are a third of a record's cost."""
    writer = logging.StreamHandler(stream or sys.stderr)
    writer.setFormatter(
        JsonFormatter()
        if parse_log_format(log_format) == "json"
        else logging.Formatter(TEXT_FORMAT)
    )
    handler: logging.Handler = BackgroundHandler(writer) if background else writer
    if not caller_info:
        logging._srcfile = None  # the documented switch; there is no setter
        logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    for old in [h for h in root.handlers if _replaceable(h)]:
        root.removeHandler(old)
        if getattr(old, _OURS, False):
            old.close()
    setattr(handler, _OURS, True)
    root.addHandler(handler)
    if level is not None:
        root.setLevel(level)
    return handler


class BackgroundHandler(logging.Handler):
    """Keeps records in memory; a writer thread formats them with ``target``'s formatter and
    writes them to its stream every :data:`WRITE_INTERVAL` seconds, all in one write (see
    :func:`configure_logging`). Records are kept as they are, not copied or pre-formatted:
    they stay in this process, and formatting is the writer's work."""

    def __init__(self, target: logging.StreamHandler[TextIO], interval: float = 0.0) -> None:
        super().__init__()
        self.target = target
        self.interval = interval or WRITE_INTERVAL
        self._records: deque[logging.LogRecord] = deque()
        self._writing = threading.Lock()
        self._stopped = threading.Event()
        self._writer = threading.Thread(
            target=self._write_until_stopped, name="postburner-log-writer", daemon=True
        )
        self._writer.start()

    def handle(self, record: logging.LogRecord) -> bool:
        """Keep ``record`` for the writer (no lock: appending to a deque is atomic)."""
        if not self.filter(record):
            return False
        self._records.append(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self._records.append(record)

    def flush(self) -> None:
        """Write every record kept so far, now."""
        with self._writing:
            lines = []
            while self._records:
                record = self._records.popleft()
                try:
                    lines.append(self.target.format(record))
                except Exception:
                    self.target.handleError(record)
            if lines:
                terminator = self.target.terminator
                self.target.stream.write(terminator.join(lines) + terminator)
                self.target.stream.flush()

    def close(self) -> None:
        """Write what is kept and stop the writer thread."""
        self._stopped.set()
        if self._writer.is_alive() and self._writer is not threading.current_thread():
            self._writer.join(timeout=5)
        self.flush()
        super().close()

    def _write_until_stopped(self) -> None:
        while not self._stopped.wait(self.interval):
            try:
                self.flush()
            except Exception:  # a closed stream, a full disk: keep the process serving
                self._records.clear()


def _replaceable(handler: logging.Handler) -> bool:
    """Ours, or exactly the handler ``basicConfig`` makes (not a subclass: test capture)."""
    return getattr(handler, _OURS, False) or (
        type(handler) is logging.StreamHandler and handler.stream in (sys.stderr, sys.stdout)
    )


_OURS = "_postburner_handler"


def fields(action: str, **values: Any) -> dict[str, Any]:
    """The ``extra=`` of a line: its action and its facts."""
    return {"action": action, **values}
