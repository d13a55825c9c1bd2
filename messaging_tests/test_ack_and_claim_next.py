"""Acknowledging a delivery and leasing its key's next message in one call
(``Broker.ack_and_claim_next``): the rules every queue keeps, whether its engine combines the
two (SQL) or only acknowledges (memory, Redis Streams)."""

from __future__ import annotations

import threading
import time

from stovepipe.messaging import Message
from stovepipe.messaging.brokered import Broker, BrokeredMessaging, Delivery
from stovepipe.messaging.registry import InspectableMessaging

from .conftest import MessagingFactory
from .recorder import Recorder

TIMEOUT = 20.0


def broker_of(queue: InspectableMessaging) -> Broker:
    assert isinstance(queue, BrokeredMessaging)
    return queue.broker


def claim_within(broker: Broker, topic: str, timeout: float = TIMEOUT) -> Delivery:
    """The next delivery of ``topic``, failing if there is none in time."""
    deadline = time.monotonic() + timeout
    while (delivery := broker.claim([topic])) is None:
        assert time.monotonic() < deadline, f"nothing to claim on {topic!r}"
        time.sleep(0.01)
    return delivery


def test_ack_and_claim_next_hands_out_each_keys_messages_in_order_one_at_a_time_to_racing_threads(
    make_messaging: MessagingFactory, topic: str
) -> None:
    keys, per_key, threads = 3, 12, 4
    queue = make_messaging()  # not started: the threads below are its only consumers
    broker = broker_of(queue)
    for n in range(per_key):
        for k in range(keys):
            queue.publish(topic, f"k{k}", f"{n:03}".encode())
    lock = threading.Lock()
    in_hand: dict[str, str] = {}  # key -> the thread holding a delivery of it
    handled: dict[str, list[Message]] = {f"k{k}": [] for k in range(keys)}
    overlaps: list[str] = []
    errors: list[BaseException] = []
    deadline = time.monotonic() + TIMEOUT

    def take(delivery: Delivery) -> None:
        key = delivery.message.key
        with lock:
            if key in in_hand:
                overlaps.append(f"{key}: {in_hand[key]} and {threading.current_thread().name}")
            in_hand[key] = threading.current_thread().name
            handled[key].append(delivery.message)
        time.sleep(0.002)  # a handler's work: racing claims meet the key leased
        with lock:
            in_hand.pop(key, None)

    def consume() -> None:
        try:
            while time.monotonic() < deadline:
                with lock:
                    if sum(map(len, handled.values())) >= keys * per_key:
                        return
                delivery = broker.claim([topic])
                if delivery is None:
                    time.sleep(0.005)
                    continue
                # The chain: every message the combined call leases is handled by this thread.
                while delivery is not None:
                    take(delivery)
                    delivery = broker.ack_and_claim_next(delivery)
        except BaseException as error:
            errors.append(error)

    workers = [threading.Thread(target=consume, name=f"consumer-{n}") for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(TIMEOUT + 5)
    assert not any(worker.is_alive() for worker in workers), "a consumer thread hung"
    assert errors == []
    assert overlaps == [], "two deliveries of one key were in hand at once"
    for key, messages in handled.items():
        assert [m.payload for m in messages] == [f"{n:03}".encode() for n in range(per_key)], key
        assert [m.attempt for m in messages] == [1] * per_key, f"{key}: a delivery not counted once"
    assert broker.backlog(topic) == 0


def test_ack_and_claim_next_takes_no_message_of_another_key_and_frees_the_key(
    make_messaging: MessagingFactory, topic: str
) -> None:
    queue = make_messaging()
    broker = broker_of(queue)
    published = {"a": [b"a1", b"a2"], "b": [b"b1"]}
    for payload in (b"a1", b"b1", b"a2"):
        queue.publish(topic, payload[:1].decode(), payload)
    first = claim_within(broker, topic)
    key = first.message.key
    assert first.message.payload == published[key][0]

    handled = [first.message.payload]
    following = broker.ack_and_claim_next(first)
    while following is not None:  # the engine combines: only the key's next messages
        assert following.message.key == key, "a message of another key was taken"
        assert following.message.attempt == 1
        handled.append(following.message.payload)
        following = broker.ack_and_claim_next(following)
    assert handled == published[key][: len(handled)], "the key's messages out of order"
    # The key is free (as after a plain ack): every message left is claimable, once each.
    remaining: list[tuple[bytes, int]] = []
    deadline = time.monotonic() + TIMEOUT
    while len(handled) + len(remaining) < 3 and time.monotonic() < deadline:
        delivery = broker.claim([topic])
        if delivery is None:
            time.sleep(0.01)
            continue
        remaining.append((delivery.message.payload, delivery.message.attempt))
        broker.ack(delivery)
    assert sorted(remaining) == sorted(
        (payload, 1) for payload in (b"a1", b"b1", b"a2") if payload not in handled
    )
    assert broker.backlog(topic) == 0


def test_graceful_stop_hands_a_chained_delivery_back_uncounted(
    make_durable_messaging: MessagingFactory, topic: str
) -> None:
    entered, release = threading.Event(), threading.Event()

    def first_handler(message: Message) -> None:
        if message.payload == b"0":
            entered.set()
            assert release.wait(TIMEOUT), "never released"

    first = make_durable_messaging(workers=1, poll_interval=0.05)
    first.subscribe(topic, first_handler)
    for n in range(2):
        first.publish(topic, "k", str(n).encode())
    first.start()
    assert entered.wait(TIMEOUT), "the first message was not delivered"
    stopper = threading.Thread(target=first.stop, kwargs={"timeout": TIMEOUT})
    stopper.start()
    # The stop has begun (it waits for the running delivery), then the handler returns:
    # its acknowledgement may lease message 1, which the stopping worker must hand back. A
    # stopping queue refuses publishes, which shows the stop has begun (on another topic,
    # so that this one keeps its two messages).
    deadline = time.monotonic() + TIMEOUT
    while True:
        assert time.monotonic() < deadline, "the stop never began"
        try:
            first.publish(f"{topic}-probe", "k", b"probe")
        except RuntimeError:
            break
        time.sleep(0.01)
    release.set()
    stopper.join(TIMEOUT + 5)
    assert not stopper.is_alive(), "stop hung"

    rest = Recorder()
    second = make_durable_messaging(poll_interval=0.05)
    second.subscribe(topic, rest)
    second.start()
    (seen,) = rest.wait_for(1, timeout=TIMEOUT)
    assert (seen.message.payload, seen.message.attempt) == (b"1", 1)
    time.sleep(0.3)
    assert len(rest.seen) == 1, "a message was delivered again"
