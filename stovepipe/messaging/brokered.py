"""A messaging queue over a durable broker: the consumer loop shared by the SQL and Redis
Streams queues.

A :class:`Broker` stores messages and hands out *deliveries*: a message leased to this
consumer for a visibility timeout, with its delivery count as ``attempt``. The broker keeps
per-key order and one delivery at a time per key, across every process sharing it.
:class:`BrokeredMessaging` runs the handlers on worker threads, renews the leases of
running deliveries on a heartbeat, and settles each delivery: acknowledge, retry after an
exponential backoff, or dead-letter with the reason. A consumer that dies stops renewing, its
lease runs out and the message is delivered again with the next ``attempt``; a delivery whose
``attempt`` is past the maximum (its consumers kept dying) is dead-lettered unhandled.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Final, Protocol

import tenacity

from stovepipe.errors import is_transient
from stovepipe.messaging.contract import (
    DeadLetter,
    Handler,
    Hold,
    Message,
    PermanentFailure,
    checked_message_id,
    dead_letter_topic,
    new_message_id,
)
from stovepipe.messaging.contract import MessagingError as MessagingError
from stovepipe.messaging.contract import MessagingUnavailable as MessagingUnavailable
from stovepipe.messaging.metrics import MessagingMetrics
from stovepipe.storage.contract import Capability

logger = logging.getLogger(__name__)

DEFAULT_MAX_ATTEMPTS: Final = 5
DEFAULT_BACKOFF_SECONDS: Final = 0.1
DEFAULT_MAX_BACKOFF_SECONDS: Final = 30.0
DEFAULT_VISIBILITY_TIMEOUT: Final = 30.0
DEFAULT_WORKERS: Final = 4
DEFAULT_POLL_INTERVAL: Final = 0.1
IDLE_REQUESTS_PER_SECOND: Final = 2.0
"""The most claims per second the workers of an idle consumer send their engine together, once
their poll interval has doubled up to its cap (a publish in this process wakes one at once).
Two, so that an idle server, whose lease heartbeat and backlog gauge add about half a request
a second, stays well under five requests a second to its engines even while its workers are
still backing off after work; the price is the pickup of a message published by another
process, up to ``workers / IDLE_REQUESTS_PER_SECOND`` seconds (2 s with the default 4 workers)
after it is stored, about a quarter of that on average."""
DEFAULT_TRANSIENT_RETRY_SECONDS: Final = 3600.0
"""How long a message whose handler meets transient faults (an engine unreachable) is retried
without counting attempts, and how long a settlement is retried, from the first fault."""
CLAIM_BACKOFF_CAP: Final = 5.0
"""Seconds a worker waits at most between two claims that failed: after a failure it waits
a poll interval, doubled after each further failure up to this, so a broker that refuses
(credentials changed) is not asked thousands of times a minute, and one that comes back is
claimed from again within this many seconds."""
MAX_CHAINED_DELIVERIES: Final = 32
"""Deliveries a worker runs in a row on one key, each leased by the acknowledgement of the
one before (:meth:`Broker.ack_and_claim_next`), before it claims afresh: a key that never
empties does not keep the worker from the other keys and topics."""
WARNING_INTERVAL: Final = 10.0
"""Seconds between two warnings of the same failure; the repeats between are counted."""


class _StopWhenSet(tenacity.stop.stop_base):
    """A tenacity stop condition: stop once ``event`` is set."""

    def __init__(self, event: threading.Event) -> None:
        self._event = event

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return self._event.is_set()


@dataclasses.dataclass(frozen=True, slots=True)
class Delivery:
    """A message leased to this consumer; ``receipt`` is the broker's handle on the lease."""

    message: Message
    receipt: object


class Broker(Protocol):
    """Durable storage of messages with leased, per-key ordered deliveries.

    Every method may raise :class:`MessagingUnavailable` (transient) or
    :class:`MessagingError` (permanent), never a driver's exception. Thread-safe.
    """

    def publish(self, topic: str, key: str, payload: bytes, message_id: str) -> None:
        """Store a message behind the earlier messages of ``(topic, key)``, unless a message
        of ``message_id`` is pending on ``topic`` (stored, not acknowledged or dead-lettered):
        then do nothing. Atomic: of racing publishers of one id, one stores the message."""
        ...

    def claim(self, topics: Sequence[str]) -> Delivery | None:
        """Lease the next deliverable message of ``topics``, or ``None`` if there is none.

        Deliverable: the oldest message of its key, whose key has no delivery leased and is
        not backing off. Each claim counts one more delivery of the message.
        """
        ...

    def ack(self, delivery: Delivery) -> None:
        """Remove the message for good."""
        ...

    def ack_and_claim_next(self, delivery: Delivery) -> Delivery | None:
        """Acknowledge ``delivery`` as :meth:`ack` does and, where the engine can do both in
        one transaction, lease the next deliverable message of the same topic and key in it:
        the key stays leased to this consumer, and the message counts one more delivery, as
        a claim's does. ``None`` if there is none (not one of the key, or backing off): the
        key is then free, as after :meth:`ack`. A broker that cannot combine the two
        acknowledges only and returns ``None``.

        On a failure nothing may be known: the acknowledgement may have happened or not; a
        plain :meth:`ack` of ``delivery`` afterwards is then right either way.
        """
        ...

    def retry(self, delivery: Delivery, delay: float, reason: str) -> None:
        """Give the lease back; the message is deliverable again after ``delay`` seconds."""
        ...

    def hold(self, delivery: Delivery, delay: float) -> None:
        """Like :meth:`retry`, but the delivery does not count: the next one has the same
        ``attempt`` as this one."""
        ...

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move the message to its topic's dead-letter topic with ``reason``."""
        ...

    def renew(self) -> None:
        """Extend the leases this broker holds by one visibility timeout."""
        ...

    def backlog(self, topic: str) -> int:
        """Messages of ``topic`` published and not yet acknowledged or dead-lettered."""
        ...

    def dead_letters(self, topic: str) -> list[DeadLetter]:
        """The dead letters of ``topic`` (the original topic), oldest first."""
        ...

    def close(self) -> None:
        """Give back the leases still held and close the connections. Idempotent."""
        ...


class BrokeredMessaging:
    """A :class:`~stovepipe.messaging.Messaging` whose messages live in a broker.

    ``max_attempts`` bounds the deliveries of one message whose handler fails; the n-th retry
    waits ``backoff_seconds * 2**(n-1)``, at most ``max_backoff_seconds``. A handler failing
    with a transient error (:func:`stovepipe.errors.is_transient`: storage or messaging
    unavailable) is retried with the same capped backoff without counting attempts, for
    ``transient_retry_seconds`` (default an hour, by ``clock``) from the message's first such
    failure; after that its failures count. Broker calls that settle a delivery are retried
    likewise (tenacity). ``workers`` threads each run one delivery at a time; an idle worker
    asks the broker again after ``poll_interval`` seconds, doubling while it finds nothing up to
    ``workers /`` :data:`IDLE_REQUESTS_PER_SECOND` (at once if another worker already waits
    idle), and at once when this process publishes or settles a delivery. Leases are renewed every
    ``renew_interval`` seconds (a third of the broker's visibility timeout). A successful
    delivery is acknowledged with :meth:`Broker.ack_and_claim_next`: the key's next message it
    leases runs next on the same worker, up to :data:`MAX_CHAINED_DELIVERIES` in a row.
    """

    # Messages live in the broker: they outlive this process, and every process reaches them.
    capabilities: frozenset[Capability] = frozenset({Capability.DURABLE, Capability.SHARED})

    def __init__(
        self,
        broker: Broker,
        *,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        backoff_seconds: float = DEFAULT_BACKOFF_SECONDS,
        max_backoff_seconds: float = DEFAULT_MAX_BACKOFF_SECONDS,
        workers: int = DEFAULT_WORKERS,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        renew_interval: float = DEFAULT_VISIBILITY_TIMEOUT / 3,
        metrics: MessagingMetrics | None = None,
        transient_retry_seconds: float = DEFAULT_TRANSIENT_RETRY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {max_attempts}")
        if backoff_seconds < 0 or max_backoff_seconds < 0:
            raise ValueError("backoff must not be negative")
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        if poll_interval <= 0 or renew_interval <= 0:
            raise ValueError("poll_interval and renew_interval must be positive")
        if not transient_retry_seconds >= 0:
            raise ValueError("transient_retry_seconds must not be negative")
        self.broker = broker
        self._max_attempts = max_attempts
        self._backoff_seconds = backoff_seconds
        self._max_backoff_seconds = max_backoff_seconds
        self._worker_count = workers
        self._poll_interval = poll_interval
        self._renew_interval = renew_interval
        self._metrics = metrics if metrics is not None else MessagingMetrics()
        self._transient_retry_seconds = transient_retry_seconds
        self._idle_wait = max(poll_interval, workers / IDLE_REQUESTS_PER_SECOND)
        self._clock = clock
        # (topic, key, message id) -> (first transient failure, transient failures so far)
        self._transient: dict[tuple[str, str, str], tuple[float, int]] = {}
        # Set once stop() gave up waiting: workers stop retrying their broker calls.
        self._abandon = threading.Event()
        self._handlers: dict[str, Handler] = {}
        self._claim_warnings = _RateLimitedWarnings(WARNING_INTERVAL)
        self._condition = threading.Condition()
        self._published = 0  # wakes idle workers when this process publishes
        self._idling = 0  # workers waiting in _idle
        self._started = False
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._heartbeat: threading.Thread | None = None
        self._running = 0  # threads using the broker (workers, heartbeat) not yet ended
        # Set once stop() gave up waiting for a worker: the last worker to end closes the
        # broker.
        self._close_when_done = False
        # Set only once the workers are joined: a delivery draining during a graceful stop
        # keeps its lease renewed until it settles.
        self._heartbeat_stop = threading.Event()

    def publish(
        self, topic: str, key: str, payload: bytes, *, message_id: str | None = None
    ) -> None:
        """Store ``payload`` durably on ``topic`` behind the earlier messages of ``key``,
        unless a message of ``message_id`` is pending on ``topic`` (see the contract).

        Raises ``ValueError`` for an id the contract does not take,
        :class:`MessagingUnavailable` if the broker did not take it, and ``RuntimeError``
        once the queue is stopped.
        """
        if not isinstance(topic, str) or not isinstance(key, str):
            raise TypeError("topic and key must be str")
        if not isinstance(payload, bytes):
            raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
        message_id = checked_message_id(message_id)
        with self._condition:
            if self._stopping:
                raise RuntimeError("the message queue is stopped")
        self.broker.publish(topic, key, payload, message_id)
        self._metrics.published.labels(topic).inc()
        self._wake_one()

    def subscribe(self, topic: str, handler: Handler) -> None:
        """Deliver ``topic``'s messages, earlier ones included, to ``handler``.

        Raises ``ValueError`` if the topic already has a handler.
        """
        with self._condition:
            if topic in self._handlers:
                raise ValueError(f"topic {topic!r} already has a handler")
            self._handlers[topic] = handler
            self._condition.notify_all()

    def start(self) -> None:
        """Start the workers and the lease heartbeat. Raises ``RuntimeError`` if started before."""
        with self._condition:
            if self._started or self._stopping:
                raise RuntimeError("the message queue starts only once")
            self._started = True
            self._threads = [
                threading.Thread(target=self._work, name=f"messaging-{n}", daemon=True)
                for n in range(self._worker_count)
            ]
            self._heartbeat = threading.Thread(
                target=self._beat, name="messaging-heartbeat", daemon=True
            )
        for thread in self._threads:
            thread.start()
        self._heartbeat.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Claim nothing more, wait up to ``timeout`` seconds for running deliveries, then give
        back the leases and close the broker. Idempotent. Returns whether every worker ended.

        A delivery still running when the wait ends is not acknowledged by this process: its
        message is delivered again after the visibility timeout. Its worker still uses the
        broker's connections, so they are closed only when the last such worker ends, never
        under it.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            if self._stopping and not self._threads and self._heartbeat is None:
                return self._running == 0
            self._stopping = True
            self._condition.notify_all()
            threads, self._threads = self._threads, []
            heartbeat, self._heartbeat = self._heartbeat, None
        for thread in threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        self._abandon.set()
        # The leases of deliveries still running lapse: their messages go to other consumers.
        self._heartbeat_stop.set()
        if heartbeat is not None:
            heartbeat.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        with self._condition:
            running = self._running
            # Else the last worker to end closes the broker (see _work).
            self._close_when_done = bool(running)
        if running:
            logger.warning(
                "stopped with %d threads still using the messaging engine (running deliveries "
                "are redelivered); its connections are closed when they end",
                running,
            )
            return False
        self.broker.close()
        return True

    def dead_letters(self, topic: str) -> list[DeadLetter]:
        """The messages of ``topic`` that failed for good, oldest first."""
        return self.broker.dead_letters(topic)

    def backlog(self, topic: str) -> int:
        """Messages of ``topic`` not yet acknowledged or dead-lettered, on every consumer."""
        return self.broker.backlog(topic)

    def _work(self) -> None:
        self._using_broker(self._consume)

    def _using_broker(self, run: Callable[[], None]) -> None:
        """Run a thread's loop, counted as a user of the broker's connections: the last user to
        end after a :meth:`stop` that gave up waiting closes the broker."""
        with self._condition:
            self._running += 1
        try:
            run()
        finally:
            with self._condition:
                self._running -= 1
                last = self._running == 0 and self._close_when_done
            if last:
                self.broker.close()

    def _consume(self) -> None:
        seen = -1
        empty = 0  # claims that found nothing in a row
        backoff = 0.0  # seconds to wait after the last failed claim; 0: it did not fail
        while True:
            with self._condition:
                if self._stopping:
                    return
                topics = list(self._handlers)
                seen = self._published
            delivery = None
            wait = self._poll_interval
            if topics:
                try:
                    delivery = self.broker.claim(topics)
                    backoff = 0.0
                    # Idle: ask less and less often, so that the workers together send at
                    # most IDLE_REQUESTS_PER_SECOND claims; a publish here wakes one at once.
                    empty = 0 if delivery is not None else empty + 1
                    wait = self._idle_backoff(empty)
                except Exception as error:
                    self._metrics.broker_errors.labels("claim").inc()
                    self._claim_warnings.warn(f"claiming a message failed: {error}")
                    backoff = min(max(backoff * 2, self._poll_interval), CLAIM_BACKOFF_CAP)
                    with self._condition:  # a publish does not end it: the broker is failing
                        self._condition.wait_for(lambda: self._stopping, backoff)
                    continue
            if delivery is None:
                self._idle(seen, wait)
                continue
            # Each acknowledgement may lease the key's next message: run it at once, up to
            # MAX_CHAINED_DELIVERIES in a row.
            chained = 1
            while delivery is not None:
                with self._condition:
                    stopping = self._stopping
                if stopping:
                    # stop() began while this claim (or the acknowledgement that leased this
                    # delivery) was on its way: a graceful stop claims nothing more, so the
                    # delivery goes back untouched (not counted) for the next consumer.
                    self._settle("hold", delivery, "the consumer is stopping", 0.0)
                    return
                delivery = self._deliver(delivery, chained < MAX_CHAINED_DELIVERIES)
                chained += 1

    def _idle_backoff(self, empty: int) -> float:
        """Seconds to wait after ``empty`` claims in a row found nothing: the poll interval,
        doubling up to the cap, for the first worker of this process to go idle; the cap at
        once for the others, since that one's claims already cover every topic (so the
        back-off after work costs the engine one worker's claims, not every worker's)."""
        with self._condition:
            others_idle = self._idling > 0
        if others_idle:
            return self._idle_wait
        ramp: float = self._poll_interval * 2 ** max(0, empty - 1)
        return min(ramp, self._idle_wait)

    def _idle(self, seen: int, wait: float) -> None:
        """Wait ``wait`` seconds, or less if stopping, if this process published or settled
        since, or if the broker says a backoff ends sooner."""
        due = getattr(self.broker, "seconds_until_due", None)
        if due is not None:
            sooner = due()
            if sooner is not None:
                wait = min(wait, sooner)
        with self._condition:
            self._idling += 1
            try:
                self._condition.wait_for(lambda: self._stopping or self._published != seen, wait)
            finally:
                self._idling -= 1

    def _wake_one(self) -> None:
        """Wake one idle worker: there may be a message to claim."""
        with self._condition:
            self._published += 1
            self._condition.notify()

    def subscribed(self) -> list[str]:
        """The topics that have a handler."""
        with self._condition:
            return list(self._handlers)

    def _deliver(self, delivery: Delivery, claim_next: bool) -> Delivery | None:
        """Run the handler and settle the delivery; if it succeeded and ``claim_next``, the
        key's next message leased with the acknowledgement (see :meth:`_ack`)."""
        message = delivery.message
        topic = message.topic
        if message.attempt > self._max_attempts:
            # Every earlier delivery ended without a settlement: its consumer died or stalled.
            reason = (
                f"delivered {message.attempt - 1} times without an outcome "
                "(each consumer stopped before acknowledging)"
            )
            self._settle("dead_letter", delivery, reason)
            return None
        handler = self._handlers[topic]
        self._metrics.deliveries.labels(topic).inc()
        started = time.perf_counter()
        try:
            handler(message)
        except Hold as held:
            self._observe(topic, started)
            self._settle("hold", delivery, str(held), held.delay)
        except PermanentFailure as error:
            self._observe(topic, started)
            self._settle("dead_letter", delivery, f"{type(error).__name__}: {error}")
        # BaseException too: a handler's SystemExit must not kill the worker thread and leave
        # its delivery leased (and renewed) forever; the worker settles it and carries on.
        except BaseException as error:
            self._observe(topic, started)
            reason = f"{type(error).__name__}: {error}"
            if is_transient(error) and self._transient_budget_left(message):
                self._settle("hold", delivery, reason, self._transient_delay(message))
                self._metrics.retries.labels(topic).inc()
                return None
            if message.attempt >= self._max_attempts:
                self._settle("dead_letter", delivery, reason)
                return None
            logger.warning(
                "delivery %d of a %r message for key %r failed, will retry: %s",
                message.attempt,
                topic,
                message.key,
                reason,
            )
            self._settle("retry", delivery, reason)
        else:
            self._observe(topic, started)
            if claim_next:
                return self._ack(delivery)
            self._settle("ack", delivery, "")
        return None

    def _ack(self, delivery: Delivery) -> Delivery | None:
        """Acknowledge ``delivery`` and lease its key's next message in the same call
        (:meth:`Broker.ack_and_claim_next`): that message, or ``None``. If that call fails,
        the plain acknowledgement's retrying path (:meth:`_settle`) runs instead: the
        acknowledgement may or may not have happened, and ``ack`` is right either way (a next
        message leased by a call that failed is delivered again once its lease runs out)."""
        with self._condition:
            self._transient.pop(self._identity(delivery.message), None)
        try:
            following = self.broker.ack_and_claim_next(delivery)
        except Exception as error:
            logger.debug(
                "acknowledging a %r message with its key's next failed, acknowledging alone: %s",
                delivery.message.topic,
                error,
            )
            self._settle("ack", delivery, "")
            return None
        if following is None:
            self._wake_one()  # the key is free: its next message may be deliverable soon
        return following

    def _transient_budget_left(self, message: Message) -> bool:
        """Whether ``message`` failed transiently for less than ``transient_retry_seconds``
        (counted from its first transient failure here); records this failure."""
        now = self._clock()
        with self._condition:
            first, count = self._transient.get(self._identity(message), (now, 0))
            if now - first >= self._transient_retry_seconds:
                return False
            self._transient[self._identity(message)] = (first, count + 1)
            if count == 0 or count & (count - 1) == 0:
                logger.warning(
                    "a %r message for key %r met a transient fault %d times in %.0f s, "
                    "retrying without counting attempts",
                    message.topic,
                    message.key,
                    count + 1,
                    now - first,
                )
        return True

    def _transient_delay(self, message: Message) -> float:
        """The capped exponential backoff after the n-th transient failure of ``message``."""
        with self._condition:
            count: int = self._transient[self._identity(message)][1]
        delay: float = self._backoff_seconds * 2.0 ** (count - 1)
        return min(delay, self._max_backoff_seconds)

    @staticmethod
    def _identity(message: Message) -> tuple[str, str, str]:
        return message.topic, message.key, message.message_id

    def _observe(self, topic: str, started: float) -> None:
        self._metrics.handling_seconds.labels(topic).observe(time.perf_counter() - started)

    def _settle(self, outcome: str, delivery: Delivery, reason: str, delay: float = 0.0) -> None:
        """Ack, hold, retry or dead-letter. A transient broker failure is retried with capped
        exponential backoff (an ack across an engine restart is not lost), for up to
        ``transient_retry_seconds`` or until :meth:`stop` gives up on this worker; any other,
        or one past that, leaves the lease to run out."""
        if outcome in ("ack", "dead_letter"):
            with self._condition:
                self._transient.pop(self._identity(delivery.message), None)
        try:
            try:
                self._settle_once(outcome, delivery, reason, delay)
            except Exception as error:
                if not is_transient(error):
                    raise
                self._settle_retrying(outcome, delivery, reason, delay)
        except Exception as error:
            self._metrics.broker_errors.labels(outcome).inc()
            logger.warning(
                "could not %s a %r message (it will be delivered again): %s",
                outcome.replace("_", "-"),
                delivery.message.topic,
                error,
            )
        self._wake_one()

    def _settle_retrying(self, outcome: str, delivery: Delivery, reason: str, delay: float) -> None:
        """Retry a settlement that met a transient fault (the first try's), with capped
        exponential backoff."""
        for attempt in tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_transient),
            wait=tenacity.wait_exponential(
                multiplier=self._backoff_seconds or 0.01, max=self._max_backoff_seconds
            ),
            stop=tenacity.stop_any(
                tenacity.stop_after_delay(self._transient_retry_seconds),
                _StopWhenSet(self._abandon),
            ),
            sleep=self._pause,
            reraise=True,
        ):
            with attempt:
                self._settle_once(outcome, delivery, reason, delay)

    def _pause(self, seconds: float) -> None:
        """Sleep between retries of a broker call; cut short once :meth:`stop` gives up."""
        self._abandon.wait(seconds)

    def _settle_once(self, outcome: str, delivery: Delivery, reason: str, delay: float) -> None:
        message = delivery.message
        if outcome == "ack":
            self.broker.ack(delivery)
        elif outcome == "hold":
            self.broker.hold(delivery, delay)
        elif outcome == "retry":
            delay = min(
                self._backoff_seconds * 2 ** (message.attempt - 1), self._max_backoff_seconds
            )
            self.broker.retry(delivery, delay, reason)
            self._metrics.retries.labels(message.topic).inc()
        else:
            logger.error(
                "dead-lettering a %r message for key %r after %d deliveries: %s",
                message.topic,
                message.key,
                message.attempt,
                reason,
            )
            forward = dead_letter_topic(message.topic)
            with self._condition:
                consumed = forward in self._handlers
            if consumed:
                # Published before the move, so a crash between the two repeats the
                # delivery rather than losing the dead-letter consumer's message.
                # The same id: a crash between the two repeats the delivery, and its
                # forward is then a no-op if the first one is still pending.
                self.broker.publish(
                    forward,
                    message.key,
                    message.payload,
                    message.message_id or new_message_id(),
                )
            self.broker.dead_letter(delivery, reason)
            self._metrics.dead_letters.labels(message.topic).inc()

    def _beat(self) -> None:
        self._using_broker(self._renew_until_stopped)

    def _renew_until_stopped(self) -> None:
        """Refresh the backlog gauge (at once, then every ``renew_interval``) and renew
        leases, until :meth:`stop` has joined the workers."""
        while True:
            with self._condition:
                topics = list(self._handlers)
            for topic in topics:
                try:
                    self._metrics.lag.labels(topic).set(self.broker.backlog(topic))
                except Exception as error:
                    logger.debug("measuring the backlog of %r failed: %s", topic, error)
            if self._heartbeat_stop.wait(self._renew_interval):
                return
            try:
                self.broker.renew()
            except Exception as error:
                self._metrics.broker_errors.labels("renew").inc()
                logger.warning("renewing delivery leases failed: %s", error)


class _RateLimitedWarnings:
    """Logs a warning, and the same text again at most once per ``interval`` seconds with the
    number of repeats in between; thread-safe. Each worker meets a broker's refusal on its
    own, and logging each meeting would bury the log."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}  # text -> when it was last logged
        self._repeats: dict[str, int] = {}

    def warn(self, text: str) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(text)
            if last is not None and now - last < self._interval:
                self._repeats[text] = self._repeats.get(text, 0) + 1
                return
            repeats = self._repeats.pop(text, 0)
            since = now - last if last is not None else 0.0
            if len(self._last) > 100:  # texts not seen for a while: forget them
                self._last = {t: at for t, at in self._last.items() if now - at < self._interval}
            self._last[text] = now
        if repeats:
            logger.warning("%s (%d more times in the last %.0f s)", text, repeats, since)
        else:
            logger.warning("%s", text)
