"""The occurrence key: the one name of "which occurrence" in the dispatch log and the queue.

A schedule's occurrence key is the schedule's name; a one-off job's is ``job:<job_id>``. A
schedule name may not start with ``job:`` (``validation.validate_name``), so the two never share
a key. Together with the fire time the occurrence key identifies one occurrence; the
:func:`idempotency_key` derived from both (and the namespace) is what jobs hand downstream.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from postburner_py.clock import require_aware

#: The key namespace of one-off jobs.
ONE_OFF_KEY_PREFIX = "job:"
#: The kind of a queued job body that names a one-off job (the other kind is a schedule's).
ONE_OFF_KIND = "delayed"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def one_off_key(job_id: str) -> str:
    """The occurrence key of the one-off job ``job_id``."""
    return ONE_OFF_KEY_PREFIX + job_id


def occurrence_key(kind: str, key: str) -> str:
    """The occurrence key of a queued body of ``kind`` naming ``key`` (a one-off's is prefixed)."""
    return one_off_key(key) if kind == ONE_OFF_KIND else key


def idempotency_key(namespace: str, key: str, fire_time: datetime) -> str:
    """A deterministic key for one occurrence: the same on every node and every delivery.

    128 bits of ``sha256("{namespace}:{key}:{unix seconds of fire_time}")`` as 32 hex digits.
    Hand it to downstream systems that need their own deduplication.
    """
    seconds = (require_aware("fire_time", fire_time) - _EPOCH) // timedelta(seconds=1)
    return hashlib.sha256(f"{namespace}:{key}:{seconds}".encode()).hexdigest()[:32]
