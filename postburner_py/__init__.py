"""postburner_py: a pre-enqueue delay-queue scheduler on Beanstalkd and PostgreSQL.

Every enabled :class:`Schedule` always has one future :class:`ScheduleExecution` already
sitting in Beanstalkd as a delayed job, so work fires on time even while every scheduler
process is down.
"""

from postburner_py.app import Postburner
from postburner_py.errors import (
    ConfigurationError,
    DuplicateJobError,
    JobNotAllowedError,
    NextExecutionRunAtConflict,
    PayloadTooLargeError,
    PostburnerError,
    QueueUnavailableError,
    ScheduleValidationError,
    SignatureError,
)
from postburner_py.store.models import Schedule, ScheduleExecution

__version__ = "0.1.0.dev0"

__all__ = [
    "ConfigurationError",
    "DuplicateJobError",
    "JobNotAllowedError",
    "NextExecutionRunAtConflict",
    "PayloadTooLargeError",
    "Postburner",
    "PostburnerError",
    "QueueUnavailableError",
    "Schedule",
    "ScheduleExecution",
    "ScheduleValidationError",
    "SignatureError",
    "__version__",
]
