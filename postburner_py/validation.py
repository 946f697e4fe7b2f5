"""Field checks for :class:`~postburner_py.models.Schedule`, each naming the field and the fix."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from postburner_py.dispatch_log import ONE_OFF_KEY_PREFIX
from postburner_py.errors import ConfigurationError, JobNotAllowedError, ScheduleValidationError

MAX_PRIORITY = 2**32 - 1
DEFAULT_PRIORITY = 65536


def validate_name(name: Any) -> str:
    """A schedule name is a non-empty string of at most 255 characters, not starting with
    ``job:`` (the dispatch-log keys of one-off jobs: ``job:<job_id>``)."""
    if not isinstance(name, str) or not name.strip():
        raise ScheduleValidationError("name", "must be a non-empty string, e.g. 'reports:daily'")
    if len(name) > 255:
        raise ScheduleValidationError("name", f"is {len(name)} characters; the limit is 255")
    if name.startswith(ONE_OFF_KEY_PREFIX):
        raise ScheduleValidationError(
            "name",
            f"{_shown(name)} starts with {ONE_OFF_KEY_PREFIX!r}, which is reserved for one-off "
            f"jobs (their dispatch key is '{ONE_OFF_KEY_PREFIX}<job_id>'); "
            "use another prefix, e.g. 'jobs-' or 'task:'",
        )
    return name


# --- job classes and the allow-list -------------------------------------------------------

#: One name of a dotted module path. ASCII only: a look-alike letter is another name.
_IDENTIFIER = "[A-Za-z_][A-Za-z0-9_]*"
#: The attribute a job_class names: an identifier not starting with two underscores (no
#: dunder such as ``__class__``, no name-mangled private name).
_ATTRIBUTE = "([A-Za-z][A-Za-z0-9_]*|_[A-Za-z0-9][A-Za-z0-9_]*|_)"
_MODULE_PATH = f"{_IDENTIFIER}([.]{_IDENTIFIER})*"
#: The whole spelling rule of a job_class: one module and one attribute of it,
#: ``package.module:attr`` or ``package.module.attr``. The same text decides in Python
#: (``re.fullmatch``) and in PostgreSQL's batch statement (``~ '^(...)$'``): it is kept free
#: of backslashes and quotes so it reads the same in both.
JOB_CLASS_PATTERN = f"{_MODULE_PATH}[.:]{_ATTRIBUTE}"
_JOB_CLASS = re.compile(JOB_CLASS_PATTERN)
_MODULE_PREFIX = re.compile(_MODULE_PATH)
_EXACT_PREFIX = re.compile(f"{_MODULE_PATH}:{_ATTRIBUTE}")
MAX_JOB_CLASS_LENGTH = 255


class AllowRule(NamedTuple):
    """One configured allowed prefix, parsed (:func:`allow_rule`).

    ``name`` is dotted (``myapp.jobs``, or ``myapp.jobs.send_report`` for an exact
    attribute); a job_class is compared in its dotted spelling (``:`` read as ``.``). A module
    rule admits the name itself and every name below it (``name`` followed by ``.``); an
    exact rule admits that name only.
    """

    name: str
    exact: bool

    def admits(self, dotted: str) -> bool:
        """Whether the job_class whose dotted spelling is ``dotted`` is admitted (the
        spelling rule already holds)."""
        return dotted == self.name or (
            not self.exact and dotted.startswith(self.name) and dotted[len(self.name)] == "."
        )


def allow_rule(prefix: Any) -> AllowRule:
    """Parse one configured prefix; :class:`ConfigurationError` for anything else.

    A prefix is a dotted module path (``myapp.jobs``: that module, its attributes and its
    submodules) or one attribute (``myapp.jobs:send_report``). A trailing ``.`` or ``:`` is a
    separator, not part of the name: ``myapp.jobs.`` and ``myapp.jobs:`` mean ``myapp.jobs``.
    """
    if not isinstance(prefix, str):
        raise ConfigurationError(
            f"allowed_job_prefixes: {prefix!r} is not a string; give module paths such as "
            "'myapp.jobs'"
        )
    text = prefix.strip()
    name = text[:-1] if text.endswith((".", ":")) else text
    if _MODULE_PREFIX.fullmatch(name):
        return AllowRule(name, exact=False)
    if _EXACT_PREFIX.fullmatch(name):
        return AllowRule(name.replace(":", "."), exact=True)
    raise ConfigurationError(
        f"allowed_job_prefixes: {_shown(prefix)} is neither a dotted module path of ASCII "
        "identifiers ('myapp.jobs', which admits 'myapp.jobs:send_report' and "
        "'myapp.jobs.sub:run') nor one attribute ('myapp.jobs:send_report')"
    )


@functools.lru_cache(maxsize=64)
def allow_rules(prefixes: tuple[str, ...]) -> tuple[AllowRule, ...]:
    """The parsed rules of an allow-list (cached: the worker checks every job)."""
    return tuple(allow_rule(prefix) for prefix in prefixes)


def split_job_class(job_class: str) -> tuple[str, str]:
    """``(module, attribute)`` of a job_class that follows the spelling rule."""
    if ":" in job_class:
        module, _, attribute = job_class.partition(":")
    else:
        module, _, attribute = job_class.rpartition(".")
    return module, attribute


def validate_job_class(job_class: Any) -> str:
    """``package.module:attr`` or ``package.module.attr``: one module, and one attribute of it
    (ASCII identifiers; the attribute a plain name, not a path, not starting with ``__``).

    Raises :class:`ScheduleValidationError` (field ``job_class``) naming the rule broken.
    """
    problem = job_class_problem(job_class)
    if problem is not None:
        raise ScheduleValidationError("job_class", problem)
    return str(job_class)


def check_job_allowed(job_class: Any, allowed_prefixes: Sequence[str]) -> None:
    """Refuse, before anything imports it, a job_class that breaks the spelling rule
    (:func:`validate_job_class`) or that no allowed prefix admits (an empty list admits every
    well-spelled name). Prefixes match whole dotted segments: ``myapp.jobs`` admits
    ``myapp.jobs:run``, ``myapp.jobs.run`` and ``myapp.jobs.sub:run``, never
    ``myapp.jobsevil:run``.

    Raises :class:`JobNotAllowedError` naming the rule broken. PostgreSQL's batch statement
    decides the same way (:func:`postburner_py.pg_batch.allowed_condition`).
    """
    if not isinstance(job_class, str):
        raise JobNotAllowedError("job_class", job_class_problem(job_class) or "is malformed")
    refusal = _refusal(job_class, tuple(allowed_prefixes))
    if refusal is not None:
        raise JobNotAllowedError("job_class", refusal)


@functools.lru_cache(maxsize=1024)
def _refusal(job_class: str, prefixes: tuple[str, ...]) -> str | None:
    """Why ``job_class`` is refused under ``prefixes`` (None: admitted). Cached: the worker
    asks for every job, about the same few names."""
    if _JOB_CLASS.fullmatch(job_class) is None:
        return job_class_problem(job_class) or "is malformed"
    rules = allow_rules(prefixes)
    dotted = job_class.replace(":", ".")
    if not rules or any(rule.admits(dotted) for rule in rules):
        return None
    return (
        f"{_shown(job_class)} is under none of allowed_job_prefixes {list(prefixes)} "
        "(a prefix admits whole dotted names: 'myapp.jobs' admits 'myapp.jobs:run' and "
        "'myapp.jobs.sub:run', never 'myapp.jobsevil:run'); add its module to "
        "POSTBURNER_ALLOWED_JOB_PREFIXES"
    )


def job_class_problem(job_class: Any) -> str | None:
    """What is wrong with the spelling of ``job_class`` (None: nothing)."""
    example = "e.g. 'myapp.jobs:send_report'"
    if not isinstance(job_class, str) or not job_class:
        return f"must name one attribute of one module, {example}"
    if len(job_class) > MAX_JOB_CLASS_LENGTH:
        return f"is {len(job_class)} characters; the limit is {MAX_JOB_CLASS_LENGTH}"
    if _JOB_CLASS.fullmatch(job_class):
        return None
    shown = _shown(job_class)
    if any(character.isspace() for character in job_class):
        return f"{shown} contains whitespace"
    if not job_class.isascii():
        return (
            f"{shown} contains non-ASCII characters: module and attribute names are ASCII "
            "identifiers (a look-alike letter names another module)"
        )
    module, attribute = split_job_class(job_class)
    return _spelling_problem(shown, module, attribute) or (
        f"{shown} is not 'package.module:attr' or 'package.module.attr', {example}"
    )


def _spelling_problem(shown: str, module: str, attribute: str) -> str | None:
    if not module:
        return f"{shown} names no module: use 'package.module:attr'"
    if not attribute:
        return f"{shown} names no attribute: use 'package.module:attr'"
    if ":" in attribute or "." in attribute:
        return (
            f"{shown} names the path {attribute!r} after the colon: a job_class names one "
            "attribute defined in its module, never a path through other modules"
        )
    if any(not part for part in module.split(".")):
        return f"{shown} has an empty name between two dots"
    bad = [part for part in module.split(".") if not re.fullmatch(_IDENTIFIER, part)]
    if bad:
        return f"{shown}: {bad[0]!r} is not a Python identifier"
    if attribute.startswith("__"):
        return (
            f"{shown} names {attribute!r}: a name starting with '__' (special or private) is "
            "never a job"
        )
    if not re.fullmatch(_IDENTIFIER, attribute):
        return f"{shown}: {attribute!r} is not a Python identifier"
    return None


def _shown(value: str, limit: int = 80) -> str:
    """``repr(value)``, cut short: error messages and log lines stay one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + "...'"


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
