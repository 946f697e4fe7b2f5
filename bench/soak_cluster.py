"""The fault soak's machinery (``bench/soak.py``): its own PostgreSQL and Beanstalkd (with a
binlog) on loopback, and the ``postburner worker`` / ``postburner watchdog`` processes it
kills and restarts. Every child dies with the soak (``PR_SET_PDEATHSIG`` on Linux)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from bench.soak_checks import Kill
from postburner_py import Postburner
from tests.servers import BeanstalkdServer, PostgresServer, is_gone, wait_until

ROOT = Path(__file__).resolve().parent.parent
DATABASE = "soak"
NAMESPACE = "soak"
SECRET = "soak-secret"
JOB_PREFIX = "postburner_py.bench_jobs"
JOB_CLASS = f"{JOB_PREFIX}:soak_job"
QUEUE = "default"
STOP_TIMEOUT = 60.0
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Servers:
    """PostgreSQL and Beanstalkd (binlog on) for one soak, and its migrated database."""

    def __init__(self) -> None:
        self.pg = PostgresServer()
        self.beanstalkd = BeanstalkdServer(binlog=True)

    def start(self) -> None:
        self.pg.start()
        self.beanstalkd.start()
        with psycopg.connect(self.pg.admin_url, autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {DATABASE}")
        pb = self.postburner()
        try:
            pb.migrate()
        finally:
            pb.dispose()

    @property
    def database_url(self) -> str:
        return self.pg.url_for(DATABASE)

    def postburner(self) -> Postburner:
        """The soak's own view: the configuration every soak process has."""
        return Postburner(
            database_url=self.database_url,
            beanstalkd_url=self.beanstalkd.url,
            namespace=NAMESPACE,
            secret=SECRET,
            allowed_job_prefixes=[JOB_PREFIX],
        )

    def restart_beanstalkd(self, *, wipe_binlog: bool) -> None:
        """Stop Beanstalkd and start it again, with its binlog or with the binlog deleted
        (then every job is gone and job ids start again at 1)."""
        self.beanstalkd.stop()
        binlog = self.beanstalkd.binlog_dir
        if wipe_binlog and binlog is not None:
            shutil.rmtree(binlog, ignore_errors=True)
        self.beanstalkd.start()

    def close(self) -> None:
        self.beanstalkd.close()
        self.pg.close()


@dataclass
class Member:
    """One ``postburner`` process of the soak (``role`` worker or watchdog)."""

    role: str
    index: int
    argv: list[str]
    env: dict[str, str]
    log_dir: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        """Start it (again); its output goes to ``<role>-<index>.<n>.log``."""
        self.starts += 1
        log_path = self.log_dir / f"{self.role}-{self.index}.{self.starts}.log"
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "postburner_py", *self.argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.log_dir,
                process_group=0,
                preexec_fn=_die_with_parent,
            )

    def kill(self) -> Kill:
        """SIGKILL, as a crash would; returns once it is gone."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        return Kill(self.role, self.process.pid, time.monotonic())

    def terminate(self, timeout: float = STOP_TIMEOUT, *, signalled: bool = False) -> int:
        """SIGTERM (unless ``signalled`` already: a second one makes a worker exit at once)
        and wait, SIGKILL after ``timeout``; the exit code."""
        if self.process is None:
            return 0
        if not signalled:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    @property
    def alive(self) -> bool:
        return self.process is not None and not is_gone(self.process.pid)


class Members:
    """The workers and watchdogs of one soak."""

    def __init__(
        self,
        servers: Servers,
        run_dir: Path,
        *,
        workers: int,
        concurrency: int,
        watchdogs: int,
        watchdog_interval: float,
    ) -> None:
        self.records_dir = run_dir / "records"
        self.records_dir.mkdir(parents=True, exist_ok=True)
        env = _environment(servers, self.records_dir)
        worker = ["worker", "--queue", QUEUE, "--concurrency", str(concurrency)]
        watchdog = ["watchdog", "--interval", f"{watchdog_interval:g}"]
        self.workers = [Member("worker", n, worker, env, run_dir) for n in range(workers)]
        self.watchdogs = [Member("watchdog", n, watchdog, env, run_dir) for n in range(watchdogs)]

    @property
    def everyone(self) -> list[Member]:
        return [*self.workers, *self.watchdogs]

    def start(self) -> None:
        for member in self.everyone:
            member.start()

    def stop(self, members: list[Member]) -> dict[str, int]:
        """SIGTERM to each at once, then wait for all; exit code by member."""
        codes: dict[str, int] = {}
        for member in members:
            if member.process is not None and member.alive:
                member.process.send_signal(signal.SIGTERM)
        for member in members:
            codes[f"{member.role}-{member.index}"] = member.terminate(signalled=True)
        return codes

    def kill_all(self) -> None:
        for member in self.everyone:
            if member.process is not None and member.alive:
                with contextlib.suppress(ProcessLookupError):
                    member.kill()


def _environment(servers: Servers, records_dir: Path) -> dict[str, str]:
    from postburner_py.bench_jobs import SOAK_RECORDS_ENV

    env = {key: value for key, value in os.environ.items() if not key.startswith("POSTBURNER_")}
    env.update(
        POSTBURNER_DATABASE_URL=servers.database_url,
        POSTBURNER_BEANSTALKD_URL=servers.beanstalkd.url,
        POSTBURNER_NAMESPACE=NAMESPACE,
        POSTBURNER_SECRET=SECRET,
        POSTBURNER_ALLOWED_JOB_PREFIXES=JOB_PREFIX,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    env[SOAK_RECORDS_ENV] = str(records_dir)
    return env


def wait_for_heartbeats(pb: Postburner, count: int, timeout: float = 60.0) -> None:
    """Until ``count`` watchdogs have written their heartbeat (they are up and passing)."""
    from sqlalchemy import func, select

    from postburner_py.watchdog.process import WatchdogHeartbeat

    def ready() -> bool:
        with pb.session() as session:
            found = session.scalar(select(func.count()).select_from(WatchdogHeartbeat))
        return int(found or 0) >= count

    wait_until(ready, timeout, f"{count} watchdog heartbeat(s)")
