"""A key that is held or backing off waits alone: every queue implementation.

A sharded engine stores many keys in one ordered stream; a key waiting there must not hold
back the keys behind it. The tests use many keys (:data:`KEYS`), so that on any number of
shards some share the waiting key's shard, and bound how long the others may take.
"""

from __future__ import annotations

import itertools
import time

from stovepipe.messaging import Message
from stovepipe.messaging.contract import Hold

from .conftest import MessagingFactory
from .recorder import Recorder, payloads

KEYS = [f"key-{n}" for n in range(40)]
"""``KEYS[0]`` waits; with crc32 sharding, 3 of the others share its shard out of 16 (10 of
4, 4 of 8)."""
BOUND = 10.0
"""Seconds within which every other key is delivered: the waiting key waits far longer."""


def delivered_keys(recorder: Recorder, keys: list[str], timeout: float) -> set[str]:
    """The keys of ``keys`` delivered once ``keys`` all were, or when ``timeout`` ran out."""
    wanted = set(keys)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = {s.message.key for s in recorder.seen} & wanted
        if done == wanted:
            return done
        time.sleep(0.02)
    return {s.message.key for s in recorder.seen} & wanted


def deliveries_of(recorder: Recorder, key: str, count: int, timeout: float) -> list[Message]:
    """The deliveries of ``key`` once there are ``count``, or when ``timeout`` ran out."""
    deadline = time.monotonic() + timeout
    while True:
        seen = [s.message for s in sorted(recorder.seen, key=lambda s: s.started)]
        of_key = [message for message in seen if message.key == key]
        if len(of_key) >= count or time.monotonic() >= deadline:
            return of_key
        time.sleep(0.02)


def test_a_held_key_does_not_hold_back_the_other_keys(
    make_messaging: MessagingFactory, topic: str
) -> None:
    # Held again at every delivery: a queue that re-delivers it first and keeps the others
    # of its shard behind it never delivers them.
    def behave(message: Message) -> None:
        if message.key == KEYS[0]:
            raise Hold(0.2, "build still running")

    recorder = Recorder(behave)
    queue = make_messaging(workers=2)
    queue.subscribe(topic, recorder)
    queue.start()
    queue.publish(topic, KEYS[0], b"held")
    recorder.wait_for(1)
    for key in KEYS[1:]:
        queue.publish(topic, key, b"free")

    delivered = delivered_keys(recorder, KEYS[1:], BOUND)
    assert delivered == set(KEYS[1:]), f"never delivered: {sorted(set(KEYS[1:]) - delivered)}"
    held = deliveries_of(recorder, KEYS[0], 2, BOUND)
    assert len(held) >= 2, "the held key is delivered again"
    assert {m.attempt for m in held} == {1}


def test_a_key_backing_off_after_failures_does_not_hold_back_the_other_keys(
    make_messaging: MessagingFactory, topic: str
) -> None:
    def behave(message: Message) -> None:
        if message.key == KEYS[0]:
            raise RuntimeError("fails every time")

    recorder = Recorder(behave)
    queue = make_messaging(workers=2, max_attempts=50, backoff=0.2, max_backoff=0.2)
    queue.subscribe(topic, recorder)
    queue.start()
    queue.publish(topic, KEYS[0], b"failing")
    recorder.wait_for(1)
    for key in KEYS[1:]:
        queue.publish(topic, key, b"free")

    delivered = delivered_keys(recorder, KEYS[1:], BOUND)
    assert delivered == set(KEYS[1:]), f"never delivered: {sorted(set(KEYS[1:]) - delivered)}"
    failed = [message.attempt for message in deliveries_of(recorder, KEYS[0], 2, BOUND)]
    assert len(failed) >= 2, "the failing key is retried"
    assert failed == list(range(1, len(failed) + 1)), "each retry counts one attempt"


def test_a_held_key_keeps_its_order_with_messages_published_while_it_waits(
    make_messaging: MessagingFactory, topic: str
) -> None:
    holds = 2

    def behave(message: Message) -> None:
        if (
            message.payload == b"first"
            and sum(s.message.payload == b"first" for s in recorder.seen) < holds
        ):
            raise Hold(0.3)

    recorder = Recorder(behave)
    queue = make_messaging(workers=4)
    queue.subscribe(topic, recorder)
    queue.publish(topic, "k", b"first")
    queue.publish(topic, "k", b"second")
    queue.start()
    recorder.wait_for(1)
    # Published while "first" waits for its next delivery.
    queue.publish(topic, "k", b"third")
    for key in KEYS[1:]:
        queue.publish(topic, key, b"free")

    seen = recorder.wait_for(holds + 3 + len(KEYS) - 1)
    assert payloads(seen, "k") == [b"first"] * (holds + 1) + [b"second", b"third"]
    assert [s.message.attempt for s in seen if s.message.key == "k"] == [1] * (holds + 3)
    ordered = sorted((s for s in seen if s.message.key == "k"), key=lambda s: s.started)
    assert all(later.started >= earlier.ended for earlier, later in itertools.pairwise(ordered)), (
        "one delivery of the key at a time"
    )


def test_a_retried_key_keeps_its_order_and_counts_each_retry(
    make_messaging: MessagingFactory, topic: str
) -> None:
    def behave(message: Message) -> None:
        if message.payload == b"first" and message.attempt <= 2:
            raise RuntimeError(f"boom on attempt {message.attempt}")

    recorder = Recorder(behave)
    queue = make_messaging(workers=4, max_attempts=5, backoff=0.2)
    queue.subscribe(topic, recorder)
    queue.publish(topic, "k", b"first")
    queue.publish(topic, "k", b"second")
    queue.start()
    recorder.wait_for(1)
    queue.publish(topic, "k", b"third")

    seen = recorder.wait_for(5)
    assert payloads(seen, "k") == [b"first"] * 3 + [b"second", b"third"]
    ordered = sorted(seen, key=lambda s: s.started)
    assert [s.message.attempt for s in ordered] == [1, 2, 3, 1, 1]
    assert queue.dead_letters(topic) == []


def test_backlog_counts_the_messages_of_a_held_key(
    make_messaging: MessagingFactory, topic: str
) -> None:
    def behave(message: Message) -> None:
        if message.key == "k":
            raise Hold(60.0)

    recorder = Recorder(behave)
    queue = make_messaging(workers=2)
    queue.subscribe(topic, recorder)
    queue.publish(topic, "k", b"first")
    queue.publish(topic, "k", b"second")
    queue.start()
    recorder.wait_for(1)
    queue.publish(topic, "k", b"third")
    queue.publish(topic, "other", b"free")

    delivered_keys(recorder, ["other"], BOUND)
    # The held message, the two behind it and nothing of "other" (acknowledged).
    deadline = time.monotonic() + BOUND
    while (left := queue.backlog(topic)) != 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == 3
    assert payloads(recorder.seen, "k") == [b"first"]
