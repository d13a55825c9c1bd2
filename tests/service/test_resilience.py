"""Bulkheads, circuit breakers and deadlines (stovepipe.resilience), alone and in a server."""

from __future__ import annotations

import collections
import logging
import pathlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, cast

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]

from stovepipe import resilience
from stovepipe.buildrunner import RunnerMap
from stovepipe.buildrunner.fake import FakeBuildRunner
from stovepipe.client import StovepipeClient
from stovepipe.config import DEFAULT_BREAKER_FAILURES, default_bulkhead_size
from stovepipe.messaging import Messaging
from stovepipe.messaging.inprocess import InProcessMessaging
from stovepipe.metrics import Metrics
from stovepipe.server import StovepipeServer
from stovepipe.service import RETRY_PUSHBACK_KEY, SERVICE_NAME
from stovepipe.sourcecontrol import QueueMap
from stovepipe.sourcecontrol.fake import FakeSourceControl
from stovepipe.storage import LimitExceeded, NotFound, Storage, Unavailable, open_storage
from stovepipe.v1 import stovepipe_pb2 as pb

TIMEOUT = 10.0


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker_of(
    *, failure_threshold: int, reset_timeout: float, clock: Clock
) -> resilience.CircuitBreaker:
    return resilience.CircuitBreaker(
        "storage", failure_threshold=failure_threshold, reset_timeout=reset_timeout, clock=clock
    )


def unavailable() -> None:
    raise Unavailable("connection refused")


def not_found() -> None:
    raise NotFound("no such key")


def run_threads(count: int, target: Callable[[int], None]) -> None:
    threads = [threading.Thread(target=target, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=TIMEOUT)
    assert not any(thread.is_alive() for thread in threads)


# --- bulkhead -----------------------------------------------------------------------------


def hold_every_slot(guard: resilience.Guard, count: int) -> tuple[threading.Event, list[Any]]:
    """``count`` threads each hold a slot of ``guard`` until the event returned is set."""
    release = threading.Event()
    inside = threading.Barrier(count + 1)

    def hold() -> None:
        def blocked() -> None:
            inside.wait(timeout=TIMEOUT)
            release.wait(timeout=TIMEOUT)

        guard.call(blocked)

    holders = [threading.Thread(target=hold) for _ in range(count)]
    for holder in holders:
        holder.start()
    inside.wait(timeout=TIMEOUT)
    return release, holders


def test_bulkhead_full_of_stuck_calls_refuses_the_next_within_the_progress_window() -> None:
    # Wide enough apart that a loaded machine cannot blur "refused at once" into "refused
    # after a window".
    window = 1.0
    guard = resilience.Guard(resilience.Bulkhead("storage", 3, progress_window=window), None)
    release, holders = hold_every_slot(guard, 3)
    called: list[bool] = []
    started = time.monotonic()
    with pytest.raises(resilience.Overloaded) as refused:
        guard.call(lambda: called.append(True))
    waited = time.monotonic() - started
    # Refused again at once: nothing has moved for longer than the window now.
    started_again = time.monotonic()
    with pytest.raises(resilience.Overloaded):
        guard.call(lambda: called.append(True))
    waited_again = time.monotonic() - started_again
    release.set()
    for holder in holders:
        holder.join(timeout=TIMEOUT)
    assert not called  # refused before it ran
    assert waited <= window + 2.0, waited  # bounded by the window, not by the stuck calls
    assert waited_again < window / 2, waited_again
    assert refused.value.dependency_name == "storage"
    assert refused.value.retry_after > 0
    assert isinstance(refused.value, Unavailable)  # transient, as callers already expect
    guard.call(lambda: called.append(True))  # the slots are free again
    assert called == [True]


def test_bulkhead_full_of_calls_that_keep_finishing_queues_every_caller_never_above_the_limit() -> (
    None
):
    """32 racing callers on 4 slots of a dependency that answers in 20 ms: all are served,
    in turn, and never more than 4 at once (the rule "no UNAVAILABLE from a busy but healthy
    backend")."""
    limit = 4
    # A window well above the default: on a loaded machine 250 ms can pass with no call
    # finished, and this test is about queueing, not about the window's length.
    guard = resilience.Guard(resilience.Bulkhead("storage", limit, progress_window=5.0), None)
    lock = threading.Lock()
    inside = 0
    most = 0
    outcomes: list[str] = []
    start = threading.Barrier(32)

    def busy() -> None:
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
        time.sleep(0.02)
        with lock:
            inside -= 1

    def race(_: int) -> None:
        start.wait(timeout=TIMEOUT)
        for _ in range(3):
            try:
                guard.call(busy)
                outcome = "ran"
            except resilience.Overloaded:
                outcome = "refused"
            with lock:
                outcomes.append(outcome)

    run_threads(32, race)
    assert most == limit
    assert outcomes == ["ran"] * 32 * 3
    assert guard.bulkhead is not None and guard.bulkhead.queued == 0
    assert guard.bulkhead.in_use == 0


def test_bulkhead_queued_callers_get_slots_first_come_first_served() -> None:
    bulkhead = resilience.Bulkhead("storage", 1, progress_window=TIMEOUT)
    guard = resilience.Guard(bulkhead, None)
    release, holders = hold_every_slot(guard, 1)
    order: list[int] = []
    waiters = []
    for n in range(5):
        waiter = threading.Thread(target=guard.call, args=(order.append, n))
        waiter.start()
        deadline = time.monotonic() + TIMEOUT
        while bulkhead.queued < n + 1 and time.monotonic() < deadline:
            time.sleep(0.005)  # queued in this order
        waiters.append(waiter)
    release.set()
    for thread in holders + waiters:
        thread.join(timeout=TIMEOUT)
    assert order == [0, 1, 2, 3, 4]


def test_bulkhead_a_queued_caller_whose_deadline_passes_fails_deadline_exceeded() -> None:
    bulkhead = resilience.Bulkhead("storage", 1, progress_window=TIMEOUT)
    breaker = resilience.CircuitBreaker("storage", failure_threshold=1)
    guard = resilience.Guard(bulkhead, breaker)
    release, holders = hold_every_slot(guard, 1)
    called: list[bool] = []
    started = time.monotonic()
    with resilience.deadline(0.2), pytest.raises(resilience.DeadlineExceeded):
        guard.call(lambda: called.append(True))
    waited = time.monotonic() - started
    release.set()
    for holder in holders:
        holder.join(timeout=TIMEOUT)
    assert not called
    assert 0.15 <= waited <= 5.0, waited  # the deadline, not the stuck call's end
    assert bulkhead.queued == 0
    assert not breaker.is_open  # the caller ran out of time: the backend is not at fault


# --- circuit breaker ----------------------------------------------------------------------


def test_breaker_opens_after_the_threshold_of_transient_failures_and_fails_fast() -> None:
    clock = Clock()
    breaker = resilience.CircuitBreaker(
        "storage", failure_threshold=3, reset_timeout=5, clock=clock
    )
    guard = resilience.Guard(None, breaker)
    for _ in range(3):
        with pytest.raises(Unavailable):
            guard.call(unavailable)
    assert breaker.is_open
    called: list[bool] = []
    with pytest.raises(resilience.CircuitOpen) as refused:
        guard.call(lambda: called.append(True))
    assert not called
    assert refused.value.retry_after == pytest.approx(5)


def test_breaker_counts_only_failures_in_a_row() -> None:
    breaker = resilience.CircuitBreaker("storage", failure_threshold=3, clock=Clock())
    guard = resilience.Guard(None, breaker)
    for _ in range(5):
        for failing in (unavailable, unavailable):
            with pytest.raises(Unavailable):
                guard.call(failing)
        guard.call(lambda: None)  # an answer resets the count
    assert not breaker.is_open


def test_breaker_an_answer_with_an_error_of_the_backend_is_no_failure() -> None:
    breaker = resilience.CircuitBreaker("storage", failure_threshold=2, clock=Clock())
    guard = resilience.Guard(None, breaker)
    for _ in range(10):
        with pytest.raises(NotFound):
            guard.call(not_found)
    assert not breaker.is_open


def test_breaker_a_call_refused_before_the_backend_is_neither_failure_nor_answer() -> None:
    breaker = resilience.CircuitBreaker("storage", failure_threshold=2, clock=Clock())
    guard = resilience.Guard(None, breaker)
    with pytest.raises(Unavailable):
        guard.call(unavailable)
    with pytest.raises(LimitExceeded):  # checked before the backend: no answer from it
        guard.call(lambda: open_storage("memory://").requests.get("x" * 10_000))
    with pytest.raises(Unavailable):
        guard.call(unavailable)
    assert breaker.is_open


def test_breaker_a_call_refused_by_the_bulkhead_is_no_failure() -> None:
    breaker = resilience.CircuitBreaker("storage", failure_threshold=1, clock=Clock())
    bulkhead = resilience.Bulkhead("storage", 1)
    guard = resilience.Guard(bulkhead, breaker)
    with bulkhead.slot():
        for _ in range(5):
            with pytest.raises(resilience.Overloaded):
                guard.call(lambda: None)
    assert not breaker.is_open


def test_breaker_half_open_lets_exactly_one_probe_through_while_racing_calls_fail_fast() -> None:
    clock = Clock()
    breaker = resilience.CircuitBreaker(
        "storage", failure_threshold=1, reset_timeout=5, clock=clock
    )
    guard = resilience.Guard(None, breaker)
    with pytest.raises(Unavailable):
        guard.call(unavailable)
    clock.now += 5  # the open while is over: half-open
    probing = threading.Event()
    release = threading.Event()
    ran: list[int] = []
    refused: list[int] = []
    lock = threading.Lock()

    def probe() -> None:
        probing.set()
        release.wait(timeout=TIMEOUT)

    def call(number: int) -> None:
        def work() -> None:
            with lock:
                ran.append(number)
            probe()

        try:
            guard.call(work)
        except resilience.CircuitOpen:
            with lock:
                refused.append(number)

    first = threading.Thread(target=call, args=(0,))
    first.start()
    assert probing.wait(timeout=TIMEOUT)
    run_threads(16, lambda n: call(n + 1))  # race the probe in flight
    release.set()
    first.join(timeout=TIMEOUT)
    assert ran == [0]
    assert sorted(refused) == list(range(1, 17))
    assert not breaker.is_open  # the probe succeeded: closed
    guard.call(lambda: None)


def test_breaker_a_failed_probe_opens_it_for_another_while() -> None:
    clock = Clock()
    breaker = resilience.CircuitBreaker(
        "storage", failure_threshold=1, reset_timeout=5, clock=clock
    )
    guard = resilience.Guard(None, breaker)
    with pytest.raises(Unavailable):
        guard.call(unavailable)
    clock.now += 5
    with pytest.raises(Unavailable):
        guard.call(unavailable)  # the probe
    with pytest.raises(resilience.CircuitOpen):
        guard.call(lambda: None)
    clock.now += 5
    guard.call(lambda: None)  # the next probe succeeds
    assert not breaker.is_open


def test_breaker_reports_each_opening_and_closing() -> None:
    clock = Clock()
    breaker = resilience.CircuitBreaker(
        "storage", failure_threshold=2, reset_timeout=1, clock=clock
    )
    changes: list[bool] = []
    breaker.on_change(changes.append)
    guard = resilience.Guard(None, breaker)
    for _ in range(2):
        with pytest.raises(Unavailable):
            guard.call(unavailable)
    clock.now += 1
    guard.call(lambda: None)
    assert changes == [True, False]


def test_breaker_observed_failures_open_it_and_keep_it_open_while_they_go_on() -> None:
    clock = Clock()
    breaker = breaker_of(failure_threshold=3, reset_timeout=5, clock=clock)
    changes: list[bool] = []
    breaker.on_change(changes.append)
    for _ in range(3):
        breaker.observed(healthy=False)
    assert breaker.refusing() and changes == [True]
    clock.now += 4
    breaker.observed(healthy=False)  # still failing: another reset window from now
    clock.now += 4
    assert breaker.refusing()
    clock.now += 60  # no call for a long while: probes may go, but nothing answered yet
    assert not breaker.refusing()
    assert breaker.down(), "the consumers' calls failed and none answered since: not ready"
    breaker.observed(healthy=True)
    assert not breaker.down() and not breaker.refusing() and changes == [True, False]


def test_breaker_opened_by_rpcs_alone_counts_down_only_inside_its_window() -> None:
    clock = Clock()
    breaker = breaker_of(failure_threshold=1, reset_timeout=5, clock=clock)
    with pytest.raises(Unavailable):
        resilience.Guard(None, breaker).call(unavailable)
    assert breaker.down()
    clock.now += 5
    assert not breaker.down()  # readiness lets traffic in again, to probe


def test_breaker_an_observed_answer_resets_the_failures_in_a_row() -> None:
    breaker = breaker_of(failure_threshold=3, reset_timeout=5, clock=Clock())
    for _ in range(5):
        breaker.observed(healthy=False)
        breaker.observed(healthy=False)
        breaker.observed(healthy=True)
    assert not breaker.is_open


def test_consumers_observed_a_claim_that_never_reached_the_engine_is_no_answer() -> None:
    from stovepipe.messaging.brokered import BrokeredMessaging
    from stovepipe.messaging.inprocess import MemoryBroker

    class Down(MemoryBroker):
        """Claims fail as an unreachable engine's; the backlog read, too, until it is up."""

        up = False

        def claim(self, topics: Any) -> Any:
            if not self.up:
                raise Unavailable("connection refused")
            return None

        def backlog(self, topic: str) -> int:
            if not self.up:
                raise Unavailable("connection refused")
            return 0

    clock = Clock()
    breaker = breaker_of(failure_threshold=3, reset_timeout=5, clock=clock)
    broker = Down()
    messaging = BrokeredMessaging(broker)
    resilience.observe_consumers(messaging, breaker)
    for _ in range(3):
        with pytest.raises(Unavailable):
            messaging.broker.claim(["t"])
    assert breaker.down()
    broker.up = True
    assert messaging.broker.claim(["t"]) is None  # may not have asked the engine: no answer
    assert breaker.down()
    assert messaging.backlog("t") == 0  # the heartbeat's read did ask it
    assert not breaker.down()


# --- deadlines ----------------------------------------------------------------------------


def test_deadline_a_call_whose_deadline_has_passed_never_starts() -> None:
    guard = resilience.Guard(resilience.Bulkhead("storage", 1), None)
    called: list[bool] = []
    with resilience.deadline(0.0), pytest.raises(resilience.DeadlineExceeded):
        guard.call(lambda: called.append(True))
    assert not called


def test_deadline_bounded_is_the_smaller_of_the_timeout_and_the_time_left() -> None:
    assert resilience.bounded(5.0) == 5.0  # no deadline: the call's own timeout
    with resilience.deadline(1.0):
        assert 0 < resilience.bounded(5.0) <= 1.0
        assert resilience.bounded(0.25) == 0.25
        with resilience.deadline(30.0):  # an inner, later deadline does not extend it
            left = resilience.remaining()
            assert left is not None and left <= 1.0
    assert resilience.remaining() is None
    with resilience.deadline(-1.0), pytest.raises(resilience.DeadlineExceeded):
        resilience.bounded(5.0)


def test_deadline_is_per_thread_of_control() -> None:
    seen: list[float | None] = []
    with resilience.deadline(1.0):
        other = threading.Thread(target=lambda: seen.append(resilience.remaining()))
        other.start()
        other.join(timeout=TIMEOUT)
    assert seen == [None]


# --- in a server ------------------------------------------------------------------------


class BlockingStore:
    """Proxies a store; while ``blocked`` is clear, every call waits for it (a frozen
    backend), and ``failing`` makes every call fail as unreachable."""

    def __init__(self, store: object) -> None:
        self._store = store
        self.unblocked = threading.Event()
        self.unblocked.set()
        self.failing = False
        self.waiting = 0

    def __getattr__(self, attribute: str) -> Any:
        value = getattr(self._store, attribute)

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.failing:
                raise Unavailable("connection refused")
            self.waiting += 1
            try:
                self.unblocked.wait(timeout=TIMEOUT)
            finally:
                self.waiting -= 1
            return value(*args, **kwargs)

        return call


@pytest.fixture
def frozen() -> Iterator[tuple[StovepipeServer, BlockingStore, grpc.Channel]]:
    storage: Storage = open_storage("memory://")
    store = BlockingStore(storage.request_uris)
    storage.request_uris = store
    server = StovepipeServer(
        storage,
        QueueMap({"q": FakeSourceControl(["c1"], name="q")}),
        listen="127.0.0.1:0",
        max_workers=8,
        metrics=Metrics(process_metrics=False),
        bulkhead_size=2,
        breaker_failures=3,
        breaker_reset=0.5,
    )
    server.start()
    channel = grpc.insecure_channel(server.address)
    yield server, store, channel
    store.unblocked.set()
    channel.close()
    server.stop(grace=0)


def test_bulkhead_in_a_server_calls_beyond_it_are_unavailable_with_a_retry_hint_and_ping_answers(
    frozen: tuple[StovepipeServer, BlockingStore, grpc.Channel],
) -> None:
    server, store, channel = frozen
    client = StovepipeClient(channel)
    store.unblocked.clear()
    stuck = [client.Ingest.future(pb.IngestRequest(queue="q"), timeout=TIMEOUT) for _ in range(2)]
    deadline = time.monotonic() + TIMEOUT
    while store.waiting < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.guards["storage"].bulkhead is not None
    assert server.guards["storage"].bulkhead.in_use == 2
    with pytest.raises(grpc.RpcError) as refused:
        client.Ingest(pb.IngestRequest(queue="q"), timeout=TIMEOUT)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    metadata: Any = refused.value.trailing_metadata() or ()
    pushback = dict(metadata)
    assert int(pushback[RETRY_PUSHBACK_KEY]) > 0
    # Busy, not down: the operator's remedy differs (a breaker open says "unavailable").
    assert (refused.value.details() or "").startswith("storage is busy; retry in")
    for _ in range(20):  # Ping and health never wait for a backend thread
        assert client.Ping(pb.PingRequest(), timeout=TIMEOUT).version
    store.unblocked.set()
    assert {future.result(timeout=TIMEOUT).id for future in stuck} == {"request/q/1"}


def test_bulkhead_in_a_server_32_clients_writing_new_heads_on_sqlite_see_no_unavailable(
    tmp_path: pathlib.Path,
) -> None:
    """The default bulkhead (a third of 32 workers) in front of SQLite, whose writers queue
    on one lock: 32 clients each ingesting a new head after another for 3 s are all served,
    none is told UNAVAILABLE (a busy backend is not a frozen one)."""
    clients = 32
    sources = {f"q{n}": FakeSourceControl(["c0"], name=f"q{n}") for n in range(clients)}
    server = StovepipeServer(
        open_storage(f"sqlite:///{tmp_path / 'busy.db'}"),
        QueueMap(sources),
        listen="127.0.0.1:0",
        max_workers=clients,
        metrics=Metrics(process_metrics=False),
        bulkhead_size=default_bulkhead_size(clients),
        breaker_failures=DEFAULT_BREAKER_FAILURES,
    )
    server.start()
    codes: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    start = threading.Barrier(clients)
    try:

        def poll(n: int) -> None:
            with grpc.insecure_channel(server.address) as channel:
                client = StovepipeClient(channel)
                start.wait(timeout=TIMEOUT)
                end = time.monotonic() + 3.0
                head = 0
                while time.monotonic() < end:
                    head += 1
                    sources[f"q{n}"].push(f"c{head}")
                    try:
                        client.Ingest(pb.IngestRequest(queue=f"q{n}"), timeout=TIMEOUT)
                        code = "OK"
                    except grpc.RpcError as error:
                        code = error.code().name
                    with lock:
                        codes[code] += 1

        run_threads(clients, poll)
        bulkhead = server.guards["storage"].bulkhead
        assert bulkhead is not None and bulkhead.limit < clients  # the bulkhead was in play
    finally:
        server.stop(grace=0)
    assert codes["OK"] >= clients, codes
    assert set(codes) == {"OK"}, codes


def test_breaker_in_a_server_readiness_not_serving_while_open_liveness_serving(
    frozen: tuple[StovepipeServer, BlockingStore, grpc.Channel],
) -> None:
    server, store, channel = frozen
    breaker = server.guards["storage"].breaker
    assert breaker is not None
    # Open for as long as the test looks at it (a loaded machine may take longer than the
    # fixture's 0.5 s between the failures and the checks); closed again when it is done.
    breaker.reset_timeout = 3600.0
    client = StovepipeClient(channel)
    health = health_pb2_grpc.HealthStub(channel)

    def status(service: str) -> int:
        request = health_pb2.HealthCheckRequest(service=service)
        result: int = health.Check(request, timeout=TIMEOUT).status
        return result

    store.failing = True
    codes = []
    for _ in range(4):
        with pytest.raises(grpc.RpcError) as failed:
            client.Ingest(pb.IngestRequest(queue="q"), timeout=TIMEOUT)
        codes.append(failed.value.code())
    assert codes == [grpc.StatusCode.UNAVAILABLE] * 4
    assert "retry in" in (failed.value.details() or "")  # the fourth failed fast
    assert status(SERVICE_NAME) == health_pb2.HealthCheckResponse.NOT_SERVING
    assert status("") == health_pb2.HealthCheckResponse.SERVING
    assert client.Ping(pb.PingRequest(), timeout=TIMEOUT).version

    store.failing = False
    breaker.reset_timeout = 0.01
    deadline = time.monotonic() + TIMEOUT
    while status(SERVICE_NAME) != health_pb2.HealthCheckResponse.SERVING:
        assert time.monotonic() < deadline, "readiness never came back"
        time.sleep(0.05)  # the open while ends: ready again for the probe
    assert client.Ingest(pb.IngestRequest(queue="q"), timeout=TIMEOUT).id == "request/q/1"
    assert status(SERVICE_NAME) == health_pb2.HealthCheckResponse.SERVING


def test_deadline_in_a_server_the_storage_calls_see_the_callers_deadline(
    frozen: tuple[StovepipeServer, BlockingStore, grpc.Channel],
) -> None:
    server, _, channel = frozen
    seen: list[float | None] = []
    original = server.guards["storage"].call

    def spy(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        seen.append(resilience.remaining())
        return original(function, *args, **kwargs)

    server.guards["storage"].call = spy  # type: ignore[method-assign]
    StovepipeClient(channel).Ingest(pb.IngestRequest(queue="q"), timeout=7)  # sent rounded up
    assert seen
    assert all(left is not None and 0 < left < 7.5 for left in seen), seen


def test_deadline_etcd_bounds_each_call_by_the_callers_deadline(
    server_url: Callable[[str], str],
) -> None:
    """The etcd client gives each call the smaller of its timeout and the caller's time left;
    a caller out of time sends nothing."""
    with open_storage(server_url("etcd")) as storage:
        with pytest.raises(NotFound):
            storage.requests.get("request/deadline-probe/1")  # reachable
        with resilience.deadline(-1.0), pytest.raises(resilience.DeadlineExceeded):
            storage.requests.get("request/deadline-probe/1")


class BlockingMessaging:
    """In-process messaging whose publishing waits while ``unblocked`` is clear."""

    def __init__(self) -> None:
        self._messaging = InProcessMessaging()
        self.unblocked = threading.Event()
        self.unblocked.set()
        self.waiting = 0

    def publish(
        self, topic: str, key: str, payload: bytes, *, message_id: str | None = None
    ) -> None:
        self.waiting += 1
        try:
            self.unblocked.wait(timeout=TIMEOUT)
        finally:
            self.waiting -= 1
        self._messaging.publish(topic, key, payload, message_id=message_id)

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._messaging, attribute)


def test_bulkhead_in_a_server_ingest_publishing_has_a_bulkhead_of_its_own() -> None:
    messaging = BlockingMessaging()
    server = StovepipeServer(
        open_storage("memory://"),
        QueueMap({f"q{n}": FakeSourceControl(["c1"], name=f"q{n}") for n in range(3)}),
        runners=RunnerMap({f"q{n}": FakeBuildRunner(duration=60) for n in range(3)}),
        listen="127.0.0.1:0",
        max_workers=8,
        metrics=Metrics(process_metrics=False),
        messaging=cast(Messaging, messaging),
        bulkhead_size=1,
    )
    server.start()
    channel = grpc.insecure_channel(server.address)
    try:
        client = StovepipeClient(channel)
        messaging.unblocked.clear()
        stuck = client.Ingest.future(pb.IngestRequest(queue="q0"), timeout=TIMEOUT)
        deadline = time.monotonic() + TIMEOUT
        while messaging.waiting < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(grpc.RpcError) as refused:
            client.Ingest(pb.IngestRequest(queue="q1"), timeout=TIMEOUT)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert (refused.value.details() or "").startswith("messaging is busy; retry in")
        # Storage has a bulkhead of its own, with its slot free: reads go on.
        assert client.GetRequest(pb.GetRequestRequest(id="request/q0/1"), timeout=TIMEOUT)
        messaging.unblocked.set()
        assert stuck.result(timeout=TIMEOUT).id == "request/q0/1"
        assert client.Ingest(pb.IngestRequest(queue="q1"), timeout=TIMEOUT).id == "request/q1/1"
    finally:
        messaging.unblocked.set()
        channel.close()
        server.stop(grace=0)


def test_breaker_a_callers_own_deadline_running_out_is_no_backend_failure(
    server_url: Callable[[str], str], caplog: pytest.LogCaptureFixture
) -> None:
    """Waves of calls with deadlines of a few milliseconds, from racing threads, on a healthy
    etcd: many run out of time inside etcd, yet the breaker never opens and nothing is
    logged as an error (etcd's "context deadline exceeded" is the caller's deadline)."""
    url = server_url("etcd")
    prefix = f"stovepipe-test/{uuid.uuid4().hex[:12]}/"
    server = StovepipeServer(
        open_storage(f"{url}{'&' if '?' in url else '?'}prefix={prefix}"),
        QueueMap({"q": FakeSourceControl(["c1"], name="q")}),
        listen="127.0.0.1:0",
        max_workers=8,
        metrics=Metrics(process_metrics=False),
        breaker_failures=3,
        breaker_reset=5.0,
    )
    breaker = server.guards["storage"].breaker
    assert breaker is not None
    openings: list[bool] = []
    breaker.on_change(openings.append)
    server.start()
    channel = grpc.insecure_channel(server.address)
    client = StovepipeClient(channel)
    codes: list[grpc.StatusCode] = []
    try:
        client.Ingest(pb.IngestRequest(queue="q"), timeout=TIMEOUT)  # reachable and healthy

        def wave(n: int) -> None:
            for i in range(40):
                deadline = 0.001 + ((n * 40 + i) % 15) / 1000  # 1 to 15 ms
                try:
                    client.GetQueue(pb.GetQueueRequest(queue="q"), timeout=deadline)
                    codes.append(grpc.StatusCode.OK)
                except grpc.RpcError as error:
                    codes.append(cast(grpc.Call, error).code())

        with caplog.at_level(logging.WARNING):
            for _ in range(3):
                run_threads(8, wave)
    finally:
        channel.close()
        server.stop(grace=1)
    assert grpc.StatusCode.DEADLINE_EXCEEDED in codes  # the deadlines were really short
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED}, set(codes)
    assert openings == []
    assert not breaker.refusing()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
