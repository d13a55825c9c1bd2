"""A handler that records its deliveries, for the tests that run in this process."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

from stovepipe.messaging import Message


@dataclasses.dataclass(frozen=True)
class Seen:
    """One delivery: the message, and when its handler started and ended (monotonic)."""

    message: Message
    started: float
    ended: float


class Recorder:
    """Records each delivery, then runs ``behaviour`` (raise to fail the delivery)."""

    def __init__(
        self, behaviour: Callable[[Message], None] = lambda message: None, pause: float = 0.0
    ) -> None:
        self._behaviour = behaviour
        self._pause = pause
        self._condition = threading.Condition()
        self.seen: list[Seen] = []

    def __call__(self, message: Message) -> None:
        started = time.monotonic()
        try:
            if self._pause:
                time.sleep(self._pause)
            self._behaviour(message)
        finally:
            with self._condition:
                self.seen.append(Seen(message, started, time.monotonic()))
                self._condition.notify_all()

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Seen]:
        """Wait until ``count`` deliveries were seen; fail if they were not in time."""
        with self._condition:
            if not self._condition.wait_for(lambda: len(self.seen) >= count, timeout):
                raise AssertionError(f"saw {len(self.seen)} of {count} deliveries: {self.seen}")
            return list(self.seen)


def payloads(seen: list[Seen], key: str | None = None) -> list[bytes]:
    """The payloads delivered, in handler start order, optionally of one key."""
    ordered = sorted(seen, key=lambda s: s.started)
    return [s.message.payload for s in ordered if key is None or s.message.key == key]
