"""Job callables the tests schedule (importable as ``tests.jobs:...``)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from postburner_py.context import ExecutionContext, PartialSuccess, current_execution

RUNS: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
CONTEXTS: list[ExecutionContext] = []
_lock = threading.Lock()


def record_run(*args: Any, **kwargs: Any) -> None:
    """Remember the call and the occurrence it ran for (tests inspect ``RUNS``/``CONTEXTS``)."""
    with _lock:
        RUNS.append((args, kwargs))
        CONTEXTS.append(current_execution())


def runs_with(marker: Any) -> int:
    """How many recorded runs had ``marker`` as their first argument."""
    with _lock:
        return sum(1 for args, _ in RUNS if args and args[0] == marker)


def always_fail(*_args: Any, **_kwargs: Any) -> None:
    """A job that raises every time."""
    raise RuntimeError("the downstream service said no")


def half_done(*args: Any, **_kwargs: Any) -> PartialSuccess:
    """A job that reports partial success."""
    return PartialSuccess({"sent": 3, "failed": 1, "marker": args[0] if args else None})


def append_line_then_sleep(path: str, seconds: float) -> None:
    """Append the attempt number to ``path``; the first attempt then sleeps (kill tests)."""
    attempt = current_execution().attempt
    with Path(path).open("a") as handle:
        handle.write(f"{attempt}\n")
    if attempt == 1:
        time.sleep(seconds)


class SendReport:
    """A class-style job: instantiated, then ``perform`` is called."""

    def perform(self, marker: Any, **kwargs: Any) -> None:
        record_run(marker, **kwargs)


RUNNING: dict[str, int] = {}
MOST_AT_ONCE: dict[str, int] = {}


def hold_for(marker: str, seconds: float) -> None:
    """Run for ``seconds``, counting how many runs with ``marker`` overlap at most."""
    with _lock:
        RUNNING[marker] = RUNNING.get(marker, 0) + 1
        MOST_AT_ONCE[marker] = max(MOST_AT_ONCE.get(marker, 0), RUNNING[marker])
    time.sleep(seconds)
    with _lock:
        RUNNING[marker] -= 1
        RUNS.append(((marker,), {}))


def append_line_then_exit(path: str) -> None:
    """Append the attempt number to ``path``, then end the whole process at once, as a job
    calling ``os._exit`` (or one the OOM killer takes) does."""
    import os

    with Path(path).open("a") as handle:
        handle.write(f"{current_execution().attempt}\n")
    os._exit(3)


class _Escape(BaseException):
    """A BaseException of the job's own, outside Exception."""


def raise_base_exception(kind: str) -> None:
    """Raise what ``kind`` names: exceptions that are not ``Exception`` subclasses."""
    raise {
        "SystemExit": SystemExit(2),
        "KeyboardInterrupt": KeyboardInterrupt(),
        "GeneratorExit": GeneratorExit(),
        "BaseException": _Escape("escaped"),
    }[kind]


def return_summary(marker: str, **_kwargs: Any) -> dict[str, Any]:
    """A job returning a plain JSON value: kept as its history row's results."""
    return {"marker": marker, "sent": 3, "ok": True}


def return_object(marker: str, **_kwargs: Any) -> object:
    """A job returning something JSON cannot hold: stored as a note with its repr."""
    return {marker: {1, 2}}


#: The span current inside ``record_current_span`` runs, by marker.
CURRENT_SPANS: dict[str, Any] = {}


def record_current_span(marker: str) -> None:
    """Remember the span context current while the job runs (the tracing tests)."""
    from opentelemetry import trace

    with _lock:
        CURRENT_SPANS[marker] = trace.get_current_span().get_span_context()


def log_interval_then_sleep(path: str, seconds: float) -> None:
    """Append ``S <pid> <wall time> <attempt>`` to ``path`` when the run starts and
    ``E <pid> <wall time>`` when it ends, sleeping ``seconds`` between (overlap tests read the
    intervals; a killed run leaves no end line)."""
    import os

    attempt = current_execution().attempt
    with Path(path).open("a") as handle:
        handle.write(f"S {os.getpid()} {time.time():.6f} {attempt}\n")
    time.sleep(seconds)
    with Path(path).open("a") as handle:
        handle.write(f"E {os.getpid()} {time.time():.6f}\n")


def fail_before_attempt(path: str, succeeding_attempt: int) -> None:
    """Append the attempt number to ``path``; raise before attempt ``succeeding_attempt``."""
    attempt = current_execution().attempt
    with Path(path).open("a") as handle:
        handle.write(f"{attempt}\n")
    if attempt < succeeding_attempt:
        raise RuntimeError(f"attempt {attempt}: the downstream service said no")
