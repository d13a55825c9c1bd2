"""The messaging contract: publish to a topic with a partition key; consume with ack, retry
and dead-letter, at least once.

* **At least once.** A handler may see a message more than once; handlers are idempotent.
* **Per-key ordering.** Messages of one ``(topic, key)`` are delivered one at a time, in
  publish order; a message being retried holds back the later messages of its key.
* **Ack, retry, dead-letter.** A handler that returns acknowledges the message. One that
  raises has it redelivered with backoff (``attempt`` counts deliveries, from 1) until the
  queue's maximum number of attempts, after which it moves to :func:`dead_letter_topic`
  with the failure reason. :class:`PermanentFailure` moves it there at once.
* **Hold.** A handler that raises :class:`Hold` is not done yet: the message is delivered
  again after the hold's delay, without counting as a failed attempt, and still holds back
  the later messages of its key.
* **Idempotent publish.** A message carries an id (``message_id``, a fresh one unless the
  publisher gives one; for the ``process`` topic, ingest gives the request id). Publishing an
  id that is still *pending* on that topic (published, not yet acknowledged or
  dead-lettered; a delivery running or backing off counts as pending) is a no-op, also when
  publishers race: republishing never piles up copies. Once the message is settled, the id
  may be published again.
* **Dead-letter consumers.** A handler subscribed to :func:`dead_letter_topic` of a topic
  receives that topic's messages as they fail for good (at least once, with the same key and
  payload), besides their being kept as dead letters.
* **Errors.** An implementation raises :class:`MessagingUnavailable` for a transient fault
  of its engine (unreachable, timed out, cannot take writes for now) and a plain
  :class:`MessagingError` for one an operator must fix; never a driver's exception, and never
  a storage error (the tree is :mod:`stovepipe.errors`).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from typing import Final, Protocol

from stovepipe.errors import MessagingError as MessagingError
from stovepipe.errors import StovepipeError, Transient

TOPIC_PROCESS: Final = "process"
"""Requests admitted by ingest, payload ``ProcessRequest``, partitioned by queue."""

TOPIC_BUILD: Final = "build"
"""Requests the process stage admitted to a build slot, payload ``BuildRequest``, by queue."""

TOPIC_BUILDSIGNAL: Final = "buildsignal"
"""Builds to follow until they end, payload ``BuildSignal``, partitioned by queue."""

TOPIC_RECORD: Final = "record"
"""Requests with an outcome, to be recorded as facts, payload ``RecordRequest``, by queue."""


MAX_MESSAGE_ID_BYTES: Final = 255
"""The longest message id, in bytes of UTF-8: a request id (``limits.MAX_REQUEST_ID_BYTES``)."""


def new_message_id() -> str:
    """A fresh message id: 32 hex digits, random."""
    return uuid.uuid4().hex


def checked_message_id(message_id: str | None) -> str:
    """``message_id``, or a fresh one for ``None``; raises ``ValueError`` (``TypeError`` for a
    non-string) for one the contract does not take: empty, or longer than
    :data:`MAX_MESSAGE_ID_BYTES` bytes of UTF-8."""
    if message_id is None:
        return new_message_id()
    if not isinstance(message_id, str):
        raise TypeError(f"message_id must be str, not {type(message_id).__name__}")
    size = len(message_id.encode("utf-8", "surrogatepass"))
    if not 0 < size <= MAX_MESSAGE_ID_BYTES:
        raise ValueError(
            f"message_id must be 1 to {MAX_MESSAGE_ID_BYTES} bytes of UTF-8, not {size}"
        )
    return message_id


def dead_letter_topic(topic: str) -> str:
    """The topic that keeps ``topic``'s messages that failed for good."""
    return f"{topic}.dead-letter"


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """One delivery of a published message; ``attempt`` is 1 on the first delivery,
    ``message_id`` the id it was published with."""

    topic: str
    key: str
    payload: bytes
    attempt: int
    message_id: str = ""


class MessagingUnavailable(Transient, MessagingError):
    """The messaging engine could not be reached in time, or cannot take writes for now
    (transient: retry later).

    A :class:`MessagingError`, not a storage error (:mod:`stovepipe.errors`): the servicer
    says "messaging is unavailable". A :class:`MessagingError` that is not this one is
    permanent: an operator has to act.
    """


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that failed for good: its last delivery and why it failed."""

    message: Message
    reason: str


def as_messaging_error(error: StovepipeError) -> MessagingError:
    """``error``, from the mapping an engine's storage backend shares with its messaging
    queue, as the messaging contract's error: the same message and transient marker. The
    caller chains it (``raise as_messaging_error(error) from error``)."""
    kind = MessagingUnavailable if error.transient else MessagingError
    return kind(str(error))


class PermanentFailure(Exception):
    """Raised by a handler for a message that can never succeed: dead-letter it at once."""


class Hold(Exception):
    """Raised by a handler whose message is not done yet: deliver it again after ``delay``
    seconds. Not a failure: it neither counts as an attempt nor logs a warning."""

    def __init__(self, delay: float, reason: str = "") -> None:
        if not delay >= 0:  # also refuses NaN
            raise ValueError(f"hold delay must be a non-negative number of seconds, not {delay}")
        super().__init__(reason or f"held for {delay} s")
        self.delay = delay


Handler = Callable[[Message], None]
"""Consumes one message: returning acknowledges it, raising asks for a retry."""


class Publisher(Protocol):
    """The producing side of a messaging queue."""

    def publish(
        self, topic: str, key: str, payload: bytes, *, message_id: str | None = None
    ) -> None:
        """Accept ``payload`` for delivery on ``topic``, ordered after earlier ``key`` messages.

        ``message_id`` (at most :data:`MAX_MESSAGE_ID_BYTES` bytes of UTF-8; default a fresh
        one) names the message: if a message of that id is pending on ``topic``, this is a
        no-op. Returns once the message is accepted (it will be delivered at least once);
        raises ``ValueError`` for an empty or oversized id, and if it was not accepted
        :class:`MessagingUnavailable` (transient) or :class:`MessagingError`.
        """
        ...


class Messaging(Publisher, Protocol):
    """A messaging queue: a publisher that also runs the subscribed handlers."""

    def subscribe(self, topic: str, handler: Handler) -> None:
        """Deliver ``topic``'s messages to ``handler`` (one handler per topic)."""
        ...

    def start(self) -> None:
        """Start delivering. Messages published earlier are delivered too."""
        ...

    def stop(self, timeout: float | None = None) -> bool:
        """Stop delivering within ``timeout`` seconds, letting in-flight deliveries finish.

        A durable queue leaves unclaimed messages stored for the next consumer; a queue whose
        messages do not outlive the process delivers what it holds first, within the timeout.
        Returns whether every delivery ended in time. If one did not, its worker thread keeps
        the connections it uses open until it ends (closing them under it can crash the
        process), and so must the caller keep open what the handlers use (the storage).
        """
        ...
