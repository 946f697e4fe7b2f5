"""Fixtures backed by real PostgreSQL and Beanstalkd processes (see tests/servers.py).

Set ``POSTBURNER_TEST_DATABASE_URL`` / ``POSTBURNER_TEST_BEANSTALKD_URL`` to use existing servers
instead; tests that stop or restart a server then skip. A missing server binary skips the tests
that need it, except under ``CI=true``, where it fails them.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from tests.servers import BeanstalkdServer, PostgresServer, ServerProcess, ServerUnavailable

TEMPLATE_DATABASE = "pb_template"
LEAK_GRACE_SECONDS = 2.0
_SESSION_SERVERS: list[ServerProcess] = []
S = TypeVar("S", bound=ServerProcess)


def migrate_template(url: str) -> None:
    """Bring the database at ``url`` to the latest schema. The one place tests migrate."""
    from postburner_py import Postburner

    postburner = Postburner(database_url=url)
    try:
        postburner.migrate()
    finally:
        postburner.dispose()


def _unavailable(reason: str) -> NoReturn:
    """A server the tests need is missing: skip, or fail under CI where that is a defect."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: a missing server is a failure)", pytrace=False)
    pytest.skip(reason)


class ExternalServer:
    """A server the user pointed the suite at: it can be used, not bounced."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _refuse(self) -> NoReturn:
        pytest.skip(f"needs a server the suite started; {self.url} is external")

    def stop(self) -> NoReturn:
        self._refuse()

    kill = start = restart = stop

    def ensure_running(self) -> None:
        """Nothing to do: the suite never stops an external server."""


class ExternalPostgres(ExternalServer):
    """``POSTBURNER_TEST_DATABASE_URL``: a SQLAlchemy URL of a database the user may CREATE in."""

    @property
    def admin_url(self) -> str:
        return make_url(self.url).set(drivername="postgresql").render_as_string(False)

    def url_for(self, database: str) -> str:
        return make_url(self.url).set(database=database).render_as_string(False)


def _local_server(factory: Callable[[], S]) -> S:
    try:
        server = factory()
    except ServerUnavailable as exc:
        _unavailable(str(exc))
    server.start()
    return server


# -- servers -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """PostgreSQL for the whole session: ``.url`` (SQLAlchemy), ``.admin_url`` (libpq)."""
    external = os.environ.get("POSTBURNER_TEST_DATABASE_URL")
    if external:
        yield ExternalPostgres(external)
        return
    server = _local_server(PostgresServer)
    _SESSION_SERVERS.append(server)
    yield server
    _SESSION_SERVERS.remove(server)
    server.close()


@pytest.fixture(scope="session")
def beanstalkd_server() -> Iterator[Any]:
    """The shared Beanstalkd (no binlog). Isolate tests with the ``namespace`` fixture."""
    external = os.environ.get("POSTBURNER_TEST_BEANSTALKD_URL")
    if external:
        yield ExternalServer(external)
        return
    server = _local_server(BeanstalkdServer)
    _SESSION_SERVERS.append(server)
    yield server
    _SESSION_SERVERS.remove(server)
    server.close()


@pytest.fixture
def beanstalkd_factory() -> Iterator[Callable[..., BeanstalkdServer]]:
    """``beanstalkd_factory(binlog=False)``: a private Beanstalkd a test may crash at will."""
    started: list[BeanstalkdServer] = []

    def make(binlog: bool = False) -> BeanstalkdServer:
        server = _local_server(lambda: BeanstalkdServer(binlog=binlog))
        started.append(server)
        return server

    yield make
    for server in started:
        server.close()


@pytest.fixture(autouse=True)
def _restart_session_servers_left_down() -> Iterator[None]:
    """A fault test that stops a shared server must not break the tests after it."""
    yield
    for server in _SESSION_SERVERS:
        server.ensure_running()


@pytest.fixture
def namespace() -> str:
    """A tube namespace no other test uses."""
    return f"t{uuid.uuid4().hex[:12]}"


# -- databases -----------------------------------------------------------------------


class PostburnerInstances:
    """Every Postburner a test made, disposed before its database is dropped."""

    def __init__(self) -> None:
        self._items: list[Any] = []

    def add(self, postburner: Any) -> Any:
        self._items.append(postburner)
        return postburner

    def dispose_all(self) -> None:
        while self._items:
            self._items.pop().dispose()


@pytest.fixture
def postburner_instances() -> Iterator[PostburnerInstances]:
    instances = PostburnerInstances()
    yield instances
    instances.dispose_all()


def _admin(server: Any, statement: sql.Composed) -> None:
    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        conn.execute(statement)


def _open_sessions(server: Any, database: str) -> int:
    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
    deadline = time.monotonic() + LEAK_GRACE_SECONDS
    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        while True:
            row = conn.execute(query, (database,)).fetchone()
            count = int(row[0]) if row else 0
            # A backend whose client just hung up needs a moment to leave the view.
            if count == 0 or time.monotonic() > deadline:
                return count
            time.sleep(0.01)


@pytest.fixture(scope="session")
def pg_template(pg_server: Any) -> Iterator[str]:
    """A database migrated once per session, cloned by ``postgres_url``."""
    local = isinstance(pg_server, PostgresServer)
    # Runs sharing an external server must not drop each other's template.
    name = TEMPLATE_DATABASE if local else f"{TEMPLATE_DATABASE}_{uuid.uuid4().hex[:8]}"
    _admin(
        pg_server, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    )
    _admin(pg_server, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    migrate_template(pg_server.url_for(name))
    yield name
    if not local:
        _admin(pg_server, sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def postgres_url(
    pg_server: Any, pg_template: str, postburner_instances: PostburnerInstances
) -> Iterator[str]:
    """A fresh, migrated, empty PostgreSQL database; fails the test if it leaks connections."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    create = sql.SQL("CREATE DATABASE {} TEMPLATE {}")
    _admin(pg_server, create.format(sql.Identifier(name), sql.Identifier(pg_template)))
    yield pg_server.url_for(name)
    postburner_instances.dispose_all()
    pg_server.ensure_running()
    leaked = _open_sessions(pg_server, name)
    _admin(pg_server, sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
    if leaked:
        pytest.fail(f"{leaked} connection(s) to {name} still open after dispose()", pytrace=False)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once per session, copied by ``sqlite_url``."""
    path = tmp_path_factory.mktemp("sqlite-template") / "pb.sqlite3"
    migrate_template(f"sqlite:///{path}")
    return path


@pytest.fixture
def sqlite_url(
    sqlite_template: Path, tmp_path: Path, postburner_instances: PostburnerInstances
) -> Iterator[str]:
    """A fresh, migrated SQLite database file in the test's tmp_path."""
    # Copy any -wal/-journal sibling too, so nothing the migration wrote is left behind.
    for source in sqlite_template.parent.glob(f"{sqlite_template.name}*"):
        shutil.copyfile(source, tmp_path / source.name)
    yield f"sqlite:///{tmp_path / sqlite_template.name}"
    postburner_instances.dispose_all()


@pytest.fixture(params=["postgresql", "sqlite"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each backend in turn: the same test runs against PostgreSQL and SQLite."""
    fixture = "postgres_url" if request.param == "postgresql" else "sqlite_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def make_postburner(
    request: pytest.FixtureRequest, namespace: str, postburner_instances: PostburnerInstances
) -> Callable[..., Any]:
    """``make_postburner(database_url=None, beanstalkd_url=None, **overrides) -> Postburner``.

    Defaults: the test's ``database_url`` (the test must request it, it is parametrized), the
    session Beanstalkd, the test's ``namespace`` and ``secret="test-secret"``. Every instance is
    disposed at teardown, before its database is dropped.
    """

    def make(
        database_url: str | None = None, beanstalkd_url: str | None = None, **overrides: Any
    ) -> Any:
        from postburner_py import Postburner

        if database_url is None:
            if "database_url" not in request.fixturenames:
                pytest.fail("request the database_url fixture, or pass database_url=postgres_url")
            database_url = str(request.getfixturevalue("database_url"))
        if beanstalkd_url is None:
            beanstalkd_url = str(request.getfixturevalue("beanstalkd_server").url)
        settings: dict[str, Any] = {"namespace": namespace, "secret": "test-secret"}
        settings.update(overrides, database_url=database_url, beanstalkd_url=beanstalkd_url)
        return postburner_instances.add(Postburner(**settings))

    return make
