"""Trivial jobs for the benchmarks in ``bench/``."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from typing import Any

#: Start lateness in milliseconds of each :func:`record_lateness` call in this process.
LATENESS_MS: list[float] = []
_LOCK = threading.Lock()


def noop(*_args: Any, **_kwargs: Any) -> None:
    """Does nothing (whatever it is given): measures the scheduler, not the job."""


def record_lateness(due_unix: float) -> None:
    """Remember how late (ms) this call starts relative to ``due_unix`` (seconds since epoch).

    The peer scheduler's jobs call it, so their lateness is measured inside the job.
    """
    late_ms = (time.time() - due_unix) * 1000
    with _LOCK:
        LATENESS_MS.append(late_ms)


#: The directory where :func:`soak_job` appends its records (one file per process).
SOAK_RECORDS_ENV = "POSTBURNER_SOAK_RECORDS"
_SOAK_FILES: dict[int, int] = {}


def soak_job(*, seed: int = 0, long_permille: int = 20, long_ms: int = 6000) -> None:
    """The fault soak's job (``bench/soak.py``): records its own start and finish.

    Each record is one JSON line appended with one ``write`` to
    ``$POSTBURNER_SOAK_RECORDS/<pid>.jsonl`` (``O_APPEND``), so the soak can count starts
    without the database it stops. The job takes 0-300 ms; ``long_permille`` occurrences in
    a thousand take 0.5-1.0 times ``long_ms`` (faults then land mid-job). The duration is a
    function of ``seed`` and the occurrence, so every attempt of an occurrence takes as long.
    """
    from postburner_py.context import current_execution

    occurrence = current_execution()
    run_at = occurrence.run_at.isoformat()
    event = {
        "key": occurrence.key,
        "run_at": run_at,
        "attempt": occurrence.attempt,
        "execution_id": occurrence.execution_id,
    }
    _soak_record("start", event)
    time.sleep(_soak_duration(seed, occurrence.key, run_at, long_permille, long_ms))
    _soak_record("finish", event)


def _soak_duration(seed: int, key: str, run_at: str, long_permille: int, long_ms: int) -> float:
    digest = hashlib.blake2b(f"{seed}|{key}|{run_at}".encode(), digest_size=8).digest()
    draw = int.from_bytes(digest, "big")
    if draw % 1000 < long_permille:
        return long_ms * (0.5 + (draw >> 10) % 501 / 1000) / 1000
    return (draw >> 20) % 301 / 1000


def _soak_record(kind: str, event: dict[str, Any]) -> None:
    line = dict(event, e=kind, pid=os.getpid(), mono=time.monotonic(), wall=time.time())
    os.write(_soak_file(), (json.dumps(line) + "\n").encode())


def _soak_file() -> int:
    pid = os.getpid()
    with _LOCK:
        if pid not in _SOAK_FILES:
            path = os.path.join(os.environ[SOAK_RECORDS_ENV], f"{pid}.jsonl")
            _SOAK_FILES[pid] = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        return _SOAK_FILES[pid]
