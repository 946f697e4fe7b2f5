"""Field checks for :class:`~postburner_py.models.Schedule`, each naming the field and the fix."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from postburner_py.errors import JobNotAllowedError, ScheduleValidationError

MAX_PRIORITY = 2**32 - 1
DEFAULT_PRIORITY = 65536


def validate_name(name: Any) -> str:
    """A schedule name is a non-empty string of at most 255 characters."""
    if not isinstance(name, str) or not name.strip():
        raise ScheduleValidationError("name", "must be a non-empty string, e.g. 'reports:daily'")
    if len(name) > 255:
        raise ScheduleValidationError("name", f"is {len(name)} characters; the limit is 255")
    return name


def validate_job_class(job_class: Any) -> str:
    """``package.module:attr`` or ``package.module.attr``."""
    if not isinstance(job_class, str) or not job_class.strip():
        raise ScheduleValidationError(
            "job_class", "must name a callable, e.g. 'myapp.jobs:SendReport'"
        )
    module, _, attr = job_class.partition(":") if ":" in job_class else job_class.rpartition(".")
    if not module or not attr or not all(part.isidentifier() for part in module.split(".")):
        raise ScheduleValidationError(
            "job_class",
            f"{job_class!r} is not 'package.module:attr' or 'package.module.attr'",
        )
    return job_class


def check_job_allowed(job_class: str, allowed_prefixes: Sequence[str]) -> None:
    """Refuse a job class outside the configured allow-list (an empty list allows all)."""
    if allowed_prefixes and not any(job_class.startswith(p) for p in allowed_prefixes):
        raise JobNotAllowedError(
            "job_class",
            f"{job_class!r} does not start with any of allowed_job_prefixes "
            f"{list(allowed_prefixes)}; add its prefix to POSTBURNER_ALLOWED_JOB_PREFIXES",
        )


def validate_args(args: Any) -> list[Any]:
    """Positional arguments: a JSON-serialisable list."""
    if args is None:
        return []
    if isinstance(args, str | bytes) or not isinstance(args, Sequence):
        raise ScheduleValidationError("args", f"must be a list, got {type(args).__name__}")
    return _json_round_trip("args", list(args))  # type: ignore[no-any-return]


def validate_kwargs(kwargs: Any) -> dict[str, Any]:
    """Keyword arguments: a JSON-serialisable mapping with string keys."""
    if kwargs is None:
        return {}
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise ScheduleValidationError("kwargs", "must be a mapping with string keys")
    return _json_round_trip("kwargs", dict(kwargs))  # type: ignore[no-any-return]


def _json_round_trip(field: str, value: Any) -> Any:
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ScheduleValidationError(
            field, f"is not JSON-serialisable ({exc}); pass ids, strings and numbers"
        ) from None


def validate_priority(priority: Any) -> int:
    """Beanstalkd priority: an integer 0 (most urgent) .. 4294967295."""
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ScheduleValidationError("priority", "must be an integer 0..4294967295")
    if not 0 <= priority <= MAX_PRIORITY:
        raise ScheduleValidationError(
            "priority", f"{priority} is out of range 0..4294967295 (default 65536)"
        )
    return priority


def validate_positive_int(field: str, value: Any, hint: str) -> int:
    """An integer >= 1 (``ttr``, ``max_attempts``)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ScheduleValidationError(field, f"must be an integer >= 1 ({hint})")
    return value


def require_aware(field: str, value: datetime) -> datetime:
    """Refuse naive datetimes: the library never guesses a timezone."""
    if not isinstance(value, datetime):
        raise ScheduleValidationError(field, "must be a timezone-aware datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ScheduleValidationError(
            field,
            f"{value.isoformat()} is naive; pass an aware datetime, "
            "e.g. datetime(2025, 1, 31, 10, tzinfo=UTC)",
        )
    return value


#: Longest ``timeout`` accepted, in seconds (a year): beyond it, say None (no limit).
MAX_TIMEOUT = 366 * 86400.0


def validate_timeout(timeout: Any) -> float | None:
    """Seconds an attempt may run before it is failed: a positive number, or None (no limit)."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise ScheduleValidationError(
            "timeout", f"must be a number of seconds or None (no limit), got {timeout!r}"
        )
    if not 0 < timeout <= MAX_TIMEOUT:
        raise ScheduleValidationError(
            "timeout",
            f"{timeout!r} is out of range: more than 0 and at most {MAX_TIMEOUT:.0f} seconds "
            "(None: no limit)",
        )
    return float(timeout)


def validate_no_retry_on(names: Any) -> list[str] | None:
    """Exception classes that fail an occurrence at once: a list of dotted names
    ``module.QualName`` (``ValueError`` alone for a built-in), or None/empty (none)."""
    if names is None:
        return None
    if isinstance(names, str | bytes) or not isinstance(names, Sequence):
        raise ScheduleValidationError(
            "no_retry_on",
            f"must be a list of exception class names, e.g. ['myapp.errors.Permanent'], "
            f"got {type(names).__name__}",
        )
    checked = []
    for name in names:
        if (
            not isinstance(name, str)
            or len(name) > 255
            or not all(part.isidentifier() for part in name.split("."))
        ):
            raise ScheduleValidationError(
                "no_retry_on",
                f"{name!r} is not a dotted class name such as 'myapp.errors.Permanent' "
                "or 'ValueError'",
            )
        checked.append(name)
    return checked or None
