"""The :class:`Postburner` object: configuration, database engine, sessions and queue adapter.

Application code, admin scripts, the watchdog and the workers all use one of these.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from postburner_py.config import Settings, resolve_settings
from postburner_py.queue.beanstalk import BeanstalkQueue
from postburner_py.store import Store, store_for
from postburner_py.store.connect import SQLITE_BUSY_TIMEOUT_MS, make_engine, writer_engine
from postburner_py.store.engine import utcnow

if TYPE_CHECKING:
    from postburner_py.schedules.one_off import DelayedJob

log = logging.getLogger("postburner_py")

__all__ = ["SQLITE_BUSY_TIMEOUT_MS", "Postburner"]


class Postburner:
    """Entry point of the library.

    Every argument falls back to a ``POSTBURNER_*`` environment variable
    (``POSTBURNER_DATABASE_URL``, ``POSTBURNER_BEANSTALKD_URL``, ``POSTBURNER_NAMESPACE``,
    ``POSTBURNER_ALLOWED_JOB_PREFIXES`` (comma-separated), ``POSTBURNER_SECRET``,
    ``POSTBURNER_CATCH_UP_WINDOW`` (seconds), ``POSTBURNER_NODE_ID``), then to the defaults:
    SQLite in the working directory and Beanstalkd on ``127.0.0.1:11300``.
    ``clock`` is the source of "now" for everything this object does on its own
    (hooks after commit, default arguments); tests pass a controllable one.

    Sessions from :meth:`session` carry this object, so ``execution.skip()`` and
    ``schedule.reconcile()`` reach the queue without globals.
    """

    def __init__(
        self,
        database_url: str | None = None,
        beanstalkd_url: str | None = None,
        allowed_job_prefixes: str | Sequence[str] | None = None,
        secret: str | None = None,
        namespace: str | None = None,
        *,
        catch_up_window: float | timedelta | None = None,
        node_id: str | None = None,
        engine_options: dict[str, Any] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings: Settings = resolve_settings(
            database_url=database_url,
            beanstalkd_url=beanstalkd_url,
            namespace=namespace,
            allowed_job_prefixes=allowed_job_prefixes,
            secret=secret,
            catch_up_window=catch_up_window,
            node_id=node_id,
        )
        self.clock = clock
        self.engine: Engine = make_engine(self.settings.database_url, engine_options or {})
        #: The storage seam for this engine's dialect family, decided once.
        self.store: Store = store_for(self.engine)
        self.session_factory: sessionmaker[Session] = sessionmaker(
            self.engine, expire_on_commit=False, info={"postburner": self}
        )
        #: The engine for read-then-write transactions (``BEGIN IMMEDIATE`` on SQLite).
        self.writer_engine: Engine = writer_engine(self.engine)
        self.work_session_factory: sessionmaker[Session] = sessionmaker(
            self.writer_engine, expire_on_commit=False, info={"postburner": self}
        )
        self.queue = BeanstalkQueue(self.settings.beanstalkd_url, self.settings.namespace)
        self._secret: bytes | None = None
        self._secret_lock = threading.Lock()
        from postburner_py.schedules.session_hooks import install_session_hooks

        install_session_hooks(self.session_factory)
        install_session_hooks(self.work_session_factory)
        if not self.settings.allowed_job_prefixes:
            _warn_unrestricted_once()

    def __repr__(self) -> str:
        return (
            f"<Postburner database={self.engine.url.render_as_string(hide_password=True)} "
            f"beanstalkd={self.settings.beanstalkd_url} namespace={self.settings.namespace}>"
        )

    @property
    def dialect(self) -> str:
        """``postgresql`` or ``sqlite``."""
        return self.store.capabilities.family

    def session(self) -> Session:
        """A new ORM session that knows this Postburner (use it as a context manager)."""
        return self.session_factory()

    def work_session(self) -> Session:
        """A session for the library's own read-then-write transactions.

        On SQLite its transactions begin ``IMMEDIATE`` (the write lock up front), so a
        transaction that reads and then writes never fails to upgrade its lock.
        """
        return self.work_session_factory()

    def migrate(self, revision: str = "head") -> None:
        """Upgrade the database schema (Alembic) and make sure a signing secret exists."""
        from postburner_py.store.migrate import upgrade

        upgrade(self.engine, revision)
        if revision == "head":
            self.secret()

    def secret(self) -> bytes:
        """The HMAC key that signs job bodies: ``secret=``/``POSTBURNER_SECRET``, else a
        random key generated once and stored in the database for every process to share."""
        if self._secret is not None:  # every job asks: no lock once it is known
            return self._secret
        with self._secret_lock:
            if self._secret is None:
                from postburner_py.queue.signing import load_or_create_secret

                configured = self.settings.secret
                self._secret = (
                    configured.encode() if configured else load_or_create_secret(self.engine)
                )
            return self._secret

    def enqueue_at(
        self,
        at: datetime,
        job_class: str,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        queue: str = "default",
        job_id: str | None = None,
        **options: Any,
    ) -> DelayedJob:
        """Store a one-off job due at ``at`` and put it into Beanstalkd at once.

        ``job_id`` (default: a random one) is unique while the job is pending
        (:class:`~postburner_py.errors.DuplicateJobError`); ``priority``, ``ttr`` and
        ``max_attempts`` may be given too. See :mod:`postburner_py.schedules.one_off`.
        """
        from postburner_py.schedules.one_off import enqueue_at

        return enqueue_at(self, at, job_class, args, kwargs, queue=queue, job_id=job_id, **options)

    def cancel(self, job_id: str) -> bool:
        """Cancel a pending one-off job; False when none is pending or it already started."""
        from postburner_py.schedules.one_off import cancel

        return cancel(self, job_id)

    def dispose(self) -> None:
        """Close the Beanstalkd connections and the database pool."""
        self.queue.close()
        self.engine.dispose()


_unrestricted_warned = threading.Event()


def _warn_unrestricted_once() -> None:
    if not _unrestricted_warned.is_set():
        _unrestricted_warned.set()
        log.warning(
            "allowed_job_prefixes is empty: any importable job_class may run; "
            "set POSTBURNER_ALLOWED_JOB_PREFIXES to restrict it"
        )
