"""Messaging between pipeline stages: the contract, an in-process queue and payload codecs."""

from stovepipe.messagequeue.contract import (
    TOPIC_PROCESS,
    Handler,
    Message,
    MessageQueue,
    PermanentFailure,
    Publisher,
    dead_letter_topic,
)

__all__ = [
    "TOPIC_PROCESS",
    "Handler",
    "Message",
    "MessageQueue",
    "PermanentFailure",
    "Publisher",
    "dead_letter_topic",
]
