"""A messaging queue inside one process, for the embedded default deployment.

It is the shared consumer engine (:class:`~stovepipe.messaging.brokered.BrokeredMessaging`:
the same retries, transient-fault handling, dead letters and metrics as the durable queues)
over :class:`MemoryBroker`, a broker in this process's memory. Delivery is at least once for as
long as the process runs: :meth:`InProcessMessaging.stop` delivers what is queued within its
timeout, and what is still queued after that is lost. That is safe for the ``process`` topic
because ingest republishes a request for as long as it is ``accepted``.

Each ``(topic, key)`` is a partition: one key's messages are handed out one at a time in
publish order, while a failed head backs off its key waits; different keys proceed in
parallel. Each dead-letter topic keeps its newest ``max_dead_letters`` (default 1000) letters;
older ones are dropped and counted.
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Final

from stovepipe.messaging.brokered import (
    DEFAULT_BACKOFF_SECONDS,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_BACKOFF_SECONDS,
    DEFAULT_TRANSIENT_RETRY_SECONDS,
    DEFAULT_WORKERS,
    BrokeredMessaging,
    Delivery,
)
from stovepipe.messaging.contract import DeadLetter as DeadLetter
from stovepipe.messaging.contract import Message, dead_letter_topic
from stovepipe.messaging.metrics import MessagingMetrics
from stovepipe.storage.contract import Capability

logger = logging.getLogger(__name__)

_Partition = tuple[str, str]
"""``(topic, key)``."""

DEFAULT_MAX_DEAD_LETTERS: Final = 1000
"""Dead letters kept per topic: memory stays bounded however long a poison stream runs."""

# Nothing to poll in memory: a publish or a settlement here wakes the workers, and a backoff
# that ends wakes them through MemoryBroker.seconds_until_due. This only bounds a missed wake-up.
_POLL_INTERVAL: Final = 1.0


@dataclasses.dataclass(slots=True)
class _Entry:
    payload: bytes
    message_id: str
    attempt: int = 0  # deliveries so far


class MemoryBroker:
    """A :class:`~stovepipe.messaging.brokered.Broker` in memory, for one process.

    Leases never run out (a consumer dying dies with the process), so :meth:`renew` does
    nothing. Thread-safe.
    """

    def __init__(self, max_dead_letters: int = DEFAULT_MAX_DEAD_LETTERS) -> None:
        if max_dead_letters < 1:
            raise ValueError(f"max_dead_letters must be at least 1, not {max_dead_letters}")
        self.max_dead_letters = max_dead_letters
        self._condition = threading.Condition()
        self._partitions: dict[_Partition, collections.deque[_Entry]] = {}
        # Partitions whose head may be claimed now, per topic; a partition is in at most one
        # of ready, backing off or leased, so one key never has two deliveries.
        self._ready: dict[str, collections.deque[_Partition]] = collections.defaultdict(
            collections.deque
        )
        self._backing_off: list[tuple[float, int, _Partition]] = []
        self._leased: set[_Partition] = set()
        self._sequence = itertools.count()
        self._pending_ids: dict[str, set[str]] = collections.defaultdict(set)
        self._dead_letters: dict[str, collections.deque[DeadLetter]] = collections.defaultdict(
            lambda: collections.deque(maxlen=max_dead_letters)
        )
        self._dropped: collections.Counter[str] = collections.Counter()
        self._rotation = itertools.count()

    def publish(self, topic: str, key: str, payload: bytes, message_id: str) -> None:
        """Queue the message behind ``key``'s, unless ``message_id`` is pending on ``topic``."""
        with self._condition:
            ids = self._pending_ids[topic]
            if message_id in ids:
                return
            ids.add(message_id)
            partition = (topic, key)
            entries = self._partitions.setdefault(partition, collections.deque())
            entries.append(_Entry(payload, message_id))
            if len(entries) == 1:
                self._ready[topic].append(partition)

    def claim(self, topics: Sequence[str]) -> Delivery | None:
        """Lease the head of the next ready partition of ``topics`` (taken in turn)."""
        with self._condition:
            self._release_due()
            if not topics:
                return None
            start = next(self._rotation) % len(topics)
            for topic in [*topics[start:], *topics[:start]]:
                ready = self._ready.get(topic)
                if ready:
                    partition = ready.popleft()
                    self._leased.add(partition)
                    head = self._partitions[partition][0]
                    head.attempt += 1
                    message = Message(
                        topic, partition[1], head.payload, head.attempt, head.message_id
                    )
                    return Delivery(message, partition)
            return None

    def seconds_until_due(self) -> float | None:
        """Seconds until the next backoff ends, ``None`` if nothing backs off."""
        with self._condition:
            if not self._backing_off:
                return None
            return max(0.0, self._backing_off[0][0] - time.monotonic())

    def ack(self, delivery: Delivery) -> None:
        """Remove the head of the delivery's partition."""
        with self._condition:
            self._pop(delivery)

    def ack_and_claim_next(self, delivery: Delivery) -> None:
        """:meth:`ack`, and ``None``: in memory a claim costs no round trip to save."""
        self.ack(delivery)

    def retry(self, delivery: Delivery, delay: float, reason: str) -> None:
        """Back the partition off for ``delay`` seconds; its head goes first after."""
        with self._condition:
            partition = self._partition(delivery)
            self._leased.discard(partition)
            due = time.monotonic() + delay
            heapq.heappush(self._backing_off, (due, next(self._sequence), partition))

    def hold(self, delivery: Delivery, delay: float) -> None:
        """Like :meth:`retry`, taking back the delivery the claim counted."""
        with self._condition:
            self._partitions[self._partition(delivery)][0].attempt -= 1
        self.retry(delivery, delay, "")

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move the head to the topic's dead letters (the newest ``max_dead_letters`` kept)."""
        with self._condition:
            self._pop(delivery)
            topic = dead_letter_topic(delivery.message.topic)
            letters = self._dead_letters[topic]
            if len(letters) == letters.maxlen:
                self._dropped[topic] += 1
            letters.append(DeadLetter(delivery.message, reason))  # a full deque drops its oldest

    def renew(self) -> None:
        """Nothing to renew: leases in memory never run out."""

    def backlog(self, topic: str) -> int:
        """Messages of ``topic`` not yet acknowledged or dead-lettered."""
        with self._condition:
            return len(self._pending_ids.get(topic, ()))

    def dead_letters(self, topic: str) -> list[DeadLetter]:
        """The newest ``max_dead_letters`` dead letters of ``topic``, oldest first."""
        with self._condition:
            return list(self._dead_letters.get(dead_letter_topic(topic), ()))

    def dead_letters_dropped(self, topic: str) -> int:
        """How many dead letters of ``topic`` were dropped to keep the newest."""
        with self._condition:
            return self._dropped[dead_letter_topic(topic)]

    def settled(self, topics: Sequence[str]) -> bool:
        """Whether ``topics`` have no message left: queued, backing off or in delivery."""
        with self._condition:
            return not any(self._pending_ids.get(topic) for topic in topics)

    def undelivered(self) -> int:
        """Messages still held, of every topic."""
        with self._condition:
            return sum(len(entries) for entries in self._partitions.values())

    def close(self) -> None:
        """Nothing to close; what is still held is lost with the process."""

    def _partition(self, delivery: Delivery) -> _Partition:
        partition = delivery.receipt
        assert isinstance(partition, tuple)
        return partition

    def _pop(self, delivery: Delivery) -> None:
        """Remove the leased head; the partition is ready again if it holds more. Hold the
        lock."""
        partition = self._partition(delivery)
        self._leased.discard(partition)
        entries = self._partitions[partition]
        settled = entries.popleft()
        ids = self._pending_ids[partition[0]]
        ids.discard(settled.message_id)
        if not ids:
            del self._pending_ids[partition[0]]
        if entries:
            self._ready[partition[0]].append(partition)
        else:
            del self._partitions[partition]
        self._condition.notify_all()

    def _release_due(self) -> None:
        now = time.monotonic()
        while self._backing_off and self._backing_off[0][0] <= now:
            _, _, partition = heapq.heappop(self._backing_off)
            self._ready[partition[0]].append(partition)

    def wait_settled(self, topics: Sequence[str], timeout: float | None) -> bool:
        """Wait until :meth:`settled`; whether it was within ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            while any(self._pending_ids.get(topic) for topic in topics):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                # Bounded wait: a settlement notifies, but a topic subscribed meanwhile may
                # change what counts.
                self._condition.wait(0.05 if left is None else min(left, 0.05))
            return True


class InProcessMessaging(BrokeredMessaging):
    """Delivers published messages to subscribed handlers on ``workers`` threads: the shared
    consumer engine over a :class:`MemoryBroker`.

    ``max_attempts``, ``backoff_seconds``, ``max_backoff_seconds`` and
    ``transient_retry_seconds`` are the engine's (see
    :class:`~stovepipe.messaging.brokered.BrokeredMessaging`). Messages published before
    :meth:`start`, or to a topic nobody subscribed to yet, wait until they can be delivered.
    Each topic keeps its newest ``max_dead_letters`` dead letters; older ones are dropped and
    counted (:meth:`dead_letters_dropped`). Thread-safe.
    """

    # Neither durable nor shared: its messages live and die with this object, in one process.
    capabilities: frozenset[Capability] = frozenset()

    def __init__(
        self,
        *,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        backoff_seconds: float = DEFAULT_BACKOFF_SECONDS,
        max_backoff_seconds: float = DEFAULT_MAX_BACKOFF_SECONDS,
        workers: int = DEFAULT_WORKERS,
        max_dead_letters: int = DEFAULT_MAX_DEAD_LETTERS,
        metrics: MessagingMetrics | None = None,
        transient_retry_seconds: float = DEFAULT_TRANSIENT_RETRY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.memory = MemoryBroker(max_dead_letters)
        super().__init__(
            self.memory,
            max_attempts=max_attempts,
            backoff_seconds=backoff_seconds,
            max_backoff_seconds=max_backoff_seconds,
            workers=workers,
            poll_interval=_POLL_INTERVAL,
            metrics=metrics,
            transient_retry_seconds=transient_retry_seconds,
            clock=clock,
        )
        self.max_dead_letters = max_dead_letters
        self._began = False

    def start(self) -> None:
        """Start the worker threads. Raises ``RuntimeError`` if started before."""
        super().start()
        self._began = True

    def stop(self, timeout: float | None = None) -> bool:
        """Drain, then stop: within ``timeout`` seconds in all. Returns whether every delivery
        ended in time.

        While the budget lasts, queued messages are delivered and failed ones retried after
        their backoff, as when running, until the queue is idle (see :meth:`wait_until_idle`).
        Then delivery stops, in-flight handlers get what is left of the budget, and what is
        still undelivered is lost (logged). Publishes are refused from then on. Idempotent.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._began:
            self.wait_until_idle(timeout)
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        drained = super().stop(left)
        undelivered = self.memory.undelivered()
        if undelivered:
            logger.warning("stopped with %d messages undelivered", undelivered)
        return drained

    def wait_until_idle(self, timeout: float | None = None) -> bool:
        """Wait until every deliverable message is acknowledged or dead-lettered.

        Messages of topics without a handler do not count. Returns whether the queue became
        idle within ``timeout`` seconds.
        """
        return self.memory.wait_settled(self.subscribed(), timeout)

    def dead_letters_dropped(self, topic: str) -> int:
        """How many dead letters of ``topic`` were dropped to keep the newest
        ``max_dead_letters``."""
        return self.memory.dead_letters_dropped(topic)
