"""Shutdown of an in-process server: what it promises to finish before it exits."""

from __future__ import annotations

import time

from stovepipe.messaging import Message
from stovepipe.testing import StartServer

TIMEOUT = 10.0


def test_server_stop_drains_the_in_process_messaging_queue_within_the_grace_period(
    start_server: StartServer,
) -> None:
    running = start_server({})
    queue = running.server.messaging
    delivered: list[bytes] = []

    def handle(message: Message) -> None:
        time.sleep(0.01)  # slower than publishing: most messages are still queued at stop
        delivered.append(message.payload)

    queue.subscribe("slow", handle)
    payloads = [str(n).encode() for n in range(30)]
    for payload in payloads:
        queue.publish("slow", "one key", payload)
    assert running.server.stop(grace=TIMEOUT)
    assert delivered == payloads
