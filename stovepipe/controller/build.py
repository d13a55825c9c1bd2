"""Build: the consumer of the ``build`` topic (DESIGN section 6).

Triggers the queue's build runner for a request in ``processing``, persists the build and
hands its id to the buildsignal stage. The runner's trigger is idempotent on the request id
and the build's create is first-writer-wins, so a redelivery finds the same build again and
never leaves two builds whose outcomes both count.
"""

from __future__ import annotations

import logging

from stovepipe.buildrunner.contract import BuildRunnerFactory
from stovepipe.buildrunner.contract import NotFound as NoRunner
from stovepipe.controller.process import load_request
from stovepipe.entity import Build, BuildStatus, RequestState
from stovepipe.messaging.codec import decode, encode
from stovepipe.messaging.contract import TOPIC_BUILDSIGNAL, Message, PermanentFailure, Publisher
from stovepipe.messaging.v1.messaging_pb2 import BuildRequest, BuildSignal
from stovepipe.storage import AlreadyExists, Storage

logger = logging.getLogger(__name__)


class BuildController:
    """Handles ``BuildRequest`` messages. Idempotent, so redelivery is harmless."""

    def __init__(self, storage: Storage, runners: BuildRunnerFactory, publisher: Publisher) -> None:
        self._storage = storage
        self._runners = runners
        self._publisher = publisher

    def handle(self, message: Message) -> None:
        """Start (or find again) the build of the request a ``BuildRequest`` names.

        Raises :class:`PermanentFailure` for a malformed payload, a missing request or a
        queue without a runner; ``Unavailable`` (storage or runner) propagates, to be retried.
        """
        named = decode(message.payload, BuildRequest, "id")
        request = load_request(self._storage, named.id, named.queue, "build")
        if request.state != RequestState.PROCESSING:
            return  # settled already, or a stale message
        try:
            runner = self._runners.for_queue(request.queue)
        except NoRunner as error:
            raise PermanentFailure(f"queue {request.queue!r} has no build runner") from error
        build_id = runner.trigger(request.id, request.base_uri or None, request.uri)
        try:
            self._storage.builds.create(Build(build_id, request.id, BuildStatus.ACCEPTED, "", 1))
            logger.info("build %s started for %s", build_id, request.id)
        except AlreadyExists:
            # A redelivery: the same build, triggered once. Unless a runner minted an id that
            # another request's build holds: following that build would decide this request.
            stored = self._storage.builds.get(build_id).request_id
            if stored != request.id:
                raise PermanentFailure(
                    f"the runner of queue {request.queue!r} returned build id {build_id!r}, "
                    f"which belongs to {stored!r}"
                ) from None
        payload = encode(BuildSignal(build_id=build_id, request_id=request.id, queue=request.queue))
        self._publisher.publish(TOPIC_BUILDSIGNAL, request.queue, payload)
