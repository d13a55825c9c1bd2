"""Process: the consumer of the ``process`` topic (DESIGN section 6).

For each admitted request, one delivery per queue at a time: supersede it if a newer head
came, wait if the queue's build slots are taken, else choose the build strategy, take a slot,
move the request to ``processing`` and hand it to the build stage.

The request moves to ``processing`` *before* its slot is counted: a crash between the two
leaves the queue counting one request too few (a later build may start one early), never a
slot that nothing frees. A request waiting for a slot is not held in the messaging queue: the
stage that frees a slot publishes the queue's newest head again (see
:func:`stovepipe.controller.buildsignal.settle_request`), and ingest republishes a waiting
head too, at most once per republish interval.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Final

from stovepipe.controller.queues import request_id, request_number, stamp_latest, take_slot
from stovepipe.entity import BuildStrategy, Queue, Request, RequestState
from stovepipe.messaging.codec import decode_process_request, encode
from stovepipe.messaging.contract import TOPIC_BUILD, Message, PermanentFailure, Publisher
from stovepipe.messaging.v1.messaging_pb2 import BuildRequest
from stovepipe.sourcecontrol import contract as sourcecontrol
from stovepipe.sourcecontrol.contract import SourceControl, SourceControlFactory
from stovepipe.storage import LimitExceeded, NotFound, Storage, VersionMismatch

logger = logging.getLogger(__name__)

DEFAULT_MAX_CONCURRENT: Final = 1
"""A queue's requests building at once unless configured otherwise."""


def one_at_a_time(queue: str) -> int:
    """The default ``max_concurrent``: :data:`DEFAULT_MAX_CONCURRENT` for every queue."""
    return DEFAULT_MAX_CONCURRENT


MAX_SWEEP: Final = 1000
"""Older requests one admission looks at to settle those whose message never came."""


def publish_build(publisher: Publisher, request: Request) -> None:
    """Hand ``request`` (in ``processing``) to the build stage."""
    payload = encode(BuildRequest(id=request.id, queue=request.queue))
    publisher.publish(TOPIC_BUILD, request.queue, payload)


def load_request(storage: Storage, wanted: str, queue: str, topic: str) -> Request:
    """The request a message names; :class:`PermanentFailure` if it does not exist (every
    stage writes what it names before publishing) or belongs to another queue."""
    try:
        request = storage.requests.get(wanted)
    except (NotFound, LimitExceeded) as error:
        raise PermanentFailure(f"request {wanted!r} named by a {topic} message: {error}") from error
    if queue and queue != request.queue:
        raise PermanentFailure(
            f"request {request.id!r} belongs to queue {request.queue!r}, "
            f"but the {topic} message says {queue!r}"
        )
    return request


class ProcessController:
    """Handles ``ProcessRequest`` messages. Idempotent, so redelivery is harmless.

    ``max_concurrent(queue)`` is the number of the queue's requests that may build at once
    (at least 1).
    """

    def __init__(
        self,
        storage: Storage,
        sources: SourceControlFactory,
        publisher: Publisher,
        max_concurrent: Callable[[str], int] = one_at_a_time,
    ) -> None:
        self._storage = storage
        self._sources = sources
        self._publisher = publisher
        self._max_concurrent = max_concurrent

    def handle(self, message: Message) -> None:
        """Advance the request a ``ProcessRequest`` names by one step.

        Raises :class:`PermanentFailure` for a malformed payload or a request that does not
        exist; storage and SourceControl ``Unavailable`` propagate, to be retried.
        """
        named = decode_process_request(message.payload)
        request = load_request(self._storage, named.id, named.queue, "process")
        while True:
            if request.state.terminal:
                return
            if request.state == RequestState.PROCESSING:
                publish_build(self._publisher, request)  # a lost publish is repeated
                return
            try:
                self._admit(request)
                return
            except VersionMismatch:
                # Another stage changed the request meanwhile (a dead-letter consumer failed
                # it): look again.
                request = self._storage.requests.get(request.id)

    def _admit(self, request: Request) -> None:
        """Supersede, wait, or move an ``accepted`` request to ``processing``."""
        source = self._sources.for_queue(request.queue)
        queue = self._queue(request)
        latest = request_number(queue.latest_request_id)
        mine = request_number(request.id)
        if latest > mine and self._head(source) != request.uri:
            self._supersede(request)
            return
        if latest < mine:
            # Ingest stamps before it publishes, unless it crashed in between.
            queue = stamp_latest(self._storage, request.queue, request.id)
        if queue.in_flight >= self._max_concurrent(request.queue):
            logger.debug(
                "request %s waits: %d of queue %r's slots are taken",
                request.id,
                queue.in_flight,
                request.queue,
            )
            return
        strategy, base = self._strategy(source, queue, request)
        admitted = dataclasses.replace(
            request, state=RequestState.PROCESSING, build_strategy=strategy, base_uri=base
        )
        self._storage.requests.update(
            admitted, old_version=request.version, new_version=request.version + 1
        )
        take_slot(self._storage, request.queue)
        logger.info(
            "admitted %s to build (%s%s)",
            request.id,
            strategy,
            f" from {base}" if base else "",
        )
        self._settle_older(source, request, mine)
        publish_build(self._publisher, admitted)

    def _queue(self, request: Request) -> Queue:
        try:
            return self._storage.queues.get(request.queue)
        except NotFound:
            # Ingest creates the queue before it publishes, unless it crashed in between.
            return stamp_latest(self._storage, request.queue, request.id)

    @staticmethod
    def _head(source: SourceControl) -> str:
        """The ref's head now, or ``""`` if the ref is gone. Callers racing can give a newer
        head a lower number than an older one, and the head reported last must be built."""
        try:
            return source.latest()
        except sourcecontrol.NotFound:
            return ""

    @staticmethod
    def _strategy(
        source: SourceControl, queue: Queue, request: Request
    ) -> tuple[BuildStrategy, str]:
        """Incremental from the bookmark when it is an ancestor of the head; else full."""
        bookmark = queue.last_green_uri
        if not bookmark:
            return BuildStrategy.FULL, ""
        try:
            if source.is_ancestor(bookmark, request.uri):
                return BuildStrategy.INCREMENTAL, bookmark
        except sourcecontrol.NotFound:
            pass  # a rewrite dropped the bookmark's commit
        return BuildStrategy.FULL, ""

    def _supersede(self, request: Request) -> None:
        superseded = dataclasses.replace(request, state=RequestState.SUPERSEDED)
        self._storage.requests.update(
            superseded, old_version=request.version, new_version=request.version + 1
        )
        logger.info("superseded %s: the queue has a newer head", request.id)

    def _settle_older(self, source: SourceControl, admitted: Request, number: int) -> None:
        """Supersede the older requests still ``accepted`` (their publish was lost, or they
        waited for a slot and a newer head came), down to the first one that was admitted (it
        has a build strategy, and swept below itself when it was), at most :data:`MAX_SWEEP`.

        A request superseded by its own delivery swept nothing, so the sweep steps over it.
        """
        head: str | None = None  # read once, and only if an older request waits
        for older in range(number - 1, max(0, number - 1 - MAX_SWEEP), -1):
            try:
                request = self._storage.requests.get(request_id(admitted.queue, older))
            except NotFound:
                continue  # a number drawn by a caller that lost its claim
            if request.state != RequestState.ACCEPTED:
                if request.build_strategy != BuildStrategy.UNSET:
                    return
                continue
            if head is None:
                head = self._head(source)
            if request.uri == head:
                continue
            try:
                self._supersede(request)
            except VersionMismatch:
                continue  # its own delivery settled it meanwhile
