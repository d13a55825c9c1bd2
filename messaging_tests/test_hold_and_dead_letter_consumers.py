"""Hold (deliver again later without counting an attempt) and dead-letter consumers:
every queue implementation."""

from __future__ import annotations

import itertools
import time

from stovepipe.messaging import Message, PermanentFailure
from stovepipe.messaging.contract import Hold, dead_letter_topic

from .conftest import MessagingFactory
from .recorder import Recorder, payloads


def test_hold_delivers_again_after_the_delay_without_counting_an_attempt(
    make_messaging: MessagingFactory, topic: str
) -> None:
    # More holds than max_attempts: were a hold counted, the message would be dead-lettered.
    holds = 6

    def behave(message: Message) -> None:
        if len(recorder.seen) < holds:
            raise Hold(0.05)

    recorder = Recorder(behave)
    queue = make_messaging(max_attempts=2, backoff=0.01)
    queue.subscribe(topic, recorder)
    queue.start()
    queue.publish(topic, "k", b"held")

    seen = recorder.wait_for(holds + 1)
    assert [s.message.attempt for s in seen] == [1] * (holds + 1)
    assert all(later.started - earlier.ended >= 0.04 for earlier, later in itertools.pairwise(seen))
    assert queue.dead_letters(topic) == []


def test_hold_keeps_later_messages_of_its_key_behind_it(
    make_messaging: MessagingFactory, topic: str
) -> None:
    def behave(message: Message) -> None:
        if (
            message.payload == b"first"
            and sum(s.message.payload == b"first" for s in recorder.seen) < 2
        ):
            raise Hold(0.05)

    recorder = Recorder(behave)
    queue = make_messaging()
    queue.subscribe(topic, recorder)
    queue.start()
    queue.publish(topic, "k", b"first")
    queue.publish(topic, "k", b"second")

    assert payloads(recorder.wait_for(4)) == [b"first", b"first", b"first", b"second"]


def test_dead_letter_consumer_receives_each_message_that_failed_for_good(
    make_messaging: MessagingFactory, topic: str
) -> None:
    def behave(message: Message) -> None:
        if message.payload == b"permanent":
            raise PermanentFailure("never")
        raise RuntimeError("always")

    failing = Recorder(behave)
    dead = Recorder()
    queue = make_messaging(max_attempts=2, backoff=0.01)
    queue.subscribe(topic, failing)
    queue.subscribe(dead_letter_topic(topic), dead)
    queue.start()
    queue.publish(topic, "a", b"permanent")
    queue.publish(topic, "b", b"exhausted")

    seen = dead.wait_for(2)
    assert sorted((s.message.key, s.message.payload) for s in seen) == [
        ("a", b"permanent"),
        ("b", b"exhausted"),
    ]
    # The dead letters are still kept for inspection.
    deadline = time.monotonic() + 10
    while len(queue.dead_letters(topic)) < 2:
        assert time.monotonic() < deadline, queue.dead_letters(topic)
        time.sleep(0.02)
