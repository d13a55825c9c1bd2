"""Messaging between pipeline stages: the contract, an in-process queue and payload codecs."""

from stovepipe.messaging.contract import (
    MAX_MESSAGE_ID_BYTES,
    TOPIC_BUILD,
    TOPIC_BUILDSIGNAL,
    TOPIC_PROCESS,
    TOPIC_RECORD,
    Handler,
    Hold,
    Message,
    Messaging,
    MessagingError,
    MessagingUnavailable,
    PermanentFailure,
    Publisher,
    dead_letter_topic,
)

__all__ = [
    "MAX_MESSAGE_ID_BYTES",
    "TOPIC_BUILD",
    "TOPIC_BUILDSIGNAL",
    "TOPIC_PROCESS",
    "TOPIC_RECORD",
    "Handler",
    "Hold",
    "Message",
    "Messaging",
    "MessagingError",
    "MessagingUnavailable",
    "PermanentFailure",
    "Publisher",
    "dead_letter_topic",
]
