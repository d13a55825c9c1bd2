"""Delivery, retry with backoff, dead letters and draining: every queue implementation."""

from __future__ import annotations

import collections
import itertools
import threading
import time
from collections.abc import Callable

import pytest

from stovepipe.messaging import Message, PermanentFailure
from stovepipe.messaging.inprocess import DeadLetter
from stovepipe.messaging.registry import InspectableMessaging

from .conftest import MessagingFactory
from .recorder import Recorder, payloads

TIMEOUT = 20.0


def dead_letters_of(queue: InspectableMessaging, topic: str, count: int = 1) -> list[DeadLetter]:
    """Wait until ``topic`` has ``count`` dead letters; return them."""
    deadline = time.monotonic() + TIMEOUT
    while len(letters := queue.dead_letters(topic)) < count:
        assert time.monotonic() < deadline, f"{len(letters)} of {count} dead letters: {letters}"
        time.sleep(0.02)
    return letters


def failing(times: int) -> Callable[[Message], None]:
    """A behaviour that fails the first ``times`` deliveries of each message."""

    def behave(message: Message) -> None:
        if message.attempt <= times:
            raise RuntimeError(f"boom on attempt {message.attempt}")

    return behave


def test_published_message_is_delivered_with_its_topic_key_payload_and_attempt_one(
    make_messaging: MessagingFactory, topic: str
) -> None:
    queue = make_messaging()
    recorder = Recorder()
    queue.subscribe(topic, recorder)
    queue.start()
    payload = b'{"id":"request/monorepo/main/1"}'
    queue.publish(topic, "monorepo/main", payload, message_id="request/monorepo/main/1")

    (seen,) = recorder.wait_for(1)
    assert seen.message == Message(topic, "monorepo/main", payload, 1, "request/monorepo/main/1")


def test_messages_published_before_start_are_delivered_after_start(
    make_messaging: MessagingFactory, topic: str
) -> None:
    queue = make_messaging()
    for n in range(3):
        queue.publish(topic, "k", str(n).encode())
    recorder = Recorder()
    queue.subscribe(topic, recorder)
    queue.start()

    assert payloads(recorder.wait_for(3)) == [b"0", b"1", b"2"]


def test_keys_and_payloads_are_exact_bytes_case_and_whitespace_significant(
    make_messaging: MessagingFactory, topic: str
) -> None:
    keys = ["Q", "q", "q ", " q", "q\x00x", "ünï/cødé 🚀", "a:b", "a", "a:"]
    payload = bytes(range(256))
    queue = make_messaging()
    recorder = Recorder()
    queue.subscribe(topic, recorder)
    queue.start()
    for key in keys:
        queue.publish(topic, key, key.encode() + payload)

    seen = recorder.wait_for(len(keys))
    assert sorted(s.message.key for s in seen) == sorted(keys)
    assert all(s.message.payload == s.message.key.encode() + payload for s in seen)


def test_failed_delivery_is_retried_with_backoff_up_to_max_attempts_then_dead_lettered_with_reason(
    make_messaging: MessagingFactory, topic: str
) -> None:
    backoff = 0.2
    queue = make_messaging(max_attempts=3, backoff=backoff)
    recorder = Recorder(failing(times=99))
    queue.subscribe(topic, recorder)
    queue.start()
    queue.publish(topic, "k", b"doomed", message_id="doomed-1")

    (letter,) = dead_letters_of(queue, topic)
    seen = recorder.wait_for(3)
    assert [s.message.attempt for s in seen] == [1, 2, 3]
    # The n-th retry waits backoff * 2**(n-1): 0.2 s, then 0.4 s.
    assert seen[1].started - seen[0].ended >= backoff * 0.9
    assert seen[2].started - seen[1].ended >= 2 * backoff * 0.9
    assert letter.message == Message(topic, "k", b"doomed", 3, "doomed-1")
    assert "RuntimeError: boom on attempt 3" in letter.reason
    time.sleep(4 * backoff)
    assert len(recorder.seen) == 3, "a dead letter is never delivered again"


def test_a_delivery_that_succeeds_on_a_retry_is_acknowledged_not_dead_lettered(
    make_messaging: MessagingFactory, topic: str
) -> None:
    queue = make_messaging(max_attempts=3, backoff=0.05)
    recorder = Recorder(lambda m: failing(times=2)(m) if m.payload == b"flaky" else None)
    queue.subscribe(topic, recorder)
    queue.start()
    queue.publish(topic, "k", b"flaky")
    queue.publish(topic, "k", b"next")

    seen = recorder.wait_for(4)
    assert [(s.message.payload, s.message.attempt) for s in seen] == [
        (b"flaky", 1),
        (b"flaky", 2),
        (b"flaky", 3),
        (b"next", 1),
    ]
    time.sleep(0.3)
    assert queue.dead_letters(topic) == []
    assert len(recorder.seen) == 4


def test_permanent_failure_dead_letters_at_once_with_the_reason(
    make_messaging: MessagingFactory, topic: str
) -> None:
    def refuse(message: Message) -> None:
        raise PermanentFailure("malformed payload: no id")

    queue = make_messaging(max_attempts=5, backoff=0.05)
    recorder = Recorder(refuse)
    queue.subscribe(topic, recorder)
    queue.start()
    queue.publish(topic, "k", b"{}", message_id="refused-1")

    (letter,) = dead_letters_of(queue, topic)
    assert letter.message == Message(topic, "k", b"{}", 1, "refused-1")
    assert letter.reason == "PermanentFailure: malformed payload: no id"
    time.sleep(0.3)
    assert len(recorder.seen) == 1


def test_a_retried_message_holds_back_the_later_messages_of_its_key_not_other_keys(
    make_messaging: MessagingFactory, topic: str
) -> None:
    # A backoff that a worker stalled on a loaded machine does not outlast.
    queue = make_messaging(max_attempts=3, backoff=1.0, workers=2)
    recorder = Recorder(lambda m: failing(times=1)(m) if m.payload == b"first" else None)
    queue.subscribe(topic, recorder)
    queue.publish(topic, "held", b"first")
    queue.publish(topic, "held", b"second")
    queue.publish(topic, "other", b"free")
    queue.start()

    seen = recorder.wait_for(4)
    assert payloads(seen, "held") == [b"first", b"first", b"second"]
    free = next(s for s in seen if s.message.key == "other")
    retried = [s for s in seen if s.message.payload == b"first"][1]
    assert free.started < retried.started, "another key does not wait for the backoff"


def test_per_key_order_one_at_a_time_with_concurrent_workers(
    make_messaging: MessagingFactory, topic: str
) -> None:
    keys, per_key = 4, 15
    queue = make_messaging(workers=4)
    # Each delivery waits, up to a shared deadline, until a delivery of another key runs beside
    # it: a queue that handles keys in parallel always gets there (its idle workers claim the
    # other keys within their idle wait), one that handles them one after another never does.
    # Left to chance, with fast handlers, a loaded machine can serialise a parallel queue.
    running: collections.Counter[str] = collections.Counter()
    running_lock = threading.Lock()
    together = threading.Event()
    deadline = time.monotonic() + TIMEOUT / 2

    def wait_for_another_key(message: Message) -> None:
        with running_lock:
            running[message.key] += 1
            if len(+running) > 1:
                together.set()
        try:
            together.wait(max(0.0, deadline - time.monotonic()))
        finally:
            with running_lock:
                running[message.key] -= 1

    recorder = Recorder(wait_for_another_key, pause=0.005)
    queue.subscribe(topic, recorder)
    queue.start()

    def publish(key: str) -> None:
        for n in range(per_key):
            queue.publish(topic, key, f"{n:03}".encode())

    publishers = [threading.Thread(target=publish, args=(f"k{k}",)) for k in range(keys)]
    for thread in publishers:
        thread.start()
    for thread in publishers:
        thread.join()

    seen = recorder.wait_for(keys * per_key, timeout=2 * TIMEOUT)
    for k in range(keys):
        mine = sorted((s for s in seen if s.message.key == f"k{k}"), key=lambda s: s.started)
        assert [s.message.payload for s in mine] == [f"{n:03}".encode() for n in range(per_key)]
        for before, after in itertools.pairwise(mine):
            assert before.ended <= after.started, "two deliveries of one key overlapped"
    overlapping_keys = any(
        a.message.key != b.message.key and a.started < b.ended and b.started < a.ended
        for a in seen
        for b in seen
    )
    assert together.is_set() and overlapping_keys, "different keys were never handled in parallel"


def test_stop_drains_the_running_delivery_and_acknowledges_it(
    make_messaging: MessagingFactory, topic: str
) -> None:
    queue = make_messaging()
    entered = threading.Event()
    recorder = Recorder(lambda m: entered.set(), pause=0.0)

    def slow(message: Message) -> None:
        entered.set()
        time.sleep(0.5)
        recorder(message)

    queue.subscribe(topic, slow)
    queue.start()
    queue.publish(topic, "k", b"in flight")
    assert entered.wait(TIMEOUT)
    queue.stop(timeout=10)

    assert [s.message.payload for s in recorder.seen] == [b"in flight"]


def test_publish_after_stop_is_refused(make_messaging: MessagingFactory, topic: str) -> None:
    queue = make_messaging()
    queue.start()
    queue.stop(timeout=5)
    with pytest.raises(RuntimeError):
        queue.publish(topic, "k", b"too late")


def test_one_handler_per_topic(make_messaging: MessagingFactory, topic: str) -> None:
    queue = make_messaging()
    queue.subscribe(topic, Recorder())
    with pytest.raises(ValueError):
        queue.subscribe(topic, Recorder())
