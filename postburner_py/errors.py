"""Exception types raised by postburner_py.

Every error the library raises on purpose derives from :class:`PostburnerError`;
errors about bad input also derive from :class:`ValueError` so callers that
already catch ``ValueError`` keep working.
"""

from __future__ import annotations

from datetime import datetime


class PostburnerError(Exception):
    """Root of every error raised on purpose by postburner_py."""


class ConfigurationError(PostburnerError, ValueError):
    """A setting (keyword argument or ``POSTBURNER_*`` variable) is invalid."""


class DatabaseUrlRequiredError(ConfigurationError):
    """``POSTBURNER_REQUIRE_DATABASE_URL`` is set and no database URL was given: the embedded
    SQLite default is refused (in a container it would be a file of that container alone)."""


class ScheduleValidationError(PostburnerError, ValueError):
    """A schedule field is invalid; nothing was written.

    ``field`` names the offending attribute so callers (and the CLI) can point at it.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class JobNotAllowedError(ScheduleValidationError):
    """``job_class`` is outside ``allowed_job_prefixes``."""


class PayloadTooLargeError(ScheduleValidationError):
    """A job body would exceed Beanstalkd's maximum job size."""


class NextExecutionRunAtConflict(PostburnerError):
    """An execution's ``next_run_at`` disagrees with the next execution's ``run_at``."""


class DuplicateJobError(PostburnerError, ValueError):
    """A one-off delayed job with this ``job_id`` is still pending."""


class QueueUnavailableError(PostburnerError, ConnectionError):
    """Beanstalkd could not be reached (after one reconnect attempt)."""


class SignatureError(PostburnerError):
    """A job body is malformed, unsigned, or its signature does not verify."""


class ScheduleFileError(PostburnerError, ValueError):
    """A schedule file (``postburner sync``) is invalid; nothing was written.

    The message names the file, the entry and the field, e.g.
    ``schedules.yml: defaults.jobs[3] (key 'reports:daily'): cron: ...``.
    """


class JobImportError(PostburnerError, ImportError):
    """A worker cannot import (or find the callable of) a job's ``job_class``: the
    occurrence fails at once, it is not retried."""


class JobTimeoutError(PostburnerError, TimeoutError):
    """An attempt ran longer than its ``timeout``: it is failed and its thread abandoned."""


class UnplannableScheduleError(PostburnerError):
    """A stored schedule row cannot be planned: a value written behind the API's back (raw
    SQL, another application) or a timezone this host's tzdata lacks.

    ``name`` is the schedule, ``reason`` what is wrong with it. The watchdog counts such a row
    ``invalid`` and leaves it unqueued until the row is fixed.
    """

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(
            f"schedule {name!r} cannot be planned: {reason} "
            "(fix the row, e.g. with `postburner sync`, or disable the schedule)"
        )


class OffGridError(ScheduleValidationError):
    """An instant given for one occurrence (``skip_occurrence``) is not a point of the
    schedule's grid inside its window; ``before`` and ``after`` are the nearest points
    (None when there is none)."""

    def __init__(
        self, field: str, instant: datetime, before: datetime | None, after: datetime | None
    ) -> None:
        self.instant = instant
        self.before = before
        self.after = after
        near = " and ".join(
            f"{side} {point.isoformat()}"
            for side, point in (("before it", before), ("after it", after))
            if point is not None
        )
        super().__init__(
            field,
            f"{instant.isoformat()} is not an occurrence of the schedule; the nearest are "
            f"{near or 'none'}",
        )
