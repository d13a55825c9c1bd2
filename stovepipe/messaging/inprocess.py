"""A messaging queue inside one process, for the embedded default deployment.

Messages live in memory: delivery is at least once for as long as the process runs;
:meth:`InProcessMessaging.stop` delivers what is queued within its timeout, and what is
still queued after that is lost. That is safe for the ``process`` topic because
ingest republishes a request for as long as it is ``accepted``.

Each ``(topic, key)`` is a partition: a FIFO delivered one message at a time by a pool of
worker threads, so one key's messages are handled in publish order while different keys
proceed in parallel. A failed delivery is retried after an exponential backoff during which
its partition waits (later messages of that key stay behind it); after ``max_attempts``
deliveries, or at once on :class:`PermanentFailure`, the message moves to the dead-letter
topic with its failure reason, and the partition moves on. Each dead-letter topic keeps its
newest ``max_dead_letters`` (default 1000) letters; older ones are dropped and counted.
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import itertools
import logging
import threading
import time
from typing import Final

from stovepipe.messaging.contract import (
    Handler,
    Hold,
    Message,
    PermanentFailure,
    dead_letter_topic,
)
from stovepipe.storage.contract import Capability

logger = logging.getLogger(__name__)

_Partition = tuple[str, str]
"""``(topic, key)``."""

_NEW: Final = "new"
_RUNNING: Final = "running"
_STOPPED: Final = "stopped"

DEFAULT_MAX_DEAD_LETTERS: Final = 1000
"""Dead letters kept per topic: memory stays bounded however long a poison stream runs."""


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that failed for good: its last delivery and why it failed."""

    message: Message
    reason: str


@dataclasses.dataclass(slots=True)
class _Pending:
    payload: bytes
    attempt: int = 1


class InProcessMessaging:
    """Delivers published messages to subscribed handlers on ``workers`` threads.

    ``max_attempts`` bounds the deliveries of one message; the n-th retry waits
    ``backoff_seconds * 2**(n-1)``, at most ``max_backoff_seconds``. Messages published
    before :meth:`start`, or to a topic nobody subscribed to yet, wait until they can be
    delivered. Each topic keeps its newest ``max_dead_letters`` dead letters; older ones are
    dropped and counted (:meth:`dead_letters_dropped`). Thread-safe.
    """

    # Neither durable nor shared: its messages live and die with this object, in one process.
    capabilities: frozenset[Capability] = frozenset()

    def __init__(
        self,
        *,
        max_attempts: int = 5,
        backoff_seconds: float = 0.1,
        max_backoff_seconds: float = 30.0,
        workers: int = 4,
        max_dead_letters: int = DEFAULT_MAX_DEAD_LETTERS,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {max_attempts}")
        if backoff_seconds < 0 or max_backoff_seconds < 0:
            raise ValueError("backoff must not be negative")
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        if max_dead_letters < 1:
            raise ValueError(f"max_dead_letters must be at least 1, not {max_dead_letters}")
        self.max_dead_letters = max_dead_letters
        self._max_attempts = max_attempts
        self._backoff_seconds = backoff_seconds
        self._max_backoff_seconds = max_backoff_seconds
        self._worker_count = workers
        self._condition = threading.Condition()
        self._state = _NEW
        self._handlers: dict[str, Handler] = {}
        self._partitions: dict[_Partition, collections.deque[_Pending]] = {}
        # A partition is "scheduled" while it is ready, in flight or backing off; only
        # unscheduled partitions are put on the ready queue, so one key never runs twice.
        self._scheduled: set[_Partition] = set()
        self._ready: collections.deque[_Partition] = collections.deque()
        self._backing_off: list[tuple[float, int, _Partition]] = []
        self._sequence = itertools.count()
        self._in_flight = 0
        self._dead_letters: dict[str, collections.deque[DeadLetter]] = collections.defaultdict(
            lambda: collections.deque(maxlen=max_dead_letters)
        )
        self._dead_letters_dropped: collections.Counter[str] = collections.Counter()
        self._threads: list[threading.Thread] = []

    def publish(self, topic: str, key: str, payload: bytes) -> None:
        """Queue ``payload`` on ``topic`` behind the earlier messages of ``key``.

        Raises ``RuntimeError`` once the queue is stopped: the message would never be
        delivered.
        """
        if not isinstance(topic, str) or not isinstance(key, str):
            raise TypeError("topic and key must be str")
        if not isinstance(payload, bytes):
            raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
        partition = (topic, key)
        with self._condition:
            if self._state == _STOPPED:
                raise RuntimeError("the message queue is stopped")
            self._partitions.setdefault(partition, collections.deque()).append(_Pending(payload))
            self._schedule(partition)

    def subscribe(self, topic: str, handler: Handler) -> None:
        """Deliver ``topic``'s messages, earlier ones included, to ``handler``.

        Raises ``ValueError`` if the topic already has a handler.
        """
        with self._condition:
            if topic in self._handlers:
                raise ValueError(f"topic {topic!r} already has a handler")
            self._handlers[topic] = handler
            for partition in self._partitions:
                if partition[0] == topic:
                    self._schedule(partition)

    def start(self) -> None:
        """Start the worker threads. Raises ``RuntimeError`` if started before."""
        with self._condition:
            if self._state != _NEW:
                raise RuntimeError(f"the message queue is {self._state}; it starts only once")
            self._state = _RUNNING
            self._threads = [
                threading.Thread(target=self._work, name=f"messaging-{n}", daemon=True)
                for n in range(self._worker_count)
            ]
            for thread in self._threads:
                thread.start()
            self._condition.notify_all()

    def stop(self, timeout: float | None = None) -> None:
        """Drain, then stop: within ``timeout`` seconds in all.

        While the budget lasts, queued messages are delivered and failed ones retried after
        their backoff, as when running, until the queue is idle (see :meth:`wait_until_idle`).
        Then delivery stops, in-flight handlers get what is left of the budget, and what is
        still undelivered is lost (logged). Publishes are refused from then on. Idempotent.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            if self._state == _RUNNING:
                self._condition.wait_for(self._idle, timeout)
            self._state = _STOPPED
            self._condition.notify_all()
            threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        with self._condition:
            if self._in_flight:
                logger.warning("stopped with %d deliveries still running", self._in_flight)
            undelivered = sum(len(pending) for pending in self._partitions.values())
            if undelivered:
                logger.warning("stopped with %d messages undelivered", undelivered)

    def wait_until_idle(self, timeout: float | None = None) -> bool:
        """Wait until every deliverable message is acknowledged or dead-lettered.

        Messages of topics without a handler do not count. Returns whether the queue became
        idle within ``timeout`` seconds.
        """
        with self._condition:
            return self._condition.wait_for(self._idle, timeout)

    def dead_letters(self, topic: str) -> list[DeadLetter]:
        """The newest ``max_dead_letters`` messages of ``topic`` that failed for good, oldest
        first.

        ``topic`` is the original topic; the letters are kept under
        ``dead_letter_topic(topic)``.
        """
        with self._condition:
            return list(self._dead_letters.get(dead_letter_topic(topic), ()))

    def dead_letters_dropped(self, topic: str) -> int:
        """How many dead letters of ``topic`` were dropped to keep the newest
        ``max_dead_letters``."""
        with self._condition:
            return self._dead_letters_dropped[dead_letter_topic(topic)]

    def _idle(self) -> bool:
        return self._in_flight == 0 and not any(
            partition[0] in self._handlers for partition in self._partitions
        )

    def _schedule(self, partition: _Partition) -> None:
        """Put an idle, non-empty, handled partition on the ready queue. Hold the lock."""
        if (
            partition not in self._scheduled
            and partition[0] in self._handlers
            and self._partitions.get(partition)
        ):
            self._scheduled.add(partition)
            self._ready.append(partition)
            # notify_all: idle waiters share the condition, and must not absorb the wake-up.
            self._condition.notify_all()

    def _next_delivery(self) -> tuple[_Partition, Message, Handler] | None:
        """Block until a partition is ready; ``None`` once stopped. Hold the lock."""
        while self._state == _RUNNING:
            now = time.monotonic()
            while self._backing_off and self._backing_off[0][0] <= now:
                _, _, partition = heapq.heappop(self._backing_off)
                self._ready.append(partition)
            if self._ready:
                partition = self._ready.popleft()
                pending = self._partitions[partition][0]
                self._in_flight += 1
                message = Message(partition[0], partition[1], pending.payload, pending.attempt)
                return partition, message, self._handlers[partition[0]]
            wait = self._backing_off[0][0] - now if self._backing_off else None
            self._condition.wait(wait)
        return None

    def _work(self) -> None:
        while True:
            with self._condition:
                delivery = self._next_delivery()
            if delivery is None:
                return
            partition, message, handler = delivery
            failure: str | None = None
            permanent = False
            hold: float | None = None
            try:
                handler(message)
            except Hold as held:
                hold = held.delay
            except PermanentFailure as error:
                failure, permanent = f"{type(error).__name__}: {error}", True
            # BaseException too: a handler's SystemExit must not kill the worker and strand
            # its key with the delivery never settled.
            except BaseException as error:
                failure = f"{type(error).__name__}: {error}"
                if message.attempt < self._max_attempts:
                    logger.warning(
                        "delivery %d of a %r message for key %r failed, will retry: %s",
                        message.attempt,
                        message.topic,
                        message.key,
                        failure,
                    )
                else:
                    permanent = True
            with self._condition:
                self._in_flight -= 1
                if hold is not None:
                    self._back_off(partition, hold)
                else:
                    self._settle(partition, message, failure, permanent)
                self._condition.notify_all()

    def _back_off(self, partition: _Partition, delay: float) -> None:
        """Make the head of ``partition`` deliverable again in ``delay`` seconds. Hold the lock."""
        due = time.monotonic() + delay
        heapq.heappush(self._backing_off, (due, next(self._sequence), partition))

    def _settle(
        self, partition: _Partition, message: Message, failure: str | None, permanent: bool
    ) -> None:
        """Ack, dead-letter or back off the head of ``partition``. Hold the lock."""
        pending = self._partitions[partition]
        if failure is not None and not permanent:
            pending[0].attempt += 1
            delay = min(
                self._backoff_seconds * 2 ** (message.attempt - 1), self._max_backoff_seconds
            )
            self._back_off(partition, delay)
            return
        pending.popleft()
        if failure is not None:
            logger.error(
                "dead-lettering a %r message for key %r after %d deliveries: %s",
                message.topic,
                message.key,
                message.attempt,
                failure,
            )
            letters = self._dead_letters[dead_letter_topic(message.topic)]
            if len(letters) == letters.maxlen:
                self._dead_letters_dropped[dead_letter_topic(message.topic)] += 1
            letters.append(DeadLetter(message, failure))  # a full deque drops its oldest
            dead_letter_partition = (dead_letter_topic(message.topic), message.key)
            if dead_letter_partition[0] in self._handlers:
                self._partitions.setdefault(dead_letter_partition, collections.deque()).append(
                    _Pending(message.payload)
                )
                self._schedule(dead_letter_partition)
        self._scheduled.discard(partition)
        if pending:
            self._schedule(partition)
        else:
            del self._partitions[partition]
