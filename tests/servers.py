"""Real PostgreSQL and Beanstalkd processes for the test suite.

Each server listens on a free loopback port and keeps that port and its data directory across
``stop()``/``kill()``/``start()``/``restart()``, so fault tests can bounce it. ``close()`` stops it
and deletes its data. Children die with the test process, even on SIGKILL (Linux
``PR_SET_PDEATHSIG``); an ``atexit`` hook covers normal exits everywhere.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg

START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
_POLL_INTERVAL = 0.01
PR_SET_PDEATHSIG = 1

# The death signal fires when the *thread* that forked the child exits, so every child is
# forked from this one long-lived thread rather than from whichever test thread asks.
_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-server-spawner")
_LIVE: set[ServerProcess] = set()
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


class ServerUnavailable(RuntimeError):
    """The server's binaries (or the user to run them as) are missing on this machine."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL)


def wait_until(ready: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``ready`` until it is true; TimeoutError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout:.0f}s")
        time.sleep(_POLL_INTERVAL)


def is_gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie nobody reaps counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (empty where /proc is unavailable)."""
    found = []
    for stat_file in glob.glob("/proc/[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            fields = Path(stat_file).read_text().rpartition(")")[2].split()
            if int(fields[1]) == pid:
                found.append(int(stat_file.split("/")[2]))
    return found


class ServerProcess:
    """A server process on a fixed port with a persistent data directory."""

    name = "server"
    stop_signal = signal.SIGTERM

    def __init__(self, base_dir: Path | None = None, user: str | None = None) -> None:
        self.port = free_port()
        self.base_dir = base_dir or Path(tempfile.mkdtemp(prefix=f"pb-{self.name}-"))
        self.user = user
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} port={self.port} running={self.is_running}>"

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """Process id while running."""
        return self._proc.pid if self._proc is not None and self.is_running else None

    @property
    def log_path(self) -> Path:
        return self.base_dir / f"{self.name}.log"

    def start(self) -> None:
        """Start on the same port and data directory; return once it answers."""
        if self.is_running:
            return
        self._prepare()
        with self.log_path.open("ab") as log:
            self._proc = _SPAWNER.submit(self._spawn, log).result()
        _LIVE.add(self)
        try:
            wait_until(self._answers_or_died, START_TIMEOUT, f"{self.name} answering")
        except TimeoutError as exc:
            self.kill()
            raise TimeoutError(f"{exc}; its log ends:\n{self.log_tail()}") from None
        if not self.is_running:
            raise RuntimeError(f"{self.name} exited on start:\n{self.log_tail()}")

    def stop(self) -> None:
        """Graceful shutdown; SIGKILL if it has not exited within STOP_TIMEOUT."""
        if self._proc is not None and self.is_running:
            self._proc.send_signal(self.stop_signal)
            try:
                self._proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
        _LIVE.discard(self)

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would; returns once it is gone."""
        if self._proc is not None and self.is_running:
            self._proc.kill()
            self._proc.wait()
        _LIVE.discard(self)

    def restart(self) -> None:
        """Graceful stop, then start on the same port and data."""
        self.stop()
        self.start()

    def ensure_running(self) -> None:
        """Start it again if a test left it stopped."""
        if not self.is_running:
            self.start()

    def close(self) -> None:
        """Stop it and delete its data directory."""
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _spawn(self, log: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self._argv(),
            stdin=subprocess.DEVNULL,
            cwd=self.base_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            user=self.user,
            group=self.user,
            extra_groups=[] if self.user else None,
            process_group=0,  # keep the terminal's Ctrl-C for pytest, which then stops us
            preexec_fn=_die_with_parent,
        )

    def _answers_or_died(self) -> bool:
        return not self.is_running or self.answers()

    def _prepare(self) -> None:
        """Create what the first start needs (data directories)."""

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def answers(self) -> bool:
        """True when the server accepts a connection and replies to a request."""
        raise NotImplementedError


class BeanstalkdServer(ServerProcess):
    """``beanstalkd -l 127.0.0.1 -p PORT [-b BINLOG_DIR]``."""

    name = "beanstalkd"

    def __init__(self, *, binlog: bool = False, base_dir: Path | None = None) -> None:
        self.binary = shutil.which("beanstalkd")
        if self.binary is None:
            raise ServerUnavailable("beanstalkd is not installed (apt-get install beanstalkd)")
        super().__init__(base_dir)
        self.binlog_dir = self.base_dir / "binlog" if binlog else None

    @property
    def url(self) -> str:
        return f"beanstalk://127.0.0.1:{self.port}"

    def _prepare(self) -> None:
        if self.binlog_dir is not None:
            self.binlog_dir.mkdir(exist_ok=True)

    def _argv(self) -> list[str]:
        argv = [str(self.binary), "-l", "127.0.0.1", "-p", str(self.port)]
        return argv + (["-b", str(self.binlog_dir)] if self.binlog_dir else [])

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"list-tube-used\r\n")
                return sock.recv(64).startswith(b"USING")
        except OSError:
            return False


def find_postgres_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``postgres``: pg_config, then Debian's layout, PATH."""
    candidates: list[str] = []
    if shutil.which("pg_config"):
        result = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        candidates.append(result.stdout.strip())
    by_version = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True
    )
    candidates += by_version
    if shutil.which("initdb"):
        candidates.append(str(Path(str(shutil.which("initdb"))).parent))
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    return None


class PostgresServer(ServerProcess):
    """A throwaway PostgreSQL cluster: trust auth, no fsync, user ``postgres``."""

    name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: does not wait for clients to disconnect
    # synchronous_commit stays on: with fsync off a commit costs one write() (measured no slower
    # than off), and it keeps committed rows across kill(), which fault tests rely on; "off"
    # lost the last ~50 of 3000 autocommitted inserts on SIGKILL.
    settings = {
        "listen_addresses": "127.0.0.1",
        "fsync": "off",
        "synchronous_commit": "on",
        "full_page_writes": "off",
        "max_connections": "200",
    }

    def __init__(self, base_dir: Path | None = None) -> None:
        bindir = find_postgres_bindir()
        if bindir is None:
            raise ServerUnavailable("PostgreSQL server binaries (initdb, postgres) not found")
        self.bindir = bindir
        user = _postgres_user()
        super().__init__(base_dir, user)
        if user is not None:
            shutil.chown(self.base_dir, user, user)
        self.data_dir = self.base_dir / "data"

    @property
    def admin_url(self) -> str:
        """libpq URL of the ``postgres`` database, for ``psycopg.connect``."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``postgres`` database."""
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        """SQLAlchemy URL of another database on this server."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def kill(self) -> None:
        """SIGKILL the postmaster and its backends, then wait until all are gone.

        Backends left running would keep the shared memory attached and block the next start.
        """
        if self._proc is None or not self.is_running:
            return
        backends = _children(self._proc.pid)
        super().kill()
        for pid in backends:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_until(lambda: all(map(is_gone, backends)), STOP_TIMEOUT, "postgres backends exit")

    def _prepare(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        initdb = [str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", "postgres"]
        options = ["-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"]
        with self.log_path.open("ab") as log:
            subprocess.run(
                initdb + options,
                stdin=subprocess.DEVNULL,
                cwd=self.base_dir,
                stdout=log,
                stderr=subprocess.STDOUT,
                user=self.user,
                group=self.user,
                extra_groups=[] if self.user else None,
                check=True,
            )

    def _argv(self) -> list[str]:
        argv = [str(self.bindir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port)]
        argv += ["-k", str(self.base_dir)]
        for key, value in self.settings.items():
            argv += ["-c", f"{key}={value}"]
        return argv

    def answers(self) -> bool:
        try:
            psycopg.connect(self.admin_url, connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True


def _postgres_user() -> str | None:
    """initdb refuses root: as root, run PostgreSQL as the ``postgres`` user."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise ServerUnavailable(
            "running as root needs a 'postgres' user to run PostgreSQL"
        ) from None
    return "postgres"


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_LIVE):
        server.kill()
