"""InProcessMessaging under real worker and publisher threads."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from stovepipe.messaging import Message, Messaging, PermanentFailure, dead_letter_topic
from stovepipe.messaging.inprocess import DEFAULT_MAX_DEAD_LETTERS, InProcessMessaging

TIMEOUT = 10.0


@pytest.fixture
def queue() -> Iterator[InProcessMessaging]:
    messaging = InProcessMessaging(max_attempts=3, backoff_seconds=0.05, workers=4)
    yield messaging
    messaging.stop(timeout=TIMEOUT)


def test_dead_letter_topic_names_the_topic() -> None:
    assert dead_letter_topic("process") == "process.dead-letter"


def test_published_message_is_delivered_once_acknowledged(queue: InProcessMessaging) -> None:
    delivered: list[Message] = []
    queue.subscribe("t", delivered.append)
    queue.start()
    queue.publish("t", "k", b"payload", message_id="m-1")
    assert queue.wait_until_idle(TIMEOUT)
    assert delivered == [Message("t", "k", b"payload", 1, "m-1")]
    assert queue.dead_letters("t") == []


def test_messages_published_before_start_or_subscribe_are_delivered_later(
    queue: InProcessMessaging,
) -> None:
    delivered: list[bytes] = []
    queue.publish("t", "k", b"before subscribe")
    queue.start()
    queue.publish("t", "k", b"before handler")
    queue.subscribe("t", lambda message: delivered.append(message.payload))
    assert queue.wait_until_idle(TIMEOUT)
    assert delivered == [b"before subscribe", b"before handler"]


def test_per_key_ordering_one_delivery_per_key_at_a_time_in_publish_order(
    queue: InProcessMessaging,
) -> None:
    keys = [f"queue-{n}" for n in range(8)]
    per_key = 60
    received: dict[str, list[int]] = collections.defaultdict(list)
    active: set[str] = set()
    overlaps: list[str] = []
    peak = 0
    lock = threading.Lock()
    # Each delivery waits, up to a shared deadline, until another key runs beside it: a queue
    # that runs keys in parallel gets there at once, one that runs them in turn never does.
    together = threading.Event()
    deadline = time.monotonic() + TIMEOUT / 2

    def handle(message: Message) -> None:
        nonlocal peak
        with lock:
            if message.key in active:
                overlaps.append(message.key)
            active.add(message.key)
            peak = max(peak, len(active))
            if peak > 1:
                together.set()
        together.wait(max(0.0, deadline - time.monotonic()))
        time.sleep(0.0005)
        with lock:
            active.discard(message.key)
            received[message.key].append(int(message.payload))

    queue.subscribe("t", handle)
    queue.start()
    barrier = threading.Barrier(len(keys))

    def publish_all(key: str) -> None:
        barrier.wait()
        for n in range(per_key):
            queue.publish("t", key, str(n).encode())

    publishers = [threading.Thread(target=publish_all, args=(key,)) for key in keys]
    for publisher in publishers:
        publisher.start()
    for publisher in publishers:
        publisher.join()
    assert queue.wait_until_idle(TIMEOUT)
    assert overlaps == []
    assert {key: received[key] for key in keys} == {key: list(range(per_key)) for key in keys}
    assert peak > 1  # distinct keys did run in parallel


def test_a_blocked_key_does_not_hold_back_other_keys(queue: InProcessMessaging) -> None:
    release = threading.Event()
    delivered: list[str] = []

    def handle(message: Message) -> None:
        if message.key == "slow":
            release.wait(TIMEOUT)
        delivered.append(message.key)

    queue.subscribe("t", handle)
    queue.start()
    queue.publish("t", "slow", b"")
    queue.publish("t", "fast", b"")
    deadline = time.monotonic() + TIMEOUT
    while "fast" not in delivered and time.monotonic() < deadline:
        time.sleep(0.005)
    assert delivered == ["fast"]
    release.set()
    assert queue.wait_until_idle(TIMEOUT)
    assert delivered == ["fast", "slow"]


def test_failed_delivery_is_retried_with_backoff_and_holds_back_its_key(
    queue: InProcessMessaging,
) -> None:
    seen: list[tuple[bytes, int, float]] = []

    def handle(message: Message) -> None:
        seen.append((message.payload, message.attempt, time.monotonic()))
        if message.payload == b"first" and message.attempt < 3:
            raise ConnectionError("storage down")

    queue.subscribe("t", handle)
    queue.publish("t", "k", b"first")
    queue.publish("t", "k", b"second")
    queue.start()
    assert queue.wait_until_idle(TIMEOUT)
    assert [(payload, attempt) for payload, attempt, _ in seen] == [
        (b"first", 1),
        (b"first", 2),
        (b"first", 3),
        (b"second", 1),
    ]
    first_wait, second_wait = seen[1][2] - seen[0][2], seen[2][2] - seen[1][2]
    assert first_wait >= 0.05
    assert second_wait >= 0.1  # exponential: twice the first backoff
    assert queue.dead_letters("t") == []


def test_after_max_attempts_the_message_is_dead_lettered_with_its_reason_and_the_key_moves_on(
    queue: InProcessMessaging,
) -> None:
    attempts: list[int] = []
    delivered: list[bytes] = []

    def handle(message: Message) -> None:
        if message.payload == b"poison":
            attempts.append(message.attempt)
            raise ConnectionError("still down")
        delivered.append(message.payload)

    queue.subscribe("t", handle)
    queue.start()
    queue.publish("t", "k", b"poison", message_id="poison-1")
    queue.publish("t", "k", b"next")
    assert queue.wait_until_idle(TIMEOUT)
    assert attempts == [1, 2, 3]
    assert delivered == [b"next"]
    [letter] = queue.dead_letters("t")
    assert letter.message == Message("t", "k", b"poison", 3, "poison-1")
    assert letter.reason == "ConnectionError: still down"


def test_permanent_failure_dead_letters_at_once(queue: InProcessMessaging) -> None:
    attempts: list[int] = []

    def handle(message: Message) -> None:
        attempts.append(message.attempt)
        raise PermanentFailure("malformed payload")

    queue.subscribe("t", handle)
    queue.start()
    queue.publish("t", "k", b"junk")
    assert queue.wait_until_idle(TIMEOUT)
    assert attempts == [1]
    [letter] = queue.dead_letters("t")
    assert letter.message.attempt == 1
    assert letter.reason == "PermanentFailure: malformed payload"


def test_dead_letters_keep_the_newest_per_topic_up_to_the_bound_and_count_the_dropped() -> None:
    queue = InProcessMessaging(max_dead_letters=3)

    def handle(message: Message) -> None:
        raise PermanentFailure(message.payload.decode())

    queue.subscribe("t", handle)
    queue.subscribe("u", handle)
    for n in range(5):
        queue.publish("t", "k", str(n).encode())
    queue.publish("u", "k", b"other topic")
    queue.start()
    try:
        assert queue.wait_until_idle(TIMEOUT)
        assert [letter.message.payload for letter in queue.dead_letters("t")] == [b"2", b"3", b"4"]
        assert queue.dead_letters_dropped("t") == 2
        assert [letter.message.payload for letter in queue.dead_letters("u")] == [b"other topic"]
        assert queue.dead_letters_dropped("u") == 0
    finally:
        queue.stop(timeout=TIMEOUT)


def test_dead_letters_are_bounded_by_default_and_the_bound_must_be_positive() -> None:
    assert InProcessMessaging().max_dead_letters == DEFAULT_MAX_DEAD_LETTERS == 1000
    with pytest.raises(ValueError, match="max_dead_letters"):
        InProcessMessaging(max_dead_letters=0)


def test_stop_drains_in_flight_deliveries_then_refuses_publishes() -> None:
    queue: Messaging = InProcessMessaging(workers=2)
    started = threading.Event()
    finished: list[bytes] = []

    def handle(message: Message) -> None:
        started.set()
        time.sleep(0.2)
        finished.append(message.payload)

    queue.subscribe("t", handle)
    queue.start()
    queue.publish("t", "k", b"in flight")
    assert started.wait(TIMEOUT)
    queue.stop(timeout=TIMEOUT)
    assert finished == [b"in flight"]
    with pytest.raises(RuntimeError, match="stopped"):
        queue.publish("t", "k", b"too late")
    queue.stop()  # idempotent


def test_stop_drains_queued_and_backing_off_messages_within_the_timeout() -> None:
    queue = InProcessMessaging(workers=1, backoff_seconds=0.05)
    delivered: list[tuple[bytes, int]] = []
    started = threading.Event()

    def handle(message: Message) -> None:
        started.set()
        time.sleep(0.01)
        if message.payload == b"0" and message.attempt == 1:
            raise ConnectionError("storage down")  # backing off when stop begins
        delivered.append((message.payload, message.attempt))

    queue.subscribe("t", handle)
    payloads = [str(n).encode() for n in range(20)]
    for payload in payloads:
        queue.publish("t", "k", payload)
    queue.start()
    assert started.wait(TIMEOUT)
    queue.stop(timeout=TIMEOUT)
    assert delivered == [(b"0", 2)] + [(payload, 1) for payload in payloads[1:]]
    with pytest.raises(RuntimeError, match="stopped"):
        queue.publish("t", "k", b"too late")


def test_stop_leaves_what_cannot_be_drained_within_the_timeout_undelivered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue = InProcessMessaging(workers=1, backoff_seconds=60, max_backoff_seconds=60)
    attempts: list[int] = []

    def handle(message: Message) -> None:
        attempts.append(message.attempt)
        raise ConnectionError("storage down")

    queue.subscribe("t", handle)
    queue.publish("t", "k", b"")
    queue.start()
    assert _eventually(lambda: attempts == [1])
    began = time.monotonic()
    queue.stop(timeout=0.2)
    assert 0.15 <= time.monotonic() - began < TIMEOUT
    assert attempts == [1]
    assert "stopped with 1 messages undelivered" in caplog.text


def _eventually(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_stop_gives_up_on_a_stuck_handler_after_the_timeout() -> None:
    queue = InProcessMessaging(workers=1)
    started, release = threading.Event(), threading.Event()

    def handle(message: Message) -> None:
        started.set()
        release.wait(TIMEOUT)

    queue.subscribe("t", handle)
    queue.start()
    queue.publish("t", "k", b"")
    assert started.wait(TIMEOUT)
    began = time.monotonic()
    queue.stop(timeout=0.2)
    assert 0.15 <= time.monotonic() - began < TIMEOUT
    release.set()


def test_one_handler_per_topic_and_start_only_once(queue: InProcessMessaging) -> None:
    queue.subscribe("t", lambda message: None)
    with pytest.raises(ValueError, match="already has a handler"):
        queue.subscribe("t", lambda message: None)
    queue.start()
    with pytest.raises(RuntimeError, match="only once"):
        queue.start()


def test_publish_checks_argument_types(queue: InProcessMessaging) -> None:
    with pytest.raises(TypeError):
        queue.publish("t", "k", "text")  # type: ignore[arg-type]
