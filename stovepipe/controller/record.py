"""Record: the consumer of the ``record`` topic (DESIGN section 6).

Turns a request's outcome into a validation fact (``succeeded``: degree 0, green;
``failed``: degree 1; ``cancelled``: no fact) and, on green, moves the queue's bookmark
forward (a higher request number wins; an older green never moves it back) and the queue's
promotion ref after it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

from stovepipe.controller.buildsignal import wake_newest
from stovepipe.controller.process import load_request
from stovepipe.controller.queues import change_queue, request_number
from stovepipe.entity import Fact, Queue, RequestState
from stovepipe.messaging.codec import decode
from stovepipe.messaging.contract import Message, Publisher
from stovepipe.messaging.v1.messaging_pb2 import RecordRequest
from stovepipe.sourcecontrol import contract as sourcecontrol
from stovepipe.sourcecontrol.contract import SourceControlFactory
from stovepipe.storage import AlreadyExists, Storage

logger = logging.getLogger(__name__)

WHOLE_REPOSITORY = ""
"""The ``project`` of a fact about the whole repository."""

DEGREES = {RequestState.SUCCEEDED: 0.0, RequestState.FAILED: 1.0}
"""The fact's degree for each outcome that is a verdict on the commit."""


class RecordController:
    """Handles ``RecordRequest`` messages. Idempotent, so redelivery is harmless."""

    def __init__(
        self,
        storage: Storage,
        sources: SourceControlFactory,
        publisher: Publisher,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._storage = storage
        self._sources = sources
        self._publisher = publisher
        self._clock = clock

    def handle(self, message: Message) -> None:
        """Record the outcome of the request a ``RecordRequest`` names.

        Raises :class:`~stovepipe.messaging.contract.PermanentFailure` for a malformed
        payload or a missing request; storage and SourceControl ``Unavailable`` propagate. A
        promotion the source refuses is logged, not retried.
        """
        named = decode(message.payload, RecordRequest, "id")
        request = load_request(self._storage, named.id, named.queue, "record")
        degree = DEGREES.get(request.state)
        if degree is None:
            return  # cancelled, or not settled: no verdict on the commit
        fact = Fact(request.queue, request.uri, WHOLE_REPOSITORY, degree, request.id, self._clock())
        try:
            self._storage.facts.create(fact)
            logger.info(
                "%s is %s at %s", request.queue, "green" if degree == 0 else "red", request.uri
            )
        except AlreadyExists:
            pass  # recorded by an earlier delivery: the first fact stands
        if degree != 0:
            return
        number = request_number(request.id)

        def forward(queue: Queue) -> Queue | None:
            if request_number(queue.last_green_request_id) >= number:
                return None
            return dataclasses.replace(
                queue, last_green_uri=request.uri, last_green_request_id=request.id
            )

        queue = change_queue(self._storage, request.queue, forward)
        self._promote(queue)
        # The next head waited for this request's slot; now it can build from the bookmark.
        wake_newest(self._storage, self._publisher, request.queue)

    def _promote(self, queue: Queue) -> None:
        """Move the promotion ref to the bookmark; a bookmark a rewrite dropped stays put."""
        source = self._sources.for_queue(queue.name)
        try:
            if source.promote(queue.last_green_uri):
                logger.info("promoted %s to %s", queue.name, queue.last_green_uri)
        except sourcecontrol.SourceControlError as error:
            # A rewrite dropped the commit, or the branch is checked out: the bookmark stands.
            logger.warning("could not promote %s: %s", queue.name, error)
