"""Idempotent publish: a message carries an id; publishing an id that is pending on its topic
(published, not yet acknowledged or dead-lettered) is a no-op, on every queue, also when
publishers race. Once settled, the id may be published again."""

from __future__ import annotations

import threading
import time

import pytest

from stovepipe.messaging import MAX_MESSAGE_ID_BYTES, Message, PermanentFailure
from stovepipe.messaging.registry import InspectableMessaging

from .conftest import MessagingFactory
from .recorder import Recorder, payloads
from .test_delivery import dead_letters_of

TIMEOUT = 20.0


def delivered_up_to_sentinel(queue: InspectableMessaging, topic: str, key: str) -> list[bytes]:
    """Subscribe, start, publish a sentinel behind ``key``'s messages and return the payloads
    of ``key`` delivered up to it: per-key order makes every earlier message come first."""
    sentinel = Recorder()
    queue.subscribe(topic, sentinel)
    queue.start()
    queue.publish(topic, key, b"sentinel")
    count = 1
    while b"sentinel" not in (delivered := payloads(sentinel.wait_for(count, TIMEOUT), key)):
        count = len(delivered) + 1
    return delivered


def test_duplicate_publishes_of_one_id_leave_one_pending_message(
    make_messaging: MessagingFactory, topic: str
) -> None:
    queue = make_messaging()
    for _ in range(5):
        queue.publish(topic, "k", b"head", message_id="request/k/1")
    assert queue.backlog(topic) == 1
    assert delivered_up_to_sentinel(queue, topic, "k") == [b"head", b"sentinel"]


def test_racing_publishers_of_the_same_id_leave_one_pending_message(
    make_messaging: MessagingFactory, topic: str
) -> None:
    queue = make_messaging()
    threads_count, rounds = 8, 25
    barrier = threading.Barrier(threads_count, timeout=TIMEOUT)
    errors: list[BaseException] = []

    def publish() -> None:
        try:
            barrier.wait()
            for _ in range(rounds):
                queue.publish(topic, "k", b"head", message_id="request/k/1")
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=publish) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
        assert not thread.is_alive(), "a publisher hung"
    assert errors == []
    assert queue.backlog(topic) == 1
    assert delivered_up_to_sentinel(queue, topic, "k") == [b"head", b"sentinel"]


def test_distinct_ids_are_distinct_messages_and_no_id_is_a_fresh_one(
    make_messaging: MessagingFactory, topic: str
) -> None:
    queue = make_messaging()
    queue.publish(topic, "k", b"a", message_id="one")
    queue.publish(topic, "k", b"b", message_id="two")
    queue.publish(topic, "k", b"c")
    queue.publish(topic, "k", b"c")
    assert queue.backlog(topic) == 4
    assert delivered_up_to_sentinel(queue, topic, "k") == [b"a", b"b", b"c", b"c", b"sentinel"]


def test_an_id_is_pending_per_topic(make_messaging: MessagingFactory, topic: str) -> None:
    queue = make_messaging()
    other = f"{topic}-other"
    queue.publish(topic, "k", b"x", message_id="same")
    queue.publish(other, "k", b"x", message_id="same")
    assert queue.backlog(topic) == 1
    assert queue.backlog(other) == 1


def test_a_delivery_carries_its_message_id(make_messaging: MessagingFactory, topic: str) -> None:
    queue = make_messaging()
    recorder = Recorder()
    queue.subscribe(topic, recorder)
    queue.start()
    queue.publish(topic, "k", b"x", message_id="request/q/7")
    (seen,) = recorder.wait_for(1)
    assert seen.message.message_id == "request/q/7"


def test_an_acknowledged_id_may_be_published_again(
    make_messaging: MessagingFactory, topic: str
) -> None:
    queue = make_messaging()
    recorder = Recorder()
    queue.subscribe(topic, recorder)
    queue.start()
    queue.publish(topic, "k", b"first", message_id="again")
    recorder.wait_for(1)
    # Acknowledged once the backlog is empty: the handler returned and the ack is stored.
    wait_for_backlog(queue, topic, 0)
    queue.publish(topic, "k", b"second", message_id="again")
    assert payloads(recorder.wait_for(2), "k") == [b"first", b"second"]


def test_a_dead_lettered_id_may_be_published_again(
    make_messaging: MessagingFactory, topic: str
) -> None:
    queue = make_messaging()

    def refuse(message: Message) -> None:
        if message.payload == b"first":
            raise PermanentFailure("refused")

    recorder = Recorder(refuse)
    queue.subscribe(topic, recorder)
    queue.start()
    queue.publish(topic, "k", b"first", message_id="again")
    dead_letters_of(queue, topic)
    wait_for_backlog(queue, topic, 0)
    queue.publish(topic, "k", b"second", message_id="again")
    assert payloads(recorder.wait_for(2), "k") == [b"first", b"second"]


@pytest.mark.parametrize("message_id", ["", "x" * (MAX_MESSAGE_ID_BYTES + 1), "é" * 128])
def test_a_message_id_the_contract_does_not_take_is_refused(
    make_messaging: MessagingFactory, topic: str, message_id: str
) -> None:
    queue = make_messaging()
    with pytest.raises(ValueError, match="message_id"):
        queue.publish(topic, "k", b"x", message_id=message_id)
    assert queue.backlog(topic) == 0


def wait_for_backlog(queue: InspectableMessaging, topic: str, count: int) -> None:
    """Wait (bounded) until ``topic``'s backlog is ``count``."""
    deadline = time.monotonic() + TIMEOUT
    while (left := queue.backlog(topic)) != count:
        assert time.monotonic() < deadline, f"backlog {left}, not {count}"
        time.sleep(0.01)
