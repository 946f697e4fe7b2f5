"""The test harness itself: servers bounce on the same port and keep their data."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

from postburner_py.errors import QueueUnavailableError
from postburner_py.queue.beanstalk import BeanstalkQueue
from tests.servers import PostgresServer, is_gone, wait_until

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def scratch_table(pg_server):
    """A table in the server's admin database, dropped afterwards."""
    name = f"harness_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (value int)")
    yield name
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE {name}")


@pytest.mark.parametrize("bounce", ["stop", "kill"])
def test_postgres_comes_back_on_the_same_port_with_committed_rows(pg_server, scratch_table, bounce):
    if not isinstance(pg_server, PostgresServer):
        pytest.skip("the suite did not start this PostgreSQL")
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(f"INSERT INTO {scratch_table} SELECT generate_series(1, 100)")
    port = pg_server.port

    getattr(pg_server, bounce)()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg_server.admin_url, connect_timeout=2)
    pg_server.start()

    assert pg_server.port == port
    with psycopg.connect(pg_server.admin_url) as conn:
        assert conn.execute(f"SELECT count(*) FROM {scratch_table}").fetchone() == (100,)


@pytest.mark.parametrize("bounce", ["stop", "kill"])
def test_beanstalkd_with_binlog_keeps_a_delayed_job_across_restart(beanstalkd_factory, bounce):
    server = beanstalkd_factory(binlog=True)
    queue = BeanstalkQueue(server.url, connect_timeout=2.0)
    try:
        job_id = queue.put(b"survivor", queue="q", priority=1, delay=3600, ttr=60)

        getattr(server, bounce)()
        with pytest.raises(QueueUnavailableError):
            queue.stats()
        server.start()

        assert queue.peek(job_id).body == b"survivor"
        assert queue.stats_job(job_id)["state"] == "delayed"
    finally:
        queue.close()


def test_beanstalkd_without_binlog_forgets_jobs_on_restart(beanstalkd_factory):
    server = beanstalkd_factory()
    queue = BeanstalkQueue(server.url, connect_timeout=2.0)
    try:
        job_id = queue.put(b"gone", queue="q", priority=1, delay=3600, ttr=60)
        server.restart()
        assert queue.peek(job_id) is None
    finally:
        queue.close()


CHILD = """
import sys
from pathlib import Path
from tests.servers import BeanstalkdServer
server = BeanstalkdServer(base_dir=Path(sys.argv[1]))
server.start()
print(server.pid, flush=True)
sys.stdin.read()
"""


def test_servers_die_with_a_test_process_that_is_killed(tmp_path):
    if sys.platform != "linux":
        pytest.skip("parent-death signals are Linux-only")
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    server_pid = None
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        if not line:
            pytest.skip("beanstalkd could not be started in the child")
        server_pid = int(line)
        child.send_signal(signal.SIGKILL)
        child.wait()
        wait_until(lambda: is_gone(server_pid), 5.0, "beanstalkd to die with its parent")
    finally:
        child.kill()
        child.wait()
        if server_pid is not None and not is_gone(server_pid):
            os.kill(server_pid, signal.SIGKILL)  # do not leave the orphan behind on failure
