"""Shutdown joins the workers before closing their connections: a stop that gives up waiting
for a stalled delivery never closes the broker (or, in the server, the storage) under it."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from stovepipe.messaging import Message
from stovepipe.messaging.brokered import BrokeredMessaging, Delivery
from stovepipe.messaging.inprocess import DeadLetter, InProcessMessaging

TIMEOUT = 10.0


class OneMessageBroker:
    """Hands out one delivery, then nothing; records whether ``close`` ran while a worker was
    inside the handler (the connections it uses would be closed under it)."""

    def __init__(self, in_handler: threading.Event) -> None:
        self._lock = threading.Lock()
        self._pending = [Delivery(Message("t", "k", b"x", 1, "m"), "receipt")]
        self._in_handler = in_handler
        self.closed = threading.Event()
        self.closed_under_a_worker = False

    def publish(self, topic: str, key: str, payload: bytes, message_id: str) -> None:
        raise AssertionError("not used")

    def claim(self, topics: Sequence[str]) -> Delivery | None:
        with self._lock:
            return self._pending.pop() if self._pending else None

    def ack(self, delivery: Delivery) -> None:
        pass

    def ack_and_claim_next(self, delivery: Delivery) -> None:
        pass

    def retry(self, delivery: Delivery, delay: float, reason: str) -> None:
        pass

    def hold(self, delivery: Delivery, delay: float) -> None:
        pass

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        pass

    def renew(self) -> None:
        pass

    def backlog(self, topic: str) -> int:
        return 0

    def dead_letters(self, topic: str) -> list[DeadLetter]:
        return []

    def close(self) -> None:
        if self._in_handler.is_set():
            self.closed_under_a_worker = True
        self.closed.set()


def test_shutdown_joins_the_workers_before_closing_their_connections() -> None:
    for run in range(20):
        in_handler, release = threading.Event(), threading.Event()
        broker = OneMessageBroker(in_handler)

        def stall(
            message: Message,
            in_handler: threading.Event = in_handler,
            release: threading.Event = release,
        ) -> None:
            in_handler.set()
            try:
                assert release.wait(TIMEOUT), "never released"
            finally:
                in_handler.clear()

        queue = BrokeredMessaging(broker, workers=2, poll_interval=0.01)
        queue.subscribe("t", stall)
        queue.start()
        assert in_handler.wait(TIMEOUT), f"run {run}: the message was not delivered"
        assert queue.stop(timeout=0.05) is False, "a delivery was still running"
        assert not broker.closed.is_set(), f"run {run}: closed under a running delivery"
        release.set()
        assert broker.closed.wait(TIMEOUT), f"run {run}: never closed after the worker ended"
        assert not broker.closed_under_a_worker


def test_a_stop_that_drains_in_time_closes_at_once_and_says_so() -> None:
    broker = OneMessageBroker(threading.Event())
    queue = BrokeredMessaging(broker, poll_interval=0.01)
    done = threading.Event()
    queue.subscribe("t", lambda message: done.set())
    queue.start()
    assert done.wait(TIMEOUT)
    assert queue.stop(timeout=5) is True
    assert broker.closed.is_set()


def test_the_in_process_queue_says_when_a_delivery_outlived_the_stop() -> None:
    queue = InProcessMessaging()
    started, release = threading.Event(), threading.Event()

    def stall(message: Message) -> None:
        started.set()
        release.wait(TIMEOUT)

    queue.subscribe("t", stall)
    queue.start()
    queue.publish("t", "k", b"x")
    assert started.wait(TIMEOUT)
    assert queue.stop(timeout=0.05) is False
    release.set()
