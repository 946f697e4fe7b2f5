"""Putting executions into Beanstalkd and taking them out, safely across server restarts.

A stored job id means something only on the server that issued it: Beanstalkd restarts
its ids at 1. So every put records the server's id (``stats()['id']``) next to the job id,
and a removal on a different server first checks with ``peek`` that the job really is ours.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from postburner_py.errors import QueueUnavailableError, SignatureError
from postburner_py.queue.signing import JobBody, decode_body, encode_body
from postburner_py.timegrid.jitter import start_instant

if TYPE_CHECKING:
    from postburner_py.app import Postburner
    from postburner_py.store.models import ScheduleExecution

log = logging.getLogger("postburner_py.queue")


@dataclass(frozen=True)
class JobRef:
    """Where a row's job sits: enough to remove it without loading the row.

    ``kind`` is the body kind: ``execution`` (``execution_id`` is a ScheduleExecution id) or
    ``delayed`` (a DelayedJob id).
    """

    execution_id: int
    job_id: int | None
    server_id: str | None
    kind: str = "execution"

    @classmethod
    def of(cls, execution: ScheduleExecution) -> JobRef:
        """The reference of ``execution``'s current job."""
        return cls(execution.id, execution.beanstalk_job_id, execution.beanstalk_server_id)


def execution_body(pb: Postburner, execution: ScheduleExecution) -> bytes:
    """The signed body naming ``execution`` and its occurrence."""
    key = str(execution.cached_schedule["name"])
    return encode_body(JobBody("execution", execution.id, key, execution.run_at), pb.secret())


def put_execution(pb: Postburner, execution: ScheduleExecution, now: datetime) -> tuple[int, str]:
    """Put ``execution`` delayed until it starts (its ``run_at`` plus its jitter offset);
    returns (job id, server id)."""
    snapshot = execution.cached_schedule
    job_id = pb.queue.put_at(
        execution_body(pb, execution),
        queue=str(snapshot["queue"]),
        priority=int(snapshot["priority"]),
        run_at=start_instant(str(snapshot["name"]), execution.run_at, snapshot.get("jitter")),
        now=now,
        ttr=int(snapshot["ttr"]),
    )
    return job_id, pb.queue.server_id()


def remove_job(pb: Postburner, ref: JobRef) -> bool:
    """Delete one row's job. True when the job is gone (deleted now, or already lost).

    False when a worker holds it reserved (it will drop the job itself after fencing) or
    when Beanstalkd is unreachable (the watchdog retries later).
    """
    if ref.job_id is None:
        return True
    try:
        return bool(delete_jobs(pb, [ref]))
    except QueueUnavailableError as exc:
        log.warning(
            "could not remove job %s of execution %s: %s", ref.job_id, ref.execution_id, exc
        )
        return False


def delete_jobs(pb: Postburner, refs: list[JobRef]) -> list[int]:
    """Delete the jobs of ``refs``; the row ids whose job is gone now.

    One ``stats`` call for the whole list, then a delete per job; a job id from another
    server is first checked with ``peek``. Raises :class:`QueueUnavailableError`.
    """
    refs = [ref for ref in refs if ref.job_id is not None]
    if not refs:
        return []
    current = pb.queue.server_id()
    return [ref.execution_id for ref in refs if _delete(pb, ref, current)]


def _delete(pb: Postburner, ref: JobRef, current_server: str) -> bool:
    assert ref.job_id is not None
    if ref.server_id != current_server and not _is_ours(pb, ref):
        return True  # ours went with the old server; this id now names someone else's job
    return pb.queue.delete(ref.job_id) or pb.queue.peek(ref.job_id) is None


def _is_ours(pb: Postburner, ref: JobRef) -> bool:
    assert ref.job_id is not None
    job = pb.queue.peek(ref.job_id)
    if job is None:
        return False
    try:
        body = decode_body(job.body, pb.secret())
    except SignatureError:
        return False
    return body.kind == ref.kind and body.id == ref.execution_id
