"""ProcessController, alone and behind the in-process messaging queue fed by ingest."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator

import pytest

from stovepipe.controller import IngestController, ProcessController
from stovepipe.entity import Request, RequestState
from stovepipe.messagequeue import TOPIC_PROCESS, Message, PermanentFailure
from stovepipe.messagequeue.codec import encode_process_request
from stovepipe.messagequeue.inprocess import InProcessMessageQueue
from stovepipe.messagequeue.v1.messagequeue_pb2 import ProcessRequest
from stovepipe.sourcecontrol import QueueMap
from stovepipe.sourcecontrol.fake import FakeSourceControl
from stovepipe.storage import (
    Counter,
    RequestStore,
    RequestURIStore,
    Storage,
    Unavailable,
    open_storage,
)
from stovepipe.storage.memory import open_backend as open_memory_backend

QUEUE = "monorepo/main"
STORED = Request("request/monorepo/main/1", QUEUE, "fake://monorepo/c1", RequestState.ACCEPTED, 1)


@pytest.fixture
def storage() -> Iterator[Storage]:
    with open_storage("memory://") as storage:
        storage.requests.create(STORED)
        yield storage


def message(payload: bytes, attempt: int = 1) -> Message:
    return Message(TOPIC_PROCESS, QUEUE, payload, attempt)


def process_payload(request_id: str, queue: str = QUEUE) -> bytes:
    return encode_process_request(ProcessRequest(id=request_id, queue=queue))


def test_process_reloads_the_request_by_id_and_logs_it(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="stovepipe.controller.process"):
        ProcessController(storage).handle(message(process_payload(STORED.id), attempt=2))
    [record] = caplog.records
    assert record.getMessage() == (
        "processing request request/monorepo/main/1 (queue monorepo/main, "
        "uri fake://monorepo/c1, state accepted, version 1, attempt 2)"
    )


def test_process_is_idempotent_on_redelivery(storage: Storage) -> None:
    controller = ProcessController(storage)
    for attempt in (1, 1, 2):
        controller.handle(message(process_payload(STORED.id), attempt))
    assert storage.requests.get(STORED.id) == STORED


def test_process_message_without_queue_from_an_older_producer_is_accepted(
    storage: Storage,
) -> None:
    ProcessController(storage).handle(message(b'{"id": "request/monorepo/main/1"}'))


@pytest.mark.parametrize("payload", [b"not json", b"{}", b'{"id": 1}'])
def test_process_malformed_payload_raises_permanent_failure(
    storage: Storage, payload: bytes
) -> None:
    with pytest.raises(PermanentFailure, match="malformed"):
        ProcessController(storage).handle(message(payload))


@pytest.mark.parametrize("request_id", ["request/monorepo/main/2", "x" * 300])
def test_process_missing_request_raises_permanent_failure_not_a_retry(
    storage: Storage, request_id: str
) -> None:
    with pytest.raises(PermanentFailure, match="named by a process message"):
        ProcessController(storage).handle(message(process_payload(request_id)))


def test_process_queue_differing_from_the_stored_request_raises_permanent_failure(
    storage: Storage,
) -> None:
    with pytest.raises(PermanentFailure, match="belongs to queue"):
        ProcessController(storage).handle(message(process_payload(STORED.id, "monorepo/other")))


def test_process_storage_unavailable_propagates_to_be_retried() -> None:
    backend = open_memory_backend("memory://")

    class DownRequestStore:
        def create(self, request: Request) -> None:
            raise Unavailable("connection refused")

        def get(self, request_id: str) -> Request:
            raise Unavailable("connection refused")

        def update(self, request: Request, *, old_version: int, new_version: int) -> None:
            raise Unavailable("connection refused")

    @dataclasses.dataclass
    class DownBackend:
        requests: RequestStore
        request_uris: RequestURIStore
        counter: Counter

        def close(self) -> None:
            backend.close()

    storage = Storage(DownBackend(DownRequestStore(), backend.request_uris, backend.counter))
    with pytest.raises(Unavailable):
        ProcessController(storage).handle(message(process_payload(STORED.id)))


def test_ingest_publishes_and_process_consumes_through_the_in_process_queue(
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue = InProcessMessageQueue(max_attempts=3, backoff_seconds=0.01)
    with open_storage("memory://") as storage:
        queue.subscribe(TOPIC_PROCESS, ProcessController(storage).handle)
        queue.start()
        source = FakeSourceControl(["c1"], name="monorepo")
        ingest = IngestController(storage, QueueMap({QUEUE: source}), queue)
        with caplog.at_level(logging.INFO, logger="stovepipe.controller.process"):
            first = ingest.ingest(QUEUE)
            source.push("c2")
            second = ingest.ingest(QUEUE)
            queue.publish(TOPIC_PROCESS, QUEUE, process_payload("request/monorepo/main/9"))
            assert queue.wait_until_idle(10.0)
        queue.stop(timeout=10.0)
    processed = [
        r.getMessage().split()[2]
        for r in caplog.records
        if r.name == "stovepipe.controller.process"
    ]
    assert processed == [first.id, second.id]
    [letter] = queue.dead_letters(TOPIC_PROCESS)
    assert letter.message.attempt == 1
    assert "request/monorepo/main/9" in letter.reason
