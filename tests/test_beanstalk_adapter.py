"""Contract of postburner_py.queue.beanstalk against a real Beanstalkd."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import greenstalk
import pytest

from postburner_py.errors import (
    ConfigurationError,
    PayloadTooLargeError,
    QueueUnavailableError,
    ScheduleValidationError,
)
from postburner_py.queue import beanstalk
from postburner_py.queue.beanstalk import (
    MAX_JOB_SIZE,
    PUT_LEAD,
    BeanstalkQueue,
    PutRequest,
    QueuedJob,
    ReservationLostError,
    delay_seconds,
    parse_beanstalkd_url,
    validate_queue_name,
)
from tests.servers import BeanstalkdServer, free_port

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
HOUR = 3600


@pytest.fixture
def make_queue() -> Iterator[Callable[..., BeanstalkQueue]]:
    """``make_queue(url, namespace)``: a BeanstalkQueue closed at teardown."""
    queues: list[BeanstalkQueue] = []

    def make(url: str, namespace: str = "postburner") -> BeanstalkQueue:
        queue = BeanstalkQueue(url, namespace, connect_timeout=2.0)
        queues.append(queue)
        return queue

    yield make
    for queue in queues:
        queue.close()


@pytest.fixture
def queue(
    make_queue: Callable[..., BeanstalkQueue], beanstalkd_server, namespace
) -> BeanstalkQueue:
    return make_queue(beanstalkd_server.url, namespace)


@pytest.fixture
def private_server(beanstalkd_factory) -> BeanstalkdServer:
    """A Beanstalkd of this test alone, for exact server-wide counters and restarts."""
    return beanstalkd_factory()


def eventually(predicate: Callable[[], bool], timeout: float = 2.0) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def put(queue: BeanstalkQueue, body: bytes = b"job", name: str = "default", delay: int = HOUR):
    return queue.put(body, queue=name, priority=100, delay=delay, ttr=60)


# -- pure functions --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        (timedelta(seconds=10, milliseconds=100), 10),
        (timedelta(seconds=10, milliseconds=999), 10),
        (timedelta(milliseconds=1), 0),
        (timedelta(0), 0),
        (timedelta(seconds=-5), 0),
        (timedelta(days=2, seconds=1, milliseconds=101), 2 * 86400 + 1),
    ],
)
def test_delay_seconds_floors_and_is_never_negative(offset, expected):
    assert delay_seconds(NOW + offset, NOW) == expected


@pytest.mark.parametrize("fraction_ms", [0, 1, 50, 99])
def test_delay_seconds_leaves_the_put_its_lead_near_a_whole_second(fraction_ms):
    # now read just before a whole second away from run_at: a put arriving up to PUT_LEAD
    # after now must still make the job ready by run_at, so the delay is one second less.
    assert timedelta(milliseconds=100) == PUT_LEAD
    assert delay_seconds(NOW + timedelta(seconds=10, milliseconds=fraction_ms), NOW) == 9


def test_delay_seconds_compares_instants_across_timezones():
    tokyo = NOW.astimezone(ZoneInfo("Asia/Tokyo"))
    assert delay_seconds(tokyo + timedelta(seconds=90, milliseconds=500), NOW) == 90


def test_delay_seconds_refuses_naive_datetimes():
    with pytest.raises(ScheduleValidationError) as error:
        delay_seconds(datetime(2025, 3, 1, 12, 0, 30), NOW)
    assert error.value.field == "run_at"


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("beanstalk://127.0.0.1:11300", ("127.0.0.1", 11300)),
        ("beanstalkd://queue.internal:4730", ("queue.internal", 4730)),
        ("beanstalk://localhost", ("localhost", 11300)),
        ("beanstalk://[::1]:11301/", ("::1", 11301)),
    ],
)
def test_parse_beanstalkd_url_accepts_host_and_port(url, address):
    assert parse_beanstalkd_url(url) == address


@pytest.mark.parametrize(
    "url",
    ["", "127.0.0.1:11300", "redis://localhost:6379", "beanstalk://", "beanstalk://h:99999"],
)
def test_parse_beanstalkd_url_refuses_garbage(url):
    with pytest.raises(ConfigurationError, match="beanstalkd_url"):
        parse_beanstalkd_url(url)


@pytest.mark.parametrize(
    "name",
    ["default", "mailers", "a-b", "A+b/c;d.e$f_g(h)", "x" * 189],
)
def test_validate_queue_name_accepts_what_beanstalkd_accepts(name):
    assert validate_queue_name(name) == name


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "empty"),
        ("-urgent", "start with '-'"),
        ("two words", "may only contain"),
        ("colon:name", "may only contain"),
        ("ünïcode", "may only contain"),
        ("x" * 190, "the limit is 189"),
    ],
)
def test_validate_queue_name_refuses_what_beanstalkd_would_reject(name, problem):
    with pytest.raises(ScheduleValidationError, match=problem) as error:
        validate_queue_name(name)
    assert error.value.field == "queue"


def test_queue_name_limit_counts_the_namespace():
    assert validate_queue_name("x" * 196, namespace="ns")
    with pytest.raises(ScheduleValidationError, match="the limit is 197"):
        validate_queue_name("x" * 198, namespace="ns")


def test_namespace_must_be_a_valid_tube_prefix():
    with pytest.raises(ConfigurationError, match="namespace"):
        BeanstalkQueue("beanstalk://127.0.0.1:11300", "bad namespace")


def test_tube_is_namespace_dot_queue():
    assert BeanstalkQueue("beanstalk://127.0.0.1:1", "app").tube("mail") == "app.mail"


# -- producing -------------------------------------------------------------------------


def test_put_at_lands_delayed_in_the_namespaced_tube(queue, namespace):
    run_at = NOW + timedelta(seconds=30, milliseconds=700)
    job_id = queue.put_at(b"x", queue="mail", priority=7, run_at=run_at, now=NOW, ttr=45)

    stats = queue.stats_job(job_id)
    assert stats is not None
    assert (stats["tube"], stats["state"], stats["pri"], stats["ttr"]) == (
        f"{namespace}.mail",
        "delayed",
        7,
        45,
    )
    assert stats["delay"] == 30
    assert 29 <= stats["time-left"] <= 30


def test_a_put_arriving_after_its_now_still_makes_the_job_ready_by_run_at(queue):
    # A pass reads now once, then puts: here the put lands 60 ms after that reading, and
    # run_at is 1.01 s after it. A one-second delay would make the job ready 50 ms late.
    put_now = datetime.now(UTC) - timedelta(milliseconds=60)
    run_at = put_now + timedelta(seconds=1, milliseconds=10)
    job_id = queue.put_at(b"x", queue="default", priority=1, run_at=run_at, now=put_now, ttr=5)

    reserved = queue.reserve(["default"], timeout=1)

    assert reserved is not None and reserved.id == job_id
    assert datetime.now(UTC) < run_at


def test_the_longest_valid_queue_name_is_accepted_by_beanstalkd(queue, namespace):
    longest = "q" * (200 - len(namespace) - 1)
    job_id = put(queue, name=longest)
    assert queue.stats_job(job_id)["tube"] == f"{namespace}.{longest}"


def test_put_in_the_same_tube_sends_use_once(make_queue, private_server):
    queue = make_queue(private_server.url)
    for _ in range(3):
        put(queue, name="a")
    put(queue, name="b")
    assert queue.stats()["cmd-use"] == 2


def test_payload_too_large_is_refused_before_connecting(make_queue):
    nowhere = make_queue(f"beanstalk://127.0.0.1:{free_port()}")
    with pytest.raises(PayloadTooLargeError) as error:
        put(nowhere, body=b"x" * (MAX_JOB_SIZE + 1))
    assert error.value.field == "body"


def test_a_body_of_exactly_the_limit_is_accepted(queue):
    job_id = put(queue, body=b"x" * MAX_JOB_SIZE)
    assert len(queue.peek(job_id).body) == MAX_JOB_SIZE


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("priority", {"priority": -1}),
        ("priority", {"priority": 2**32}),
        ("delay", {"delay": -1}),
        ("ttr", {"ttr": 0}),
        ("delay", {"delay": 1.5}),
    ],
)
def test_put_refuses_out_of_range_numbers(make_queue, field, kwargs):
    nowhere = make_queue(f"beanstalk://127.0.0.1:{free_port()}")
    arguments = {"queue": "q", "priority": 0, "delay": 0, "ttr": 1, **kwargs}
    with pytest.raises(ScheduleValidationError) as error:
        nowhere.put(b"x", **arguments)
    assert error.value.field == field


def test_put_many_over_four_connections_returns_ids_in_item_order(make_queue, private_server):
    queue = make_queue(private_server.url)
    items = [PutRequest(b"%d" % i, f"q{i % 3}", 10, HOUR, 60) for i in range(10_000)]
    connections_before = queue.stats()["total-connections"]

    ids = queue.put_many(items, connections=4)

    assert len(set(ids)) == len(items)
    for index in [*range(0, len(items), 97), len(items) - 1]:
        assert queue.peek(ids[index]).body == items[index].body
    assert queue.stats_job(ids[1])["tube"] == "postburner.q1"
    assert queue.stats()["total-connections"] - connections_before >= 4


def test_put_many_small_batch_uses_the_thread_connection(make_queue, private_server):
    queue = make_queue(private_server.url)
    items = [PutRequest(b"%d" % i, "q", 10, HOUR, 60) for i in range(5)]
    connections_before = queue.stats()["total-connections"]

    ids = queue.put_many(items, connections=4)

    assert [queue.peek(job_id).body for job_id in ids] == [item.body for item in items]
    assert queue.stats()["total-connections"] == connections_before


def test_put_many_validates_every_item_before_sending_any(queue):
    items = [PutRequest(b"ok", "q", 10, HOUR, 60), PutRequest(b"x" * 70_000, "q", 10, HOUR, 60)]
    with pytest.raises(PayloadTooLargeError):
        queue.put_many(items)
    assert queue.stats_tube("q") is None


def test_put_many_resumes_after_the_items_that_landed_when_the_connection_breaks(
    make_queue, private_server, monkeypatch
):
    queue = make_queue(private_server.url)
    items = [PutRequest(b"%d" % i, "q", 10, HOUR, 60) for i in range(600)]
    real_window = beanstalk._Connection._put_window
    windows = 0

    def break_the_second_window(self, *args):
        nonlocal windows
        windows += 1
        if windows == 2:
            raise ConnectionResetError("connection reset by peer")
        real_window(self, *args)

    monkeypatch.setattr(beanstalk._Connection, "_put_window", break_the_second_window)
    ids = queue.put_many(items)

    assert queue.stats_tube("q")["current-jobs-delayed"] == len(items)
    assert [queue.peek(job_id).body for job_id in ids] == [item.body for item in items]


def test_concurrent_puts_from_eight_threads_all_succeed(queue):
    def produce(thread: int) -> list[tuple[int, bytes]]:
        bodies = [b"%d-%d" % (thread, n) for n in range(100)]
        return [(put(queue, body=body), body) for body in bodies]

    with ThreadPoolExecutor(8) as pool:
        puts = [pair for chunk in pool.map(produce, range(8)) for pair in chunk]

    assert len({job_id for job_id, _ in puts}) == 800
    assert all(queue.peek(job_id).body == body for job_id, body in puts[::37])


# -- inspecting and cancelling -----------------------------------------------------------


def test_put_then_delete_removes_the_job(queue):
    job_id = put(queue, body=b"payload")
    assert queue.peek(job_id).body == b"payload"
    assert queue.delete(job_id) is True
    assert queue.peek(job_id) is None
    assert queue.stats_job(job_id) is None


def test_delete_of_an_unknown_id_returns_false(queue):
    assert queue.delete(2**40) is False


def test_delete_of_a_job_reserved_by_another_connection_returns_false(
    make_queue, beanstalkd_server, namespace
):
    producer = make_queue(beanstalkd_server.url, namespace)
    worker = make_queue(beanstalkd_server.url, namespace)
    job_id = put(producer, delay=0)
    reserved = worker.reserve(["default"], timeout=1)
    assert reserved is not None and reserved.id == job_id

    assert producer.delete(job_id) is False
    assert worker.delete(job_id) is True


def test_kick_job_makes_a_delayed_job_ready(queue):
    job_id = put(queue)
    assert queue.kick_job(job_id) is True
    assert queue.stats_job(job_id)["state"] == "ready"
    assert queue.kick_job(2**40) is False


def test_stats_tube_counts_jobs_of_the_namespaced_tube(queue):
    put(queue, name="reports")
    put(queue, name="reports")
    assert queue.stats_tube("reports")["current-jobs-delayed"] == 2
    assert queue.stats_tube("never-used") is None


# -- consuming ---------------------------------------------------------------------------


def test_reserve_returns_none_when_nothing_is_ready(queue):
    put(queue)  # delayed, so not reservable
    assert queue.reserve(["default"], timeout=0) is None


def test_reserve_deletes_the_jobs_named_first_in_the_same_round_trip(queue):
    first = put(queue, body=b"first", delay=0)
    assert queue.reserve(["default"], timeout=0) == QueuedJob(first, b"first")
    second = put(queue, body=b"second", delay=0)
    gone = put(queue, body=b"gone", delay=HOUR)
    assert queue.delete(gone)
    # A job already gone is no error; the reply to reserve still comes through.
    assert queue.reserve(["default"], timeout=0, delete_first=[first, gone]) == QueuedJob(
        second, b"second"
    )
    assert queue.peek(first) is None
    assert queue.reserve(["default"], timeout=0, delete_first=[second]) is None
    assert queue.peek(second) is None


def test_reserve_watches_only_the_namespaced_tubes(queue, beanstalkd_server, namespace):
    address = parse_beanstalkd_url(beanstalkd_server.url)
    with greenstalk.Client(address, encoding=None, use=namespace) as raw:
        strangers = [raw.put(b"in a tube named like the namespace", delay=0)]
        raw.use("default")
        strangers.append(raw.put(b"in the default tube", delay=0))
    try:
        assert queue.reserve(["default", "other"], timeout=0) is None
        job_id = put(queue, body=b"mine", name="other", delay=0)
        assert queue.reserve(["default", "other"], timeout=0) == QueuedJob(job_id, b"mine")
    finally:
        for stranger in strangers:
            queue.delete(stranger)


def test_release_bury_touch_of_a_reserved_job(queue):
    job_id = put(queue, delay=0)
    assert queue.reserve(["default"], timeout=0).id == job_id
    queue.touch(job_id)
    queue.release(job_id, priority=5, delay=HOUR)
    assert queue.stats_job(job_id)["state"] == "delayed"
    queue.kick_job(job_id)
    assert queue.reserve(["default"], timeout=0).id == job_id
    queue.bury(job_id, priority=5)
    assert queue.stats_job(job_id)["state"] == "buried"


@pytest.mark.parametrize("command", ["release", "bury", "touch"])
def test_commands_on_a_job_not_reserved_here_raise_reservation_lost(queue, command):
    job_id = put(queue)
    calls = {
        "release": lambda: queue.release(job_id, priority=1, delay=0),
        "bury": lambda: queue.bury(job_id, priority=1),
        "touch": lambda: queue.touch(job_id),
    }
    with pytest.raises(ReservationLostError, match=str(job_id)):
        calls[command]()


def test_release_after_the_connection_was_lost_is_not_retried(make_queue, beanstalkd_factory):
    server = beanstalkd_factory(binlog=True)
    queue = make_queue(server.url)
    job_id = put(queue, delay=0)
    assert queue.reserve(["default"], timeout=0).id == job_id
    server.restart()

    with pytest.raises(QueueUnavailableError, match=server.url):
        queue.release(job_id, priority=1, delay=0)
    # The binlog replays the reservation as a ready job: delivery is at-least-once.
    assert queue.stats_job(job_id)["state"] == "ready"


# -- connections ---------------------------------------------------------------------------


def test_server_id_changes_when_beanstalkd_restarts_without_binlog(make_queue, private_server):
    queue = make_queue(private_server.url)
    before = queue.server_id()
    private_server.restart()
    assert queue.server_id() != before


def test_put_reconnects_after_a_restart_on_the_same_port(make_queue, private_server):
    queue = make_queue(private_server.url)
    put(queue, name="a")
    private_server.stop()
    private_server.start()

    job_id = put(queue, name="a", body=b"after restart")
    assert queue.peek(job_id).body == b"after restart"
    assert queue.stats_job(job_id)["tube"] == "postburner.a"  # `use` was re-sent


def test_reserve_watches_again_on_a_new_connection(make_queue, private_server):
    queue = make_queue(private_server.url)
    assert queue.reserve(["a"], timeout=0) is None
    private_server.kill()
    private_server.start()
    with pytest.raises(QueueUnavailableError):
        queue.reserve(["a"], timeout=0)  # the reserving connection is never silently replaced
    job_id = put(queue, name="a", delay=0)
    assert queue.reserve(["a"], timeout=0).id == job_id


def test_a_stopped_server_raises_queue_unavailable_naming_the_url(make_queue, private_server):
    queue = make_queue(private_server.url)
    put(queue)
    private_server.stop()

    with pytest.raises(QueueUnavailableError, match=private_server.url):
        put(queue)
    assert queue.ping() is False
    private_server.start()
    assert queue.ping() is True


def test_close_wakes_a_thread_blocked_in_reserve(make_queue, private_server):
    queue = make_queue(private_server.url)
    outcome: list[object] = []

    def wait_for_a_job() -> None:
        try:
            outcome.append(queue.reserve(["a"], timeout=30))
        except QueueUnavailableError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=wait_for_a_job)
    worker.start()
    assert eventually(lambda: queue.stats()["current-waiting"] == 1)
    queue.close()
    worker.join(timeout=5)

    assert not worker.is_alive()
    assert isinstance(outcome[0], QueueUnavailableError)


def test_close_closes_the_connection_of_every_thread(make_queue, private_server):
    queue = make_queue(private_server.url)
    observer = make_queue(private_server.url)
    threads = [threading.Thread(target=put, args=(queue,)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    put(queue)
    assert observer.stats()["current-connections"] == 5

    queue.close()

    assert eventually(lambda: observer.stats()["current-connections"] == 1)
    assert put(queue) > 0  # a closed queue reconnects on the next call
