"""Prometheus metrics scraped over HTTP from a running worker process and a running watchdog
process, against real PostgreSQL and Beanstalkd: the documented series with sensible values.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import greenstalk
import pytest
from prometheus_client.parser import text_string_to_metric_families

from postburner_py import Postburner
from postburner_py.metrics import TIME_BUCKETS
from postburner_py.queue.beanstalk import parse_beanstalkd_url
from postburner_py.worker.admission import Occurrence, Outcome
from postburner_py.worker.metrics import WorkerMetrics
from tests.factories import make_schedule
from tests.servers import free_port
from tests.test_worker import worker_environ

MakePostburner = Callable[..., Postburner]
REPO = Path(__file__).resolve().parent.parent
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _scrape(port: int) -> tuple[str, Samples]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return text, samples


def _created_series(text: str) -> list[str]:
    """The ``_created`` samples prometheus_client adds unless they are disabled."""
    return re.findall(r"^\w+_created(?:\{[^}]*\})? .*$", text, flags=re.MULTILINE)


def _value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def _eventually_scraped(
    process: subprocess.Popen[bytes], port: int, ready: Callable[[Samples], bool]
) -> tuple[str, Samples]:
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, "the process ended"
        try:
            text, samples = _scrape(port)
            if ready(samples):
                return text, samples
        except OSError:
            pass  # not listening yet
        assert time.monotonic() < deadline, "the metrics never showed the expected values"
        time.sleep(0.2)


@contextmanager
def _process(pb: Postburner, *argv: str) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "postburner_py", *argv],
        env=worker_environ(pb, {"POSTBURNER_ALLOWED_JOB_PREFIXES": "tests"}),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _put_forged(pb: Postburner) -> None:
    host, port = parse_beanstalkd_url(pb.settings.beanstalkd_url)
    with greenstalk.Client((host, port), use=pb.queue.tube("default")) as client:
        client.put(b'{"v": 1, "kind": "execution", "id": 1, "key": "x", "run_at": "x"}')


def test_a_running_worker_serves_its_metrics_after_a_few_runs(
    make_postburner: MakePostburner, postgres_url: str
) -> None:
    pb = make_postburner(database_url=postgres_url)
    now = datetime.now(UTC)
    for index in range(2):
        pb.enqueue_at(now, "tests.jobs:record_run", [index], job_id=f"fine-{index}")
    pb.enqueue_at(now, "tests.jobs:always_fail", job_id="broken", max_attempts=1)
    _put_forged(pb)
    port = free_port()
    with _process(pb, "worker", "--metrics-port", str(port)) as worker:
        finished = "postburner_worker_attempts_finished_total"
        turned_away = "postburner_worker_deliveries_turned_away_total"
        text, samples = _eventually_scraped(
            worker,
            port,
            lambda s: (
                _value(s, finished, queue="default", outcome="completed") == 2
                and _value(s, finished, queue="default", outcome="failed") == 1
                # the forged body may be reserved after the real ones: wait for it too
                and _value(s, turned_away, queue="unknown", reason="forged") is not None
            ),
        )
    assert not _created_series(text)
    assert _value(samples, "postburner_worker_attempts_started_total", queue="default") == 3
    assert _value(samples, finished, queue="default", outcome="retrying") == 0
    assert _value(samples, turned_away, queue="unknown", reason="forged") == 1
    assert _value(samples, "postburner_worker_running_jobs") == 0
    for histogram in ("start_lateness", "run_duration"):
        name = f"postburner_worker_{histogram}_seconds"
        assert _value(samples, f"{name}_count", queue="default") == 3
        total = _value(samples, f"{name}_sum", queue="default")
        assert total is not None and 0 <= total < 60
        for bound in ("0.001", "3600.0", "+Inf"):
            assert _value(samples, f"{name}_bucket", queue="default", le=bound) is not None
        assert _value(samples, f"{name}_bucket", queue="default", le="+Inf") == 3
    assert "# TYPE postburner_worker_lease_takeovers_total counter" in text


def _bury_one(pb: Postburner, queue: str) -> None:
    host, port = parse_beanstalkd_url(pb.settings.beanstalkd_url)
    tube = pb.queue.tube(queue)
    with greenstalk.Client((host, port), use=tube, watch=tube) as client:
        client.put(b"not ours")
        client.bury(client.reserve(timeout=5))


def test_a_running_watchdog_serves_queue_depth_live_rows_and_pass_counts(
    make_postburner: MakePostburner, postgres_url: str
) -> None:
    pb = make_postburner(database_url=postgres_url)
    with pb.session() as session:  # yearly: their jobs stay delayed through the test
        session.add_all(make_schedule(name=f"yearly-{n}", cron="0 0 1 1 *") for n in range(3))
        session.commit()
    _bury_one(pb, "reports")
    port = free_port()
    with _process(pb, "watchdog", "--interval", "1", "--metrics-port", str(port)) as watchdog:
        text, samples = _eventually_scraped(
            watchdog,
            port,
            lambda s: (
                _value(s, "postburner_live_executions", queue="default", kind="execution")
                is not None
                and _value(s, "postburner_beanstalkd_jobs", queue="reports", state="buried") == 1
            ),
        )
    assert not _created_series(text)
    assert _value(samples, "postburner_live_executions", queue="default", kind="execution") == 3
    jobs = "postburner_beanstalkd_jobs"
    assert _value(samples, jobs, queue="default", state="delayed") == 3
    for state in ("ready", "reserved", "buried"):
        assert _value(samples, jobs, queue="default", state=state) == 0
    assert _value(samples, "postburner_watchdog_beanstalkd_up") == 1
    assert _value(samples, "postburner_watchdog_invalid_schedules") == 0
    assert _value(samples, "postburner_watchdog_missed_total") == 0
    assert (
        _value(samples, "postburner_watchdog_pass_duration_seconds", kind="reconcile") is not None
    )
    assert re.search(r'postburner_watchdog_last_pass_timestamp_seconds\{kind="audit"\}', text)


def _occurrence(key: str, queue: str = "default") -> Occurrence:
    return Occurrence(
        kind="execution",
        row_id=1,
        schedule_id=1,
        next_run_at=None,
        history_job_id="1",
        key=key,
        run_at=datetime(2025, 1, 1, tzinfo=UTC),
        job_class="tests.jobs:record_run",
        args=[],
        kwargs={},
        priority=0,
        ttr=60,
        max_attempts=1,
        catch_up=False,
        queue=queue,
    )


def _label_sets(metrics: WorkerMetrics, name: str) -> list[dict[str, str]]:
    return [
        sample.labels
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == name
    ]


@pytest.mark.parametrize("per_schedule", [False, True])
def test_schedule_labels_are_only_there_behind_the_option(per_schedule: bool) -> None:
    metrics, other = WorkerMetrics(per_schedule=per_schedule), WorkerMetrics()
    for key in ("nightly", "hourly"):
        metrics.attempt_started(_occurrence(key, queue="reports"), lateness=0.002)
        metrics.attempt_finished(_occurrence(key, queue="reports"), Outcome.COMPLETED, 0.5)
    started = _label_sets(metrics, "postburner_worker_attempts_started_total")
    if per_schedule:
        assert sorted(s["schedule"] for s in started) == ["hourly", "nightly"]
    else:
        assert started == [{"queue": "reports"}]
    # A registry per object: the other worker's metrics saw nothing.
    assert _label_sets(other, "postburner_worker_attempts_started_total") == []


def test_lateness_buckets_span_a_millisecond_to_an_hour() -> None:
    assert TIME_BUCKETS[0] == 0.001 and TIME_BUCKETS[-1] == 3600
    assert list(TIME_BUCKETS) == sorted(TIME_BUCKETS)


def _exported_series() -> set[str]:
    """Every series name a worker and a watchdog export (histograms with their parts)."""
    from postburner_py.watchdog.metrics import WatchdogMetrics

    names = set()
    for metrics in (WorkerMetrics(), WatchdogMetrics()):
        for family in metrics.registry.collect():
            if family.type == "counter":
                names.add(f"{family.name}_total")
            elif family.type == "histogram":
                names |= {f"{family.name}{part}" for part in ("", "_bucket", "_sum", "_count")}
            else:
                names.add(family.name)
    return names


def test_every_metric_is_documented_in_operations() -> None:
    from postburner_py.schedules.chaining import PassReport

    operations = (REPO / "docs" / "operations.md").read_text()
    counts = {f"postburner_watchdog_{name}_total" for name in PassReport().counts()}
    assert all(f"`{name}`" in operations for name in PassReport().counts())
    parts = ("_bucket", "_sum", "_count")
    undocumented = [
        name
        for name in _exported_series() - counts
        if not name.endswith(parts) and f"`{name}`" not in operations
    ]
    assert not undocumented, undocumented


def test_the_alert_rules_and_the_dashboard_use_only_exported_series() -> None:
    import json

    import yaml

    rules = yaml.safe_load((REPO / "deploy" / "prometheus" / "alerts.yml").read_text())
    expressions = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert {"PostburnerNoWorker", "PostburnerQueueUnserved"} <= alerts
    assert {"PostburnerStartLatenessHigh", "PostburnerBuriedGrowing"} <= alerts
    dashboard = json.loads((REPO / "deploy" / "grafana" / "postburner.json").read_text())
    expressions += [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for expr in expressions for name in re.findall(r"postburner_\w+", expr)}
    assert used and used <= _exported_series(), used - _exported_series()
