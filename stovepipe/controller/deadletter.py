"""Fail closed: the consumer of the dead letters of ``process``, ``build`` and ``buildsignal``
(DESIGN section 6).

A message that exhausted its attempts on those stages would leave its request short of a
terminal state, and perhaps holding one of its queue's build slots for ever. Its dead letter
drives the request to ``failed`` and frees its slot (see
:func:`~stovepipe.controller.buildsignal.settle_request`), and cancels its build if it had
one. No fact is recorded: a request that failed this way says nothing about its commit.
Record's own dead letters go back to the record stage, which is idempotent.
"""

from __future__ import annotations

import logging

from stovepipe.buildrunner.contract import BuildRunnerError, BuildRunnerFactory
from stovepipe.controller.buildsignal import settle_request
from stovepipe.entity import RequestState
from stovepipe.messaging.codec import decode
from stovepipe.messaging.contract import (
    TOPIC_BUILD,
    TOPIC_BUILDSIGNAL,
    TOPIC_PROCESS,
    Message,
    PermanentFailure,
    Publisher,
    dead_letter_topic,
)
from stovepipe.messaging.v1.messaging_pb2 import BuildRequest, BuildSignal, ProcessRequest
from stovepipe.storage import LimitExceeded, NotFound, Storage

logger = logging.getLogger(__name__)


class DeadLetterController:
    """Handles the dead letters of ``process``, ``build`` and ``buildsignal``. Idempotent."""

    TOPICS = tuple(dead_letter_topic(t) for t in (TOPIC_PROCESS, TOPIC_BUILD, TOPIC_BUILDSIGNAL))

    def __init__(self, storage: Storage, runners: BuildRunnerFactory, publisher: Publisher) -> None:
        self._storage = storage
        self._runners = runners
        self._publisher = publisher

    def handle(self, message: Message) -> None:
        """Drive the request a dead letter names to ``failed``; free its slot.

        A payload that names no request is dropped with an error in the log (there is no
        request to settle); storage ``Unavailable`` propagates, to be retried.
        """
        try:
            request_id, build_id = self._names(message)
        except PermanentFailure as error:
            logger.error("dropping an undecodable %s message: %s", message.topic, error)
            return
        try:
            request = self._storage.requests.get(request_id)
        except (NotFound, LimitExceeded):
            return
        if request.state.terminal:
            return
        logger.error("request %s fails: its %s message failed for good", request.id, message.topic)
        settle_request(self._storage, self._publisher, request, RequestState.FAILED)
        if build_id:
            try:
                self._runners.for_queue(request.queue).cancel(build_id)
            except BuildRunnerError as error:
                logger.warning("could not cancel build %s: %s", build_id, error)

    @staticmethod
    def _names(message: Message) -> tuple[str, str]:
        """The request id and build id (empty if none) a dead letter names."""
        if message.topic == dead_letter_topic(TOPIC_BUILDSIGNAL):
            signal = decode(message.payload, BuildSignal, "request_id")
            return signal.request_id, signal.build_id
        if message.topic == dead_letter_topic(TOPIC_BUILD):
            return decode(message.payload, BuildRequest, "id").id, ""
        return decode(message.payload, ProcessRequest, "id").id, ""
