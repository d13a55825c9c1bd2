"""Process: the consumer of the ``process`` topic. For now it reloads the request and logs it."""

from __future__ import annotations

import logging

from stovepipe.messagequeue.codec import decode_process_request
from stovepipe.messagequeue.contract import Message, PermanentFailure
from stovepipe.storage import LimitExceeded, NotFound, Storage

logger = logging.getLogger(__name__)


class ProcessController:
    """Handles ``ProcessRequest`` messages. Idempotent, so redelivery is harmless."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    def handle(self, message: Message) -> None:
        """Reload the request a message names and log it.

        Raises :class:`PermanentFailure` for a malformed payload and for a request that
        does not exist: ingest writes the row before it publishes, so a missing row is an
        inconsistency no retry can fix. A storage ``Unavailable`` propagates, to be retried.
        """
        process_request = decode_process_request(message.payload)
        try:
            request = self._storage.requests.get(process_request.id)
        except (NotFound, LimitExceeded) as error:
            raise PermanentFailure(
                f"request {process_request.id!r} named by a process message: {error}"
            ) from error
        if process_request.queue and process_request.queue != request.queue:
            raise PermanentFailure(
                f"request {request.id!r} belongs to queue {request.queue!r}, "
                f"but the message says {process_request.queue!r}"
            )
        logger.info(
            "processing request %s (queue %s, uri %s, state %s, version %d, attempt %d)",
            request.id,
            request.queue,
            request.uri,
            request.state,
            request.version,
            message.attempt,
        )
