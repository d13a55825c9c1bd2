"""Ingest: admit a queue's head commit exactly once (DESIGN section 3).

The storage contract has no cross-store transactions, so the order of the steps is what
makes ingest safe under races and crashes:

1. the ``(queue, uri)`` mapping is claimed *before* the request row is written, so a caller
   that loses the claim has written nothing and adopts the winner's id;
2. the row is then ensured (read, else create), which also heals a mapping whose row a
   crashed caller never wrote;
3. a new request is stamped as its queue's ``latest_request_id`` (the queue is created if
   absent), which moves forward only, by request number;
4. while the request is ``accepted`` it is (re)published to the process stage, whose
   consumer is idempotent, so a publish lost to a crash is repeated by the next ingest. A
   queue without a build runner is ingest-only: nothing is published for it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from stovepipe.controller.queues import stamp_latest
from stovepipe.entity import Request, RequestState
from stovepipe.messaging.codec import encode_process_request
from stovepipe.messaging.contract import TOPIC_PROCESS, Publisher
from stovepipe.messaging.v1.messaging_pb2 import ProcessRequest
from stovepipe.sourcecontrol.contract import SourceControlFactory
from stovepipe.storage import AlreadyExists, NotFound, Storage, limits

logger = logging.getLogger(__name__)


class InvalidQueue(ValueError):
    """The queue name is empty, longer than the storage limit, or not valid Unicode text."""


class InconsistentState(RuntimeError):
    """Stored state contradicts itself, e.g. a request whose uri differs from its mapping."""


def check_queue(queue: object) -> str:
    """Return ``queue`` if it is a valid queue name, else raise :class:`InvalidQueue`."""
    if not isinstance(queue, str):
        raise InvalidQueue(f"queue must be a str, not {type(queue).__name__}")
    if not queue:
        raise InvalidQueue("queue is empty")
    try:
        size = len(queue.encode("utf-8"))
    except UnicodeEncodeError as error:
        raise InvalidQueue(f"queue is not valid Unicode text: {error.reason}") from None
    if size > limits.MAX_QUEUE_BYTES:
        raise InvalidQueue(
            f"queue is {size} bytes in UTF-8; the limit is {limits.MAX_QUEUE_BYTES} bytes"
        )
    return queue


class IngestController:
    """Admits a queue's head commit as one request, idempotently on ``(queue, uri)``.

    Thread-safe, and safe across processes sharing one storage backend.
    """

    def __init__(
        self,
        storage: Storage,
        sourcecontrol: SourceControlFactory,
        publisher: Publisher,
        builds: Callable[[str], bool] = lambda queue: True,
    ) -> None:
        """``builds(queue)`` says whether the queue has a build runner (else: ingest-only)."""
        self._storage = storage
        self._sourcecontrol = sourcecontrol
        self._publisher = publisher
        self._builds = builds

    def ingest(self, queue: str) -> Request:
        """Admit ``queue``'s current head and return its stored request.

        The same head always yields the same request, whoever asks and however often.
        Raises :class:`InvalidQueue`, SourceControl's ``NotFound`` for an unknown queue or
        ref, ``Unavailable`` (storage or SourceControl) for transient faults, and
        :class:`InconsistentState` if the stored request contradicts its mapping.
        """
        check_queue(queue)
        uri = self._sourcecontrol.for_queue(queue).latest()
        request_id = self._claim_id(queue, uri)
        request, created = self._ensure_request(request_id, queue, uri)
        if created:
            stamp_latest(self._storage, queue, request.id)
        if request.state == RequestState.ACCEPTED and self._builds(queue):
            payload = encode_process_request(ProcessRequest(id=request.id, queue=queue))
            # The request id names the message: while one is pending, republishing the same
            # head (every poll of an unchanged ref) adds nothing to the topic.
            self._publisher.publish(TOPIC_PROCESS, queue, payload, message_id=request.id)
        return request

    def _claim_id(self, queue: str, uri: str) -> str:
        """Return the id mapped to ``(queue, uri)``, minting and claiming one if none is."""
        uris = self._storage.request_uris
        try:
            return uris.get_id_by_uri(queue, uri)
        except NotFound:
            pass
        n = self._storage.counter.next(f"request/{queue}")
        candidate = f"request/{queue}/{n}"
        try:
            uris.create(queue, uri, candidate)
        except AlreadyExists:
            # Another caller claimed this head first: adopt its id. Our number stays unused.
            try:
                winner = uris.get_id_by_uri(queue, uri)
            except NotFound as error:
                raise InconsistentState(
                    f"mapping ({queue!r}, {uri!r}) exists by create but not by read"
                ) from error
            logger.debug("lost the claim on %r %r to %r", queue, uri, winner)
            return winner
        logger.info("claimed %r for queue %r at %r", candidate, queue, uri)
        return candidate

    def _ensure_request(self, request_id: str, queue: str, uri: str) -> tuple[Request, bool]:
        """Return the stored request ``request_id``, creating it if the row is missing, and
        whether this call created it."""
        requests = self._storage.requests
        created = False
        try:
            request = requests.get(request_id)
        except NotFound:
            fresh = Request(request_id, queue, uri, RequestState.ACCEPTED, 1)
            try:
                requests.create(fresh)
                request, created = fresh, True
            except AlreadyExists:
                # A racer wrote the row between our get and create: theirs is the row.
                try:
                    request = requests.get(request_id)
                except NotFound as error:
                    raise InconsistentState(
                        f"request {request_id!r} exists by create but not by read"
                    ) from error
        if request.queue != queue or request.uri != uri:
            logger.error(
                "request %r is stored with queue %r and uri %r, but the mapping of queue %r "
                "and uri %r points to it",
                request_id,
                request.queue,
                request.uri,
                queue,
                uri,
            )
            raise InconsistentState(
                f"request {request_id!r} does not match the mapping that points to it"
            )
        return request, created
