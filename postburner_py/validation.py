"""Field checks for :class:`~postburner_py.store.models.Schedule`, each naming the field and the
fix."""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import BigInteger, ColumnElement, Integer, SmallInteger, String

from postburner_py.errors import ConfigurationError, JobNotAllowedError, ScheduleValidationError
from postburner_py.keys import ONE_OFF_KEY_PREFIX

MAX_PRIORITY = 2**32 - 1
DEFAULT_PRIORITY = 65536
#: Beanstalkd takes ``delay`` and ``ttr`` as unsigned 32-bit seconds (about 136 years): an
#: occurrence further away than this from now could never be put, so it is refused.
MAX_DELAY_SECONDS = 2**32 - 1
#: ``args`` and ``kwargs`` are copied into every execution row and loaded for every run:
#: each may nest at most this deep and encode to at most this many bytes of JSON.
MAX_ARGUMENT_DEPTH = 32
MAX_ARGUMENT_BYTES = 65_536
#: The longest elapsed time one step of each interval unit can take. A calendar day is not
#: always 86,400 s (a UTC offset change), so calendar units get a day of slack on top.
LONGEST_UNIT_SECONDS = {
    "seconds": 1,
    "minutes": 60,
    "hours": 3600,
    "days": 86_400,
    "weeks": 7 * 86_400,
    "months": 31 * 86_400,
    "years": 366 * 86_400,
}
_CALENDAR_SLACK_SECONDS = 86_400
_INTEGER_BITS = ((BigInteger, 64), (SmallInteger, 16), (Integer, 32))


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
    decides the same way (:func:`postburner_py.store.postgres_batch.allowed_condition`).
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
    """Positional arguments: a list (or tuple) of JSON values, stored as a list.

    Raises :class:`ScheduleValidationError` (field ``args``) for anything else, including
    a string (which is not a list of its characters), and past the limits of
    :func:`validate_json`.
    """
    if args is None:
        return []
    if not _is_sequence(args):
        raise ScheduleValidationError(
            "args", f"must be a list, got {type(args).__name__}; e.g. args=[42]"
        )
    return validate_json("args", list(args))  # type: ignore[no-any-return]


def validate_kwargs(kwargs: Any) -> dict[str, Any]:
    """Keyword arguments: a mapping of string keys to JSON values (see :func:`validate_json`)."""
    if kwargs is None:
        return {}
    if not isinstance(kwargs, Mapping):
        raise ScheduleValidationError(
            "kwargs", f"must be a mapping with string keys, got {type(kwargs).__name__}"
        )
    return validate_json("kwargs", dict(kwargs))  # type: ignore[no-any-return]


def validate_json(field: str, value: Any) -> Any:
    """``value`` as it will be stored: JSON that every database keeps the same.

    Accepted: None, booleans, integers, finite floats, text, lists (tuples become lists)
    and mappings with text keys, nested at most :data:`MAX_ARGUMENT_DEPTH` deep and
    encoding to at most :data:`MAX_ARGUMENT_BYTES` bytes. Text may not hold a NUL
    character or a lone surrogate (PostgreSQL refuses both). The check stops as soon as a
    limit is passed, so a huge or self-referencing structure is refused at once.
    Raises :class:`ScheduleValidationError` naming ``field`` and the place inside it.
    """
    _check_json_tree(field, value)
    try:
        encoded = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ScheduleValidationError(
            field, f"is not JSON-serialisable ({exc}); pass ids, strings and numbers"
        ) from None
    size = len(encoded.encode("utf-8"))
    if size > MAX_ARGUMENT_BYTES:
        raise _too_large(field, size)
    return json.loads(encoded)


def _check_json_tree(field: str, root: Any) -> None:
    """Walk ``root`` without recursion, spending a byte budget: a lower bound of its size."""
    budget = MAX_ARGUMENT_BYTES
    stack: list[tuple[Any, int, tuple[Any, ...]]] = [(root, 0, ())]
    while stack:
        value, depth, path = stack.pop()
        budget -= _json_cost(value)
        if budget < 0:
            raise _too_large(field, MAX_ARGUMENT_BYTES - budget)
        children = _json_children(field, value, path)
        if children and depth >= MAX_ARGUMENT_DEPTH:
            raise ScheduleValidationError(
                field,
                f"{_at(path)}nests deeper than {MAX_ARGUMENT_DEPTH} levels; "
                "flatten it or pass an id",
            )
        stack.extend((child, depth + 1, child_path) for child_path, child in children)


def _json_children(field: str, value: Any, path: tuple[Any, ...]) -> list[tuple[Any, Any]]:
    if isinstance(value, str):
        _check_json_text(field, value, path)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ScheduleValidationError(field, f"{_at(path)}{value} is not a JSON number")
    elif value is None or isinstance(value, bool | int | float):
        pass
    elif isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise ScheduleValidationError(
                    field, f"{_at(path)}has key {key!r}: JSON keys must be text"
                )
            _check_json_text(field, key, (*path, key))
        return [((*path, key), item) for key, item in value.items()]
    elif _is_sequence(value):
        return [((*path, index), item) for index, item in enumerate(value)]
    else:
        raise ScheduleValidationError(
            field,
            f"{_at(path)}{type(value).__name__} is not JSON; "
            "pass ids, strings, numbers, lists and mappings",
        )
    return []


def _check_json_text(field: str, text: str, path: tuple[Any, ...]) -> None:
    try:
        check_text(field, text)
    except ScheduleValidationError as exc:
        raise ScheduleValidationError(field, _at(path) + exc.message) from None


def _json_cost(value: Any) -> int:
    """The fewest bytes ``value`` can encode to (its children counted on their own)."""
    if isinstance(value, str):
        return len(value) + 2
    if isinstance(value, int) and not isinstance(value, bool):
        return value.bit_length() * 3 // 10 + 1
    if isinstance(value, Mapping):  # braces, and per key its quotes, colon and a comma
        return max(2, 1 + sum(len(key) + 4 for key in value if isinstance(key, str)))
    if _is_sequence(value):  # brackets and the commas between items
        return max(2, 1 + len(value))
    return 1


def _too_large(field: str, size: int) -> ScheduleValidationError:
    return ScheduleValidationError(
        field,
        f"encodes to {size}+ bytes of JSON; the limit is {MAX_ARGUMENT_BYTES}. "
        "Store big data elsewhere and pass its id",
    )


def _at(path: tuple[Any, ...]) -> str:
    """Where inside an argument a problem is, e.g. ``at [0]['day']: ``."""
    return "at " + "".join(f"[{step!r}]" for step in path) + ": " if path else ""


def _is_sequence(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray)


def check_text(field: str, value: str, max_length: int | None = None) -> str:
    """Refuse text that some database cannot store as given.

    A NUL character (PostgreSQL refuses it), a lone surrogate (not encodable as UTF-8) and
    more than ``max_length`` characters all raise :class:`ScheduleValidationError`.
    """
    if "\x00" in value:
        raise ScheduleValidationError(
            field, f"contains a NUL character at position {value.index(chr(0))}; remove it"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ScheduleValidationError(
            field, f"contains a lone surrogate at position {exc.start}: it is not valid UTF-8"
        ) from None
    if max_length is not None and len(value) > max_length:
        raise ScheduleValidationError(
            field, f"is {len(value)} characters; the limit is {max_length}"
        )
    return value


def fit_column(field: str, value: Any, column: ColumnElement[Any]) -> Any:
    """Refuse a value ``column`` would store differently (or not at all) on some database.

    Text is checked with :func:`check_text` against the column's length, an integer
    against the column type's range; the limits come from the column itself.
    """
    if isinstance(value, str):
        length = column.type.length if isinstance(column.type, String) else None
        return check_text(field, value, length)
    if isinstance(value, int) and not isinstance(value, bool):
        bits = next((n for kind, n in _INTEGER_BITS if isinstance(column.type, kind)), None)
        if bits is not None and not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
            raise ScheduleValidationError(
                field, f"{value} is out of range; the largest value stored is {2 ** (bits - 1) - 1}"
            )
    return value


def validate_flag(field: str, value: Any) -> bool:
    """A real ``True`` or ``False``: not ``'yes'``, ``''``, ``None`` or ``1``."""
    if not isinstance(value, bool):
        raise ScheduleValidationError(field, f"must be True or False, got {value!r}")
    return value


def validate_optional_text(field: str, value: Any) -> str | None:
    """``None`` or text (``description``)."""
    if value is not None and not isinstance(value, str):
        raise ScheduleValidationError(field, f"must be text or None, got {type(value).__name__}")
    return value


def check_delay(field: str, run_at: datetime, now: datetime) -> datetime:
    """Refuse an instant further after ``now`` than Beanstalkd can delay a job."""
    if (run_at - now).total_seconds() > MAX_DELAY_SECONDS:
        raise ScheduleValidationError(
            field,
            f"{run_at.isoformat()} is more than {MAX_DELAY_SECONDS} s (about 136 years) from now; "
            "Beanstalkd cannot delay a job that long",
        )
    return run_at


def check_interval_step(interval: int, unit: str) -> None:
    """Refuse an interval whose one step could be longer than Beanstalkd can delay a job."""
    longest = LONGEST_UNIT_SECONDS.get(unit)
    if longest is None:
        return  # an unknown unit is the grid's to refuse
    slack = 0 if unit in ("seconds", "minutes", "hours") else _CALENDAR_SLACK_SECONDS
    if interval * longest + slack > MAX_DELAY_SECONDS:
        most = (MAX_DELAY_SECONDS - slack) // longest
        raise ScheduleValidationError(
            "interval",
            f"{interval} {unit} is longer than Beanstalkd can delay a job "
            f"({MAX_DELAY_SECONDS} s); at most {most} {unit}",
        )


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
    """An integer >= 1 (``ttr``, ``max_attempts``, ``interval``): not a bool, not a float."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ScheduleValidationError(field, f"must be an integer >= 1 ({hint}), got {value!r}")
    return value


def require_aware(field: str, value: datetime) -> datetime:
    """Refuse naive datetimes (the library never guesses a timezone) and instants whose UTC
    form falls outside years 1-9999."""
    if not isinstance(value, datetime):
        raise ScheduleValidationError(field, "must be a timezone-aware datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ScheduleValidationError(
            field,
            f"{value.isoformat()} is naive; pass an aware datetime, "
            "e.g. datetime(2025, 1, 31, 10, tzinfo=UTC)",
        )
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ScheduleValidationError(
            field, f"{value.isoformat()} is outside years 1-9999 in UTC"
        ) from None
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


# --- run control: windows, pause, ownership -------------------------------------------------

#: Longest per-schedule ``catch_up_window`` accepted, in seconds (the global one's limit).
MAX_SCHEDULE_CATCH_UP_WINDOW = 366 * 86400


def validate_catch_up_window(value: Any) -> int | None:
    """A schedule's own catch-up window: whole seconds ``0..MAX_SCHEDULE_CATCH_UP_WINDOW``,
    or None (the global ``catch_up_window`` applies)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ScheduleValidationError(
            "catch_up_window",
            f"must be whole seconds or None (the global window), got {value!r}",
        )
    if not 0 <= value <= MAX_SCHEDULE_CATCH_UP_WINDOW:
        raise ScheduleValidationError(
            "catch_up_window",
            f"{value} is out of range: 0 to {MAX_SCHEDULE_CATCH_UP_WINDOW} seconds "
            "(None: the global window)",
        )
    return value


#: The overlap policies a schedule may name (``postburner_py.store.dispatch_records.Overlap``
#: adds ``wait``, which only a backfill's occurrences use).
OVERLAP_POLICIES = ("skip", "buffer_one", "allow")
#: The longest jitter: one day.
MAX_JITTER = 86400.0


def validate_overlap(value: Any) -> str:
    """One of :data:`OVERLAP_POLICIES`."""
    if not isinstance(value, str) or value not in OVERLAP_POLICIES:
        raise ScheduleValidationError(
            "overlap", f"must be one of {', '.join(OVERLAP_POLICIES)}, got {value!r}"
        )
    return value


def validate_optional_instant(field: str, value: Any) -> datetime | None:
    """None, or an aware datetime (returned in UTC): ``starts_at``, ``ends_at``, ``paused_at``."""
    if value is None:
        return None
    return require_aware(field, value).astimezone(UTC)


def check_run_window(starts_at: datetime | None, ends_at: datetime | None) -> None:
    """Refuse a window that holds no instant: ``ends_at`` must be after ``starts_at``."""
    if starts_at is not None and ends_at is not None and ends_at <= starts_at:
        raise ScheduleValidationError(
            "ends_at",
            f"{ends_at.isoformat()} is not after starts_at {starts_at.isoformat()}; "
            "give a later ends_at or None (no end)",
        )


def validate_label(value: Any) -> str | None:
    """Who owns a schedule: None (code) or a non-blank file label, e.g. ``schedules``."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ScheduleValidationError(
            "label", f"must be a non-blank text naming the schedule file, or None, got {value!r}"
        )
    return value


def validate_jitter(value: Any) -> float | None:
    """Seconds each occurrence may start after its grid point: a number from 0 to
    :data:`MAX_JITTER`, or None (no jitter)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ScheduleValidationError(
            "jitter", f"must be a number of seconds or None (no jitter), got {value!r}"
        )
    if not 0 <= value <= MAX_JITTER:
        raise ScheduleValidationError(
            "jitter", f"{value!r} is out of range: 0 to {MAX_JITTER:.0f} seconds (None: no jitter)"
        )
    return float(value)
