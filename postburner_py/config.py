"""Settings: keyword arguments first, then ``POSTBURNER_*`` environment variables, then defaults.

:data:`VARIABLES` is the one list of every ``POSTBURNER_*`` variable any part of postburner
reads: ``postburner init`` writes its environment file from it, and tests check that
``docs/configuration.md`` documents each one and that no code reads a variable missing here.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import TypeVar
from urllib.parse import unquote

from postburner_py.errors import ConfigurationError, DatabaseUrlRequiredError
from postburner_py.validation import allow_rule

DEFAULT_DATABASE_URL = "sqlite:///postburner.sqlite3"
DEFAULT_BEANSTALKD_URL = "beanstalk://127.0.0.1:11300"
DEFAULT_NAMESPACE = "postburner"
DEFAULT_CATCH_UP_WINDOW = timedelta(hours=1)
DEFAULT_SHUTDOWN_GRACE = 30.0
N = TypeVar("N", int, float)
#: The longest catch-up window: further back than this nothing is caught up (and the
#: arithmetic ``now - window`` stays inside the datetime range).
MAX_CATCH_UP_WINDOW = timedelta(days=366)


@dataclass(frozen=True)
class Variable:
    """One ``POSTBURNER_*`` variable: what it sets, its default (as documented) and an
    example value for the environment file ``postburner init`` writes."""

    name: str
    option: str
    default: str
    meaning: str
    example: str = ""


VARIABLES: tuple[Variable, ...] = (
    Variable(
        "POSTBURNER_DATABASE_URL",
        "--database-url",
        DEFAULT_DATABASE_URL,
        "SQLAlchemy URL of the database (PostgreSQL for several machines)",
        "postgresql+psycopg://postburner:PASSWORD@127.0.0.1:5432/postburner",
    ),
    Variable(
        "POSTBURNER_REQUIRE_DATABASE_URL",
        "none",
        "unset",
        "1: refuse to start on the SQLite default; an explicit database URL is required",
        "1",
    ),
    Variable(
        "POSTBURNER_BEANSTALKD_URL",
        "--beanstalkd-url",
        DEFAULT_BEANSTALKD_URL,
        "Beanstalkd, beanstalk://host:port",
        DEFAULT_BEANSTALKD_URL,
    ),
    Variable(
        "POSTBURNER_NAMESPACE",
        "--namespace",
        DEFAULT_NAMESPACE,
        "prefix of the Beanstalkd tubes (<namespace>.<queue>); lets apps share one server",
        DEFAULT_NAMESPACE,
    ),
    Variable(
        "POSTBURNER_ALLOWED_JOB_PREFIXES",
        "--allowed-job-prefixes",
        "empty (any job)",
        "comma-separated code a worker may run, e.g. myapp.jobs",
        "myapp.jobs",
    ),
    Variable(
        "POSTBURNER_SECRET",
        "--secret",
        "generated, stored in the database",
        "HMAC key that signs job bodies; the same in every process",
    ),
    Variable(
        "POSTBURNER_CATCH_UP_WINDOW",
        "--catch-up-window",
        "3600",
        "seconds into the past a catch_up schedule still runs a missed occurrence",
        "3600",
    ),
    Variable(
        "POSTBURNER_NODE_ID",
        "--node-id",
        "hostname:pid",
        "name of this process in the dispatch log and the heartbeats",
    ),
    Variable(
        "POSTBURNER_SHUTDOWN_GRACE",
        "worker --shutdown-grace",
        "30",
        "seconds a stopping worker waits for its running jobs and their outcomes",
        "30",
    ),
    Variable(
        "POSTBURNER_QUEUES",
        "worker --queue",
        "every queue that has schedules, and default",
        "comma-separated queues a worker serves",
        "default,reports",
    ),
    Variable(
        "POSTBURNER_CONCURRENCY",
        "worker --concurrency",
        "1",
        "jobs one worker runs at once, 1 .. 1024",
        "4",
    ),
    Variable(
        "POSTBURNER_PREFETCH",
        "worker --prefetch",
        "the concurrency",
        "jobs a worker holds beyond the running ones, 0 .. 10000",
        "4",
    ),
    Variable(
        "POSTBURNER_WATCHDOG_INTERVAL",
        "watchdog --interval",
        "60",
        "seconds between watchdog passes, > 0 and <= 86400",
        "30",
    ),
    Variable(
        "POSTBURNER_METRICS_PORT",
        "worker/watchdog --metrics-port",
        "none",
        "serve Prometheus metrics on this port, 1 .. 65535",
        "9108",
    ),
    Variable(
        "POSTBURNER_METRICS_HOST",
        "worker/watchdog --metrics-host",
        "127.0.0.1",
        "address the metrics server listens on (0.0.0.0 in a container)",
        "127.0.0.1",
    ),
    Variable(
        "POSTBURNER_PER_SCHEDULE_METRICS",
        "worker --per-schedule-metrics",
        "unset",
        "1: label the worker's run metrics with the schedule name too (one series per schedule)",
        "1",
    ),
    Variable(
        "POSTBURNER_LOG_FORMAT",
        "worker/watchdog/dev --log-format",
        "text",
        "text, or json: one JSON object per line with a stable action key (docs/operations.md)",
        "json",
    ),
    Variable(
        "POSTBURNER_LOG_LEVEL",
        "worker/watchdog/dev --log-level",
        "INFO",
        "DEBUG, INFO (a line per run start and finish), WARNING (no line per run) or ERROR",
        "INFO",
    ),
    Variable(
        "POSTBURNER_HEALTH_PORT",
        "worker/watchdog --health-port",
        "none",
        "serve the /livez and /readyz probes on this port, 1 .. 65535",
        "8080",
    ),
    Variable(
        "POSTBURNER_HEALTH_HOST",
        "worker/watchdog --health-host",
        "127.0.0.1",
        "address the probes listen on (0.0.0.0 for a kubelet)",
        "127.0.0.1",
    ),
    Variable(
        "POSTBURNER_ENV",
        "sync --env",
        "production",
        "the schedule file section merged over defaults",
        "production",
    ),
    Variable("POSTBURNER_JSON", "--json", "unset", "1: listing commands print JSON", "1"),
    Variable(
        "POSTBURNER_DEBUG", "--debug", "unset", "1: debug logs, and tracebacks on errors", "1"
    ),
    Variable(
        "POSTBURNER_TZ",
        "next --tz",
        "UTC, or the schedule's",
        "timezone of `postburner next`",
        "Europe/Prague",
    ),
)
_TRUE = frozenset({"1", "true", "yes", "on"})


@dataclass(frozen=True)
class Settings:
    """Resolved configuration of one :class:`~postburner_py.Postburner` instance."""

    database_url: str = DEFAULT_DATABASE_URL
    beanstalkd_url: str = DEFAULT_BEANSTALKD_URL
    namespace: str = DEFAULT_NAMESPACE
    allowed_job_prefixes: tuple[str, ...] = ()
    secret: str | None = None
    catch_up_window: timedelta = DEFAULT_CATCH_UP_WINDOW
    #: Seconds a stopping worker waits for running attempts and their outcome commits.
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE
    node_id: str = field(default_factory=lambda: f"{os.uname().nodename}:{os.getpid()}")

    def __repr__(self) -> str:
        """Every field, with the secret and the URLs' passwords masked (``***``)."""
        shown = {item.name: getattr(self, item.name) for item in fields(self)}
        shown["database_url"] = mask_url(self.database_url)
        shown["beanstalkd_url"] = mask_url(self.beanstalkd_url)
        if self.secret is not None:
            shown["secret"] = MASK
        return f"Settings({', '.join(f'{name}={value!r}' for name, value in shown.items())})"

    __str__ = __repr__

    def redact(self, text: str) -> str:
        """``text`` with the secret and the database password replaced by ``***``."""
        return redact(text, database_url=self.database_url, secret=self.secret)


MASK = "***"
_MIN_REDACTED = 4
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@]*):(?P<pw>[^@/]*)@")


def mask_url(url: str) -> str:
    """``url`` with its password (the part after ``user:``) replaced by ``***``; works on
    URLs SQLAlchemy cannot parse too."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", url)


def redact(text: str, *, database_url: str | None, secret: str | None) -> str:
    """``text`` with ``secret`` and the password of ``database_url`` replaced by ``***``
    (for error messages that quote a connection string or a setting; values shorter than
    four characters are only masked where they appear as a URL's password)."""
    hidden = [secret] if secret else []
    found = _USERINFO.search(database_url or "")
    if found and found["pw"]:
        hidden += [found["pw"], unquote(found["pw"])]
    # Very short values are left to the URL masking: replacing them everywhere would
    # garble the message and tell what they are.
    for value in sorted({v for v in hidden if len(v) >= _MIN_REDACTED}, key=len, reverse=True):
        text = text.replace(value, MASK)
    return mask_url(text)


def _split_prefixes(raw: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """The configured prefixes as given (blank items dropped), each checked by
    :func:`~postburner_py.validation.allow_rule` (:class:`ConfigurationError` for garbage)."""
    if raw is None:
        return None
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    kept = [item for item in items if not _blank(item)]
    for item in kept:
        allow_rule(item)
    return tuple(item.strip() for item in kept)


def _blank(item: object) -> bool:
    return isinstance(item, str) and not item.strip()


def _parse_window(raw: str | float | timedelta | None, source: str) -> timedelta | None:
    if raw is None:
        return None
    limit = MAX_CATCH_UP_WINDOW.total_seconds()
    seconds = (
        raw.total_seconds()
        if isinstance(raw, timedelta)
        else parse_number(raw, source, float, 0, limit, example="3600")
    )
    if not 0 <= seconds <= limit:
        raise ConfigurationError(
            f"{source}: {raw!r} is out of range: give 0..{limit:.0f} seconds, e.g. 3600"
        )
    return timedelta(seconds=seconds)


def parse_shutdown_grace(raw: str | float | None) -> float | None:
    """Seconds >= 0 (finite), from an argument or ``POSTBURNER_SHUTDOWN_GRACE``."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise ConfigurationError(
            f"shutdown_grace: {raw!r} is not a number of seconds >= 0; "
            "set POSTBURNER_SHUTDOWN_GRACE=30 for half a minute"
        )
    return seconds


def parse_number(raw: object, source: str, kind: type[N], low: N, high: N, *, example: str) -> N:
    """``raw`` (text or a number) as a finite ``kind`` in ``low..high``.

    ``source`` names where it came from (``POSTBURNER_CONCURRENCY``, ``--interval``, a
    keyword argument) and the error says how to fix it: :class:`ConfigurationError` (a
    ``ValueError``; the CLI exits 2 with one line).
    """
    what = "a whole number" if kind is int else "a number"
    value: N | None
    try:
        value = kind(raw.strip() if isinstance(raw, str) else raw)  # type: ignore[arg-type,call-overload]
    except (TypeError, ValueError, OverflowError):
        value = None
    if kind is int and isinstance(raw, float) and not raw.is_integer():
        value = None
    if value is None or not math.isfinite(value) or not low <= value <= high:
        raise ConfigurationError(
            f"{source}: {raw!r} is not {what} in {_shown(low)}..{_shown(high)}; "
            f"{_fix(source, example)}"
        )
    return value


def _shown(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def _fix(source: str, example: str) -> str:
    if source.startswith("POSTBURNER_"):
        return f"set e.g. {source}={example}, or unset it for the default"
    if source.startswith("--"):
        return f"give e.g. {source} {example}"
    return f"pass e.g. {source}={example}"


def _validate_namespace(namespace: str) -> str:
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
    if not namespace or not set(namespace) <= allowed or namespace[0] == "-":
        raise ConfigurationError(
            f"namespace: {namespace!r} must be letters, digits, '-' or '_' "
            "and not start with '-' (it prefixes Beanstalkd tube names)"
        )
    return namespace


def resolve_settings(
    *,
    database_url: str | None = None,
    beanstalkd_url: str | None = None,
    namespace: str | None = None,
    allowed_job_prefixes: str | Sequence[str] | None = None,
    secret: str | None = None,
    catch_up_window: str | float | timedelta | None = None,
    node_id: str | None = None,
    shutdown_grace: str | float | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build :class:`Settings` from arguments, falling back to ``POSTBURNER_*`` variables."""
    env = os.environ if environ is None else environ
    defaults = Settings()
    prefixes = _split_prefixes(allowed_job_prefixes)
    if prefixes is None:
        prefixes = _split_prefixes(env.get("POSTBURNER_ALLOWED_JOB_PREFIXES")) or ()
    window = _parse_window(catch_up_window, "catch_up_window")
    if window is None:
        variable = "POSTBURNER_CATCH_UP_WINDOW"
        window = _parse_window(env.get(variable) or None, variable)
    if window is None:
        window = defaults.catch_up_window
    grace = parse_shutdown_grace(shutdown_grace)
    if grace is None:
        grace = parse_shutdown_grace(env.get("POSTBURNER_SHUTDOWN_GRACE"))
    return Settings(
        shutdown_grace=defaults.shutdown_grace if grace is None else grace,
        database_url=_database_url(database_url, env) or defaults.database_url,
        beanstalkd_url=(
            beanstalkd_url or env.get("POSTBURNER_BEANSTALKD_URL") or defaults.beanstalkd_url
        ),
        namespace=_validate_namespace(
            namespace or env.get("POSTBURNER_NAMESPACE") or defaults.namespace
        ),
        allowed_job_prefixes=prefixes,
        secret=secret or env.get("POSTBURNER_SECRET") or None,
        catch_up_window=window,
        node_id=_validate_node_id(node_id or env.get("POSTBURNER_NODE_ID") or defaults.node_id),
    )


def _database_url(given: str | None, env: Mapping[str, str]) -> str | None:
    """The URL given or set; None for the default, unless the default is refused."""
    url = given or env.get("POSTBURNER_DATABASE_URL") or None
    required = env.get("POSTBURNER_REQUIRE_DATABASE_URL", "").strip().lower() in _TRUE
    if url is None and required:
        raise DatabaseUrlRequiredError(
            "database_url: POSTBURNER_REQUIRE_DATABASE_URL is set and no database URL is: "
            "the SQLite default is refused; set POSTBURNER_DATABASE_URL (e.g. "
            "postgresql+psycopg://user:password@postgres:5432/postburner) or --database-url"
        )
    return url


#: The dispatch log's and the job history's column width for a node (worker) id.
MAX_NODE_ID = 200


def _validate_node_id(node_id: str) -> str:
    if len(node_id) > MAX_NODE_ID:
        raise ConfigurationError(
            f"node_id: {len(node_id)} characters, at most {MAX_NODE_ID} "
            "(it is stored with every dispatch; a worker adds its thread number); "
            "set a shorter POSTBURNER_NODE_ID or --node-id"
        )
    return node_id
