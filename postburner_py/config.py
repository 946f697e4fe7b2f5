"""Settings: keyword arguments first, then ``POSTBURNER_*`` environment variables, then defaults."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from postburner_py.errors import ConfigurationError
from postburner_py.validation import allow_rule

DEFAULT_DATABASE_URL = "sqlite:///postburner.sqlite3"
DEFAULT_BEANSTALKD_URL = "beanstalk://127.0.0.1:11300"
DEFAULT_NAMESPACE = "postburner"
DEFAULT_CATCH_UP_WINDOW = timedelta(hours=1)
DEFAULT_SHUTDOWN_GRACE = 30.0


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


def _parse_window(raw: str | float | timedelta | None) -> timedelta | None:
    if raw is None or isinstance(raw, timedelta):
        return raw
    try:
        seconds = float(raw)
    except ValueError:
        raise ConfigurationError(
            f"catch_up_window: {raw!r} is not a number of seconds; "
            "set POSTBURNER_CATCH_UP_WINDOW=3600 for one hour"
        ) from None
    if seconds < 0:
        raise ConfigurationError("catch_up_window: must be >= 0 seconds")
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
    window = _parse_window(catch_up_window)
    if window is None:
        window = _parse_window(env.get("POSTBURNER_CATCH_UP_WINDOW")) or defaults.catch_up_window
    grace = parse_shutdown_grace(shutdown_grace)
    if grace is None:
        grace = parse_shutdown_grace(env.get("POSTBURNER_SHUTDOWN_GRACE"))
    return Settings(
        shutdown_grace=defaults.shutdown_grace if grace is None else grace,
        database_url=database_url or env.get("POSTBURNER_DATABASE_URL") or defaults.database_url,
        beanstalkd_url=(
            beanstalkd_url or env.get("POSTBURNER_BEANSTALKD_URL") or defaults.beanstalkd_url
        ),
        namespace=_validate_namespace(
            namespace or env.get("POSTBURNER_NAMESPACE") or defaults.namespace
        ),
        allowed_job_prefixes=prefixes,
        secret=secret or env.get("POSTBURNER_SECRET") or None,
        catch_up_window=window,
        node_id=node_id or env.get("POSTBURNER_NODE_ID") or defaults.node_id,
    )
