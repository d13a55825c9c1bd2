"""The one consumer engine (BrokeredMessaging, the in-process queue included): transient
faults are retried for a long while without counting attempts, handler errors up to
``max_attempts``, settlements across an engine outage are retried, and idle consumers do not
spin."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from stovepipe import storage
from stovepipe.messaging import Message, MessagingUnavailable
from stovepipe.messaging.brokered import BrokeredMessaging, Delivery
from stovepipe.messaging.inprocess import InProcessMessaging, MemoryBroker

TIMEOUT = 10.0


class FakeClock:
    """A monotonic clock the test advances."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_transient_outage_longer_than_30_s_does_not_dead_letter() -> None:
    clock = FakeClock()
    queue = InProcessMessaging(
        max_attempts=2, backoff_seconds=0.001, max_backoff_seconds=0.002, clock=clock
    )
    handled = threading.Event()
    deliveries: list[int] = []

    def handle(message: Message) -> None:
        deliveries.append(message.attempt)
        clock.now += 1.0  # each delivery meets one more second of outage
        if clock.now < 45:
            raise storage.Unavailable("sqlite: database is locked")
        handled.set()

    queue.subscribe("t", handle)
    queue.start()
    queue.publish("t", "k", b"x")
    try:
        assert handled.wait(TIMEOUT), f"not handled after {len(deliveries)} deliveries"
        assert queue.dead_letters("t") == []
        assert set(deliveries) == {1}, "transient faults counted as attempts"
    finally:
        queue.stop(timeout=TIMEOUT)


def test_transient_faults_past_the_budget_count_as_attempts() -> None:
    clock = FakeClock()
    queue = InProcessMessaging(
        max_attempts=2,
        backoff_seconds=0.001,
        max_backoff_seconds=0.002,
        transient_retry_seconds=10,
        clock=clock,
    )

    def handle(message: Message) -> None:
        clock.now += 1.0
        raise storage.Unavailable("down for good")

    queue.subscribe("t", handle)
    queue.start()
    queue.publish("t", "k", b"x")
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (letters := queue.dead_letters("t")):
            assert time.monotonic() < deadline, "never dead-lettered"
            time.sleep(0.01)
        assert "down for good" in letters[0].reason
        assert 10 <= clock.now <= 13
    finally:
        queue.stop(timeout=TIMEOUT)


def test_handler_errors_dead_letter_after_max_attempts() -> None:
    queue = InProcessMessaging(max_attempts=3, backoff_seconds=0.001)
    attempts: list[int] = []

    def handle(message: Message) -> None:
        attempts.append(message.attempt)
        raise ValueError("a logic error")

    queue.subscribe("t", handle)
    queue.start()
    queue.publish("t", "k", b"x")
    try:
        assert queue.wait_until_idle(TIMEOUT)
        assert attempts == [1, 2, 3]
        assert "ValueError: a logic error" in queue.dead_letters("t")[0].reason
    finally:
        queue.stop(timeout=TIMEOUT)


class FlakyAckBroker(MemoryBroker):
    """A memory broker whose first ``failures`` acks fail as an engine restart would."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.acks = 0

    def ack(self, delivery: Delivery) -> None:
        self.acks += 1
        if self.acks <= self.failures:
            raise MessagingUnavailable("mysql: lost the connection (restarting)")
        super().ack(delivery)


def test_an_ack_across_an_engine_restart_is_retried_not_lost() -> None:
    broker = FlakyAckBroker(failures=3)
    queue = BrokeredMessaging(broker, backoff_seconds=0.001, poll_interval=0.01)
    handled: list[bytes] = []
    queue.subscribe("t", lambda message: handled.append(message.payload))
    queue.publish("t", "k", b"once")
    queue.start()
    try:
        deadline = time.monotonic() + TIMEOUT
        while broker.backlog("t"):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert handled == [b"once"], "the handled message ran again"
        assert broker.acks == 4
    finally:
        queue.stop(timeout=TIMEOUT)


class CountingBroker(MemoryBroker):
    """A memory broker that counts the claims it is asked (the requests to the engine)."""

    def __init__(self) -> None:
        super().__init__()
        self.claims = 0
        self._count_lock = threading.Lock()

    def claim(self, topics: Sequence[str]) -> Delivery | None:
        with self._count_lock:
            self.claims += 1
        return super().claim(topics)


def test_an_idle_consumer_sends_at_most_5_requests_a_second() -> None:
    broker = CountingBroker()
    # The durable queues' defaults: 4 workers, a poll interval of 0.1 s.
    queue = BrokeredMessaging(broker)
    queue.subscribe("t", lambda message: None)
    queue.start()
    try:
        time.sleep(4.0)  # the poll interval doubles up to its cap (2 s) meanwhile
        before = broker.claims
        time.sleep(4.0)
        rate = (broker.claims - before) / 4.0
        print(f"idle claims per second: {rate:.1f}")
        assert rate <= 5.0, f"{rate:.1f} claims a second while idle"
        # A publish in this process still wakes a worker at once.
        handled = threading.Event()
        queue.subscribe("u", lambda message: handled.set())
        started = time.monotonic()
        queue.publish("u", "k", b"x")
        assert handled.wait(TIMEOUT)
        print(f"publish -> handler while idle: {time.monotonic() - started:.3f} s")
    finally:
        queue.stop(timeout=TIMEOUT)


def test_a_delivery_claimed_while_stopping_goes_back_unhandled_for_the_next_consumer() -> None:
    """A graceful stop claims nothing more: a claim already on its way when stop() begins
    hands its delivery back, uncounted, instead of running the handler."""
    claiming = threading.Event()
    stopping = threading.Event()

    class SlowClaims(MemoryBroker):
        def claim(self, topics: Sequence[str]) -> Delivery | None:
            claiming.set()
            assert stopping.wait(10), "stop() never began"
            return super().claim(topics)

        def close(self) -> None:  # the next consumer shares the messages
            pass

    broker = SlowClaims()
    handled: list[bytes] = []
    first = BrokeredMessaging(broker, workers=1, poll_interval=0.01)
    first.subscribe("t", lambda message: handled.append(message.payload))
    broker.publish("t", "k", b"one", "id-1")
    first.start()
    assert claiming.wait(10)
    stopper = threading.Thread(target=first.stop, kwargs={"timeout": 10})
    stopper.start()
    deadline = time.monotonic() + 10
    while not first._stopping and time.monotonic() < deadline:
        time.sleep(0.001)
    stopping.set()
    stopper.join(10)
    assert not stopper.is_alive()
    assert handled == []

    second = BrokeredMessaging(broker, workers=1, poll_interval=0.01)  # the same messages
    seen: list[Message] = []
    done = threading.Event()

    def record(message: Message) -> None:
        seen.append(message)
        done.set()

    second.subscribe("t", record)
    second.start()
    try:
        assert done.wait(10)
    finally:
        second.stop(timeout=5)
    assert [(m.payload, m.attempt) for m in seen] == [(b"one", 1)]
