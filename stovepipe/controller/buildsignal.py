"""Buildsignal: the consumer of the ``buildsignal`` topic (DESIGN section 6).

Polls the build's runner until the build ends, holding the delivery between polls (no thread
waits on a build). Then, in this order, each step idempotent: store the build's terminal
status (written once), free the request's slot, write the outcome onto the request (first
writer wins), hand the request to the record stage, and wake the queue's newest head, which
may have been waiting for the slot.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Final

from stovepipe.buildrunner.contract import BuildRunnerFactory
from stovepipe.controller.process import load_request
from stovepipe.controller.queues import free_slot
from stovepipe.entity import Build, BuildStatus, Request, RequestState
from stovepipe.messaging.codec import decode, encode
from stovepipe.messaging.contract import (
    TOPIC_PROCESS,
    TOPIC_RECORD,
    Hold,
    Message,
    PermanentFailure,
    Publisher,
)
from stovepipe.messaging.v1.messaging_pb2 import BuildSignal, ProcessRequest, RecordRequest
from stovepipe.storage import LimitExceeded, NotFound, Storage, VersionMismatch

logger = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL: Final = 1.0
"""Seconds between two looks at a running build, once it has run a while."""

FIRST_POLL_INTERVAL: Final = 0.01
"""Seconds before the second look at a build; each later wait doubles, up to the poll
interval, so a short build's verdict comes soon and a long one costs a look a second."""

MAX_FOLLOWED: Final = 10_000
"""Builds whose looks this process counts; past it the counts start again (then at most a
few quick looks more)."""

OUTCOMES: Final = {
    BuildStatus.SUCCEEDED: RequestState.SUCCEEDED,
    BuildStatus.FAILED: RequestState.FAILED,
    BuildStatus.CANCELLED: RequestState.CANCELLED,
}
"""The request state each terminal build status decides."""


def settle_request(
    storage: Storage,
    publisher: Publisher,
    request: Request,
    outcome: RequestState,
    *,
    wake: bool = True,
) -> Request:
    """Move ``request`` to the terminal ``outcome`` unless it is terminal already (first
    writer wins), freeing its slot if it held one; return the stored request.

    The slot is freed *before* the outcome is written: a crash between the two is repeated
    by the redelivery, which finds the request still holding its slot. After a freed slot the
    queue's newest head is published to process again (unless ``wake`` is false: a green
    outcome wakes it from record, once the bookmark moved, so that it builds incrementally).
    """
    freed = False
    while not request.state.terminal:
        if request.state == RequestState.PROCESSING and not freed:
            free_slot(storage, request.queue)
            freed = True
        settled = dataclasses.replace(request, state=outcome)
        try:
            storage.requests.update(
                settled, old_version=request.version, new_version=request.version + 1
            )
        except VersionMismatch:
            request = storage.requests.get(request.id)
            continue
        logger.info("request %s %s", request.id, outcome)
        if freed and wake:
            wake_newest(storage, publisher, request.queue)
        return dataclasses.replace(settled, version=request.version + 1)
    return request


def wake_newest(storage: Storage, publisher: Publisher, queue: str) -> None:
    """Publish the queue's newest head to process again if it still waits (``accepted``)."""
    newest = storage.queues.get(queue).latest_request_id
    if not newest:
        return
    try:
        waiting = storage.requests.get(newest).state == RequestState.ACCEPTED
    except NotFound:
        return
    if waiting:
        # A fresh message id, not the request id: a delivery of the request's message may be
        # running right now and find the slot still taken; this wake-up must come after it.
        publisher.publish(TOPIC_PROCESS, queue, encode(ProcessRequest(id=newest, queue=queue)))


class BuildSignalController:
    """Handles ``BuildSignal`` messages. Idempotent, so redelivery is harmless."""

    def __init__(
        self,
        storage: Storage,
        runners: BuildRunnerFactory,
        publisher: Publisher,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> None:
        self._storage = storage
        self._runners = runners
        self._publisher = publisher
        self._poll_interval = poll_interval
        self._lock = threading.Lock()
        self._looks: dict[str, int] = {}  # build id -> looks so far, in this process

    def handle(self, message: Message) -> None:
        """Follow the build a ``BuildSignal`` names one step.

        Raises :class:`~stovepipe.messaging.contract.Hold` while the build runs,
        :class:`PermanentFailure` for a malformed payload or a missing build or request;
        ``Unavailable`` (storage or runner) propagates, to be retried.
        """
        named = decode(message.payload, BuildSignal, "build_id")
        try:
            build = self._storage.builds.get(named.build_id)
        except (NotFound, LimitExceeded) as error:
            raise PermanentFailure(f"build {named.build_id!r}: {error}") from error
        request = load_request(self._storage, build.request_id, named.queue, "buildsignal")
        if not build.status.terminal:
            build = self._follow(build, request)
        outcome = OUTCOMES[build.status]
        request = settle_request(
            self._storage,
            self._publisher,
            request,
            outcome,
            wake=outcome != RequestState.SUCCEEDED,
        )
        if request.state == outcome:
            # This build decided the request (also when a crash came before the publish).
            payload = encode(RecordRequest(id=request.id, queue=request.queue))
            self._publisher.publish(TOPIC_RECORD, request.queue, payload)

    def _next_delay(self, build_id: str) -> float:
        """Seconds until the next look at a running build: doubling from
        :data:`FIRST_POLL_INTERVAL` up to the poll interval."""
        with self._lock:
            if len(self._looks) >= MAX_FOLLOWED:
                self._looks.clear()
            looks = self._looks.get(build_id, 0)
            self._looks[build_id] = looks + 1
        delay: float = FIRST_POLL_INTERVAL * 2.0 ** min(looks, 32)
        return min(self._poll_interval, delay)

    def _follow(self, build: Build, request: Request) -> Build:
        """Return the build once its runner reports it terminal; hold the delivery until."""
        runner = self._runners.for_queue(request.queue)
        if request.state.terminal:
            runner.cancel(build.id)  # settled without it (say, failed by a dead letter)
        report = runner.status(build.id)
        latest = dataclasses.replace(build, status=report.status, log=report.log)
        if latest != build:
            try:
                self._storage.builds.update(
                    latest, old_version=build.version, new_version=build.version + 1
                )
                build = dataclasses.replace(latest, version=build.version + 1)
            except VersionMismatch:
                build = self._storage.builds.get(build.id)  # a terminal status stays as stored
        if not build.status.terminal:
            raise Hold(self._next_delay(build.id), f"build {build.id} is {build.status}")
        with self._lock:
            self._looks.pop(build.id, None)
        if report.reason:
            logger.info("build %s %s: %s", build.id, build.status, report.reason)
        return build
