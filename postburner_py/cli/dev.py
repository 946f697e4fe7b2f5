"""``postburner dev``: the live demo on the embedded default.

Starts a local ``beanstalkd`` (binlog under ``.postburner/``) when none answers at the
configured URL, migrates the database (SQLite in the working directory by default), syncs the
example schedule file, queues a one-off job a few seconds out, and runs the watchdog and a
worker together, each run printing a line. Ctrl-C stops everything it started.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from postburner_py.errors import DuplicateJobError, PostburnerError
from postburner_py.queue.local_beanstalkd import LocalBeanstalkd
from postburner_py.worker.process import Worker

if TYPE_CHECKING:
    from postburner_py.app import Postburner

log = logging.getLogger("postburner_py.dev")

DATA_DIR = Path(".postburner")
WELCOME_JOB_ID = "examples:welcome"


def default_schedule_file() -> Path:
    """``examples/schedules.yml`` of the working directory, else of the source checkout."""
    local = Path("examples/schedules.yml")
    if local.exists():
        return local
    return Path(__file__).resolve().parents[2] / "examples" / "schedules.yml"


def run_dev(
    pb: Postburner,
    *,
    schedule_file: Path | None = None,
    env: str = "development",
    interval: float = 10.0,
    concurrency: int = 2,
    data_dir: Path = DATA_DIR,
) -> int:
    """Run the demo until Ctrl-C (SIGINT) or SIGTERM; returns the exit code."""
    from postburner_py.watchdog.process import Watchdog

    local = LocalBeanstalkd(pb.settings.beanstalkd_url, data_dir)
    if local.ensure_running():
        print(f"started a local beanstalkd at {pb.settings.beanstalkd_url}", flush=True)
    worker = Worker(pb, concurrency=concurrency)
    thread = threading.Thread(target=worker.run, name="dev-worker")
    try:
        _prepare(pb, schedule_file or default_schedule_file(), env)
        thread.start()
        print("worker and watchdog running; Ctrl-C stops everything", flush=True)
        Watchdog(pb, interval=interval).run()
    finally:
        worker.stop()
        if thread.is_alive():
            thread.join()
        local.stop()
        print("stopped", flush=True)
    return 0


def _prepare(pb: Postburner, schedule_file: Path, env: str) -> None:
    from postburner_py.schedules.schedule_file import sync

    if not schedule_file.exists():
        raise PostburnerError(f"schedule file {schedule_file} not found; pass --schedules FILE")
    pb.migrate()
    # The demo's database is its own: it takes over schedules an earlier demo synced before
    # schedules carried their file's label.
    plan = sync(pb, schedule_file, env=env, adopt=True)
    print(plan.describe(), flush=True)
    at = pb.clock() + timedelta(seconds=5)
    try:
        pb.enqueue_at(at, "postburner_py.examples:welcome", ["demo"], job_id=WELCOME_JOB_ID)
        print(f"queued a one-off job for {at:%H:%M:%S}", flush=True)
    except DuplicateJobError:
        print("the one-off welcome job is still pending from a previous run", flush=True)
