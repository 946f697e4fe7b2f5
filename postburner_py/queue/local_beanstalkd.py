"""A local ``beanstalkd`` child process for the embedded default (``postburner dev``)."""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from pathlib import Path

from postburner_py.errors import ConfigurationError, QueueUnavailableError
from postburner_py.queue.beanstalk import BeanstalkQueue, parse_beanstalkd_url

log = logging.getLogger("postburner_py.dev")


class LocalBeanstalkd:
    """Starts ``beanstalkd`` with a binlog under ``data_dir`` when none answers at ``url``."""

    def __init__(self, url: str, data_dir: Path) -> None:
        self.url = url
        self.data_dir = data_dir
        self.process: subprocess.Popen[bytes] | None = None

    def ensure_running(self, timeout: float = 10.0) -> bool:
        """True when this started a server; False when one already answered."""
        if _answers(self.url):
            return False
        host, port = parse_beanstalkd_url(self.url)
        binary = shutil.which("beanstalkd")
        if binary is None:
            raise ConfigurationError(
                f"nothing answers at {self.url} and no beanstalkd binary is installed; "
                "install it (apt-get install beanstalkd) or set POSTBURNER_BEANSTALKD_URL"
            )
        binlog = self.data_dir / "beanstalkd-binlog"
        binlog.mkdir(parents=True, exist_ok=True)
        command = [binary, "-l", host, "-p", str(port), "-b", str(binlog)]
        # Its own session: a Ctrl-C in the terminal reaches us, and we stop it after the
        # worker has finished its jobs, not before.
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        self._wait(timeout)
        log.info("started beanstalkd on %s:%d with binlog %s", host, port, binlog)
        return True

    def stop(self) -> None:
        """Stop the server this started (if any)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not _answers(self.url):
            assert self.process is not None
            if self.process.poll() is not None:
                error = self.process.stderr.read().decode() if self.process.stderr else ""
                raise QueueUnavailableError(f"beanstalkd exited at start: {error.strip()}")
            if time.monotonic() > deadline:
                self.stop()
                raise QueueUnavailableError(f"beanstalkd did not answer at {self.url}")
            time.sleep(0.05)


def _answers(url: str) -> bool:
    queue = BeanstalkQueue(url, connect_timeout=0.5)
    try:
        return queue.ping()
    finally:
        queue.close()
