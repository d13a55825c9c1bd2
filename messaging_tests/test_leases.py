"""Leases on the durable queues: renewed while a handler runs, also during a graceful stop,
and handed back on a graceful stop so that the next consumer goes on at once."""

from __future__ import annotations

import threading
import time

from stovepipe.messaging import Message

from .conftest import MessagingFactory, backlog_when_drained
from .recorder import Recorder

LEASE = 2.0
"""Seconds of the visibility timeout: renewed every third of it, so a heartbeat may stall for
two thirds (1.3 s) on a loaded machine before another consumer could take the message."""
HANDLER_SECONDS = 5.0
"""Seconds a slow handler runs: more than two leases."""
TIMEOUT = 20.0


def test_a_running_delivery_keeps_its_lease_renewed_past_the_visibility_timeout(
    make_durable_messaging: MessagingFactory, topic: str
) -> None:
    slow = Recorder(pause=HANDLER_SECONDS)
    first = make_durable_messaging(visibility_timeout=LEASE, poll_interval=0.05)
    first.subscribe(topic, slow)
    first.start()
    first.publish(topic, "k", b"long job")
    slow_started = time.monotonic()
    other = Recorder()
    second = make_durable_messaging(visibility_timeout=LEASE, poll_interval=0.05)
    second.subscribe(topic, other)
    second.start()

    (done,) = slow.wait_for(1, timeout=TIMEOUT)
    time.sleep(LEASE)  # would the second consumer still get it?
    assert done.ended - slow_started >= HANDLER_SECONDS
    assert other.seen == [], "a message was delivered again while its handler still ran"
    assert backlog_when_drained(first, topic) == 0


def test_graceful_stop_keeps_renewing_the_leases_of_running_deliveries_until_they_finish(
    make_durable_messaging: MessagingFactory, topic: str
) -> None:
    entered = threading.Event()
    slow = Recorder(pause=HANDLER_SECONDS)

    def handler(message: Message) -> None:
        entered.set()
        slow(message)

    first = make_durable_messaging(visibility_timeout=LEASE, poll_interval=0.05)
    first.subscribe(topic, handler)
    first.start()
    first.publish(topic, "k", b"draining")
    assert entered.wait(TIMEOUT)
    other = Recorder()
    second = make_durable_messaging(visibility_timeout=LEASE, poll_interval=0.05)
    second.subscribe(topic, other)
    second.start()

    first.stop(timeout=10)  # a grace period longer than the handler's remaining time

    (done,) = slow.seen
    time.sleep(LEASE)
    assert all(s.started >= done.ended for s in other.seen), (
        "the next consumer started the message while the first still handled it"
    )
    assert other.seen == [], "a message acknowledged during the grace period ran again"
    assert backlog_when_drained(second, topic) == 0


def test_graceful_stop_hands_the_keys_back_so_the_next_consumer_goes_on_at_once(
    make_durable_messaging: MessagingFactory, topic: str
) -> None:
    lease = 10.0
    entered = threading.Event()

    def first_handler(message: Message) -> None:
        entered.set()
        time.sleep(0.5)

    first = make_durable_messaging(visibility_timeout=lease, poll_interval=0.05)
    first.subscribe(topic, first_handler)
    for n in range(3):
        first.publish(topic, "k", str(n).encode())
    first.start()
    assert entered.wait(TIMEOUT)
    first.stop(timeout=5)  # acknowledges the running delivery, claims nothing more
    stopped = time.monotonic()
    rest = Recorder()
    second = make_durable_messaging(visibility_timeout=lease, poll_interval=0.05)
    second.subscribe(topic, rest)
    second.start()

    seen = rest.wait_for(2, timeout=TIMEOUT)
    assert [s.message.payload for s in seen] == [b"1", b"2"]
    assert seen[0].started - stopped < lease / 3, "the next consumer waited for a lease to expire"
