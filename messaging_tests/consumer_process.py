"""A consumer (and optionally publisher) process that the durability tests start and kill.

    python -m stovepipe.conformance.messaging.consumer_process \\
        '{"url": ..., "topic": ..., "record": PATH, "handler": "hang" | "sleep",
          "sleep": SECONDS, "publish": [[KEY, PAYLOAD], ...]}'

It publishes the given messages, then consumes ``topic``, appending one JSON line per event to
``record``: ``published``, ``ready``, and ``start``/``end`` around each delivery (``key``,
``payload``, ``attempt``, ``pid``, ``t`` on the system-wide monotonic clock). A ``hang``
handler never returns, as a process that dies before it acknowledges. SIGTERM stops the queue
gracefully (running deliveries finish) and exits 0.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

from stovepipe.messaging import Message
from stovepipe.messaging.registry import open_messaging

_lock = threading.Lock()


def record(path: str, event: str, **fields: Any) -> None:
    """Append one event line; O_APPEND keeps lines of several processes whole."""
    line = json.dumps({"event": event, "pid": os.getpid(), "t": time.monotonic(), **fields})
    with _lock, open(path, "a", encoding="utf-8") as file:
        file.write(line + "\n")


def main(arguments: dict[str, Any]) -> int:
    path: str = arguments["record"]
    topic: str = arguments["topic"]
    pause = float(arguments.get("sleep", 0.0))
    hang = arguments.get("handler") == "hang"
    stop_requested = threading.Event()

    def handle(message: Message) -> None:
        fields = {
            "key": message.key,
            "payload": message.payload.decode(),
            "attempt": message.attempt,
        }
        record(path, "start", **fields)
        if hang:
            threading.Event().wait()
        time.sleep(pause)
        record(path, "end", **fields)

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    queue = open_messaging(arguments["url"])
    for key, payload in arguments.get("publish", []):
        queue.publish(topic, key, payload.encode())
    record(path, "published")
    if arguments.get("consume", True):
        queue.subscribe(topic, handle)
        queue.start()
    record(path, "ready")
    stop_requested.wait()
    queue.stop(timeout=10)
    record(path, "stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
