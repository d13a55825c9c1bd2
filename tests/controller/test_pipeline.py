"""The pipeline after ingest (process, build, buildsignal, record, dead letters), driven
through the in-process messaging queue over memory storage, a fake source and a fake runner."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator

import pytest

from stovepipe.buildrunner import BuildReport, RunnerMap
from stovepipe.buildrunner.contract import Unavailable as RunnerUnavailable
from stovepipe.buildrunner.fake import FakeBuildRunner
from stovepipe.controller import (
    BuildSignalController,
    IngestController,
    ProcessController,
    RecordController,
    subscribe_pipeline,
)
from stovepipe.entity import Build, BuildStatus, BuildStrategy, Queue, Request, RequestState
from stovepipe.messaging import (
    TOPIC_BUILDSIGNAL,
    TOPIC_PROCESS,
    TOPIC_RECORD,
    Hold,
    Message,
    PermanentFailure,
)
from stovepipe.messaging.codec import encode
from stovepipe.messaging.inprocess import InProcessMessaging
from stovepipe.messaging.v1.messaging_pb2 import BuildSignal, ProcessRequest, RecordRequest
from stovepipe.sourcecontrol import QueueMap
from stovepipe.sourcecontrol.fake import FakeSourceControl
from stovepipe.storage import NotFound, Storage, open_storage

QUEUE = "monorepo/main"
TIMEOUT = 10.0


@dataclasses.dataclass
class Pipeline:
    storage: Storage
    source: FakeSourceControl
    runner: FakeBuildRunner
    messaging: InProcessMessaging
    ingest: IngestController

    def wait_for(self, what: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not what():
            assert time.monotonic() < deadline, "the pipeline did not get there in time"
            time.sleep(0.01)

    def state(self, request_id: str) -> RequestState:
        return self.storage.requests.get(request_id).state

    def settled(self, request_id: str) -> Callable[[], bool]:
        return lambda: self.state(request_id).terminal

    def queue(self) -> Queue:
        return self.storage.queues.get(QUEUE)

    def idle(self) -> None:
        assert self.messaging.wait_until_idle(TIMEOUT)


@contextlib.contextmanager
def make_pipeline(
    runner: FakeBuildRunner,
    *,
    max_concurrent: int = 1,
    max_attempts: int = 3,
    transient_retry_seconds: float = 3600,
) -> Iterator[Pipeline]:
    messaging = InProcessMessaging(
        max_attempts=max_attempts,
        backoff_seconds=0.01,
        transient_retry_seconds=transient_retry_seconds,
    )
    source = FakeSourceControl(["c1"], name="monorepo")
    sources = QueueMap({QUEUE: source})
    with open_storage("memory://") as storage:
        subscribe_pipeline(
            messaging,
            storage,
            sources,
            RunnerMap({QUEUE: runner}),
            max_concurrent=lambda queue: max_concurrent,
            poll_interval=0.01,
        )
        messaging.start()
        try:
            yield Pipeline(
                storage, source, runner, messaging, IngestController(storage, sources, messaging)
            )
        finally:
            messaging.stop(timeout=TIMEOUT)


@pytest.fixture
def pipeline() -> Iterator[Pipeline]:
    with make_pipeline(FakeBuildRunner()) as made:
        yield made


def test_green_head_ends_succeeded_with_a_green_fact_the_bookmark_and_the_promotion(
    pipeline: Pipeline,
) -> None:
    request = pipeline.ingest.ingest(QUEUE)
    pipeline.wait_for(pipeline.settled(request.id))
    pipeline.idle()

    stored = pipeline.storage.requests.get(request.id)
    assert (stored.state, stored.build_strategy, stored.base_uri) == (
        RequestState.SUCCEEDED,
        BuildStrategy.FULL,
        "",
    )
    fact = pipeline.storage.facts.get(QUEUE, request.uri, "")
    assert (fact.degree, fact.request_id) == (0.0, request.id)
    queue = pipeline.queue()
    assert (queue.last_green_uri, queue.last_green_request_id, queue.in_flight) == (
        request.uri,
        request.id,
        0,
    )
    assert queue.latest_request_id == request.id
    assert pipeline.source.promoted == request.uri


def test_red_head_ends_failed_with_a_broken_fact_and_the_bookmark_stays() -> None:
    runner = FakeBuildRunner(outcomes={"fake://monorepo/c2": BuildStatus.FAILED})
    with make_pipeline(runner) as pipeline:
        green = pipeline.ingest.ingest(QUEUE)
        pipeline.wait_for(pipeline.settled(green.id))
        pipeline.source.push("c2")
        red = pipeline.ingest.ingest(QUEUE)
        pipeline.wait_for(pipeline.settled(red.id))
        pipeline.idle()

        assert pipeline.state(red.id) == RequestState.FAILED
        assert pipeline.storage.facts.get(QUEUE, red.uri, "").degree == 1.0
        assert pipeline.queue().last_green_uri == green.uri
        assert pipeline.queue().in_flight == 0
        assert pipeline.source.promoted == green.uri


def test_next_build_after_a_green_one_is_incremental_from_the_bookmark(
    pipeline: Pipeline,
) -> None:
    first = pipeline.ingest.ingest(QUEUE)
    pipeline.wait_for(pipeline.settled(first.id))
    # The record stage moves the bookmark after the request is settled: a head admitted in
    # between is built in full, rightly.
    pipeline.wait_for(lambda: pipeline.queue().last_green_uri == first.uri)
    pipeline.source.push("c2")
    second = pipeline.ingest.ingest(QUEUE)
    pipeline.wait_for(pipeline.settled(second.id))

    stored = pipeline.storage.requests.get(second.id)
    assert (stored.build_strategy, stored.base_uri) == (BuildStrategy.INCREMENTAL, first.uri)
    assert pipeline.runner.triggers[-1].base_uri == first.uri


def test_history_rewrite_makes_the_next_build_full(pipeline: Pipeline) -> None:
    # The bookmark names a commit the source no longer knows (a rewrite dropped it).
    pipeline.storage.queues.create(Queue(QUEUE, last_green_uri="fake://monorepo/gone"))
    request = pipeline.ingest.ingest(QUEUE)
    pipeline.wait_for(pipeline.settled(request.id))

    assert pipeline.storage.requests.get(request.id).build_strategy == BuildStrategy.FULL
    assert pipeline.runner.triggers[-1].base_uri is None


def test_bookmark_moves_forward_only_an_older_green_never_moves_it_back(
    pipeline: Pipeline,
) -> None:
    newer = "request/monorepo/main/7"
    pipeline.storage.queues.create(
        Queue(
            QUEUE,
            latest_request_id=newer,
            last_green_uri="fake://monorepo/c7",
            last_green_request_id=newer,
        )
    )
    older = Request(
        "request/monorepo/main/3", QUEUE, "fake://monorepo/c1", RequestState.SUCCEEDED, 1
    )
    pipeline.storage.requests.create(older)
    record = RecordController(
        pipeline.storage, QueueMap({QUEUE: pipeline.source}), pipeline.messaging
    )
    record.handle(Message(TOPIC_RECORD, QUEUE, encode(RecordRequest(id=older.id, queue=QUEUE)), 1))

    assert pipeline.queue().last_green_request_id == newer
    assert pipeline.storage.facts.get(QUEUE, older.uri, "").degree == 0.0


def test_slow_build_with_two_newer_heads_supersedes_the_middle_one_and_builds_the_newest() -> None:
    # The first build outlasts the two ingests that follow it on any machine.
    with make_pipeline(FakeBuildRunner(duration=2.0)) as pipeline:
        first = pipeline.ingest.ingest(QUEUE)
        pipeline.wait_for(lambda: pipeline.state(first.id) == RequestState.PROCESSING)
        pipeline.source.push("c2")
        middle = pipeline.ingest.ingest(QUEUE)
        pipeline.source.push("c3")
        newest = pipeline.ingest.ingest(QUEUE)
        pipeline.wait_for(pipeline.settled(newest.id))
        pipeline.idle()

        assert [pipeline.state(r.id) for r in (first, middle, newest)] == [
            RequestState.SUCCEEDED,
            RequestState.SUPERSEDED,
            RequestState.SUCCEEDED,
        ]
        assert [t.request_id for t in pipeline.runner.triggers] == [first.id, newest.id]
        assert pipeline.queue().in_flight == 0


def test_slots_never_exceed_max_concurrent_and_end_at_zero() -> None:
    runner = FakeBuildRunner(duration=0.05)
    with make_pipeline(runner, max_concurrent=2) as pipeline:
        seen: list[int] = []
        ids = []
        for n in range(2, 12):
            ids.append(pipeline.ingest.ingest(QUEUE).id)
            seen.append(pipeline.queue().in_flight)
            pipeline.source.push(f"c{n}")
            time.sleep(0.01)
        ids.append(pipeline.ingest.ingest(QUEUE).id)
        deadline = time.monotonic() + TIMEOUT
        while not all(pipeline.state(i).terminal for i in ids):
            seen.append(pipeline.queue().in_flight)
            assert time.monotonic() < deadline
            time.sleep(0.005)
        pipeline.idle()
        assert max(seen) <= 2
        assert pipeline.queue().in_flight == 0
        assert pipeline.state(ids[-1]) == RequestState.SUCCEEDED


def test_request_whose_message_never_came_is_superseded_when_a_newer_one_is_admitted(
    pipeline: Pipeline,
) -> None:
    lost = Request("request/monorepo/main/1", QUEUE, "fake://monorepo/c1", RequestState.ACCEPTED, 1)
    pipeline.storage.requests.create(lost)
    pipeline.storage.request_uris.create(QUEUE, lost.uri, lost.id)
    pipeline.storage.counter.next(f"request/{QUEUE}")
    pipeline.source.push("c2")
    newer = pipeline.ingest.ingest(QUEUE)
    pipeline.wait_for(pipeline.settled(newer.id))

    assert pipeline.state(lost.id) == RequestState.SUPERSEDED


def test_head_reported_last_is_built_even_when_an_older_head_drew_a_higher_number(
    pipeline: Pipeline,
) -> None:
    # Racing callers: the newer head c2 drew 1, the older head c1 drew 2 and was stamped latest.
    pipeline.source.push("c2")
    head = Request("request/monorepo/main/1", QUEUE, "fake://monorepo/c2", RequestState.ACCEPTED, 1)
    older = Request(
        "request/monorepo/main/2", QUEUE, "fake://monorepo/c1", RequestState.ACCEPTED, 1
    )
    for request in (head, older):
        pipeline.storage.requests.create(request)
    pipeline.storage.queues.create(Queue(QUEUE, latest_request_id=older.id))
    pipeline.messaging.publish(
        TOPIC_PROCESS, QUEUE, encode(ProcessRequest(id=head.id, queue=QUEUE))
    )
    pipeline.wait_for(pipeline.settled(head.id))

    assert pipeline.state(head.id) == RequestState.SUCCEEDED


class _RunnerWhoseStatusFails(FakeBuildRunner):
    def status(self, build_id: str) -> BuildReport:
        raise RunnerUnavailable("the runner's state cannot be read")


def test_dead_lettered_buildsignal_fails_the_request_frees_its_slot_and_records_no_fact() -> None:
    # The runner stays unavailable past the queue's budget for transient faults (none here).
    with make_pipeline(
        _RunnerWhoseStatusFails(), max_attempts=2, transient_retry_seconds=0
    ) as pipeline:
        request = pipeline.ingest.ingest(QUEUE)
        pipeline.wait_for(pipeline.settled(request.id))
        pipeline.idle()

        assert pipeline.state(request.id) == RequestState.FAILED
        assert pipeline.queue().in_flight == 0
        with pytest.raises(NotFound):
            pipeline.storage.facts.get(QUEUE, request.uri, "")
        assert pipeline.runner.cancellations  # its build was stopped


def test_cancelled_build_ends_cancelled_and_records_no_fact() -> None:
    with make_pipeline(FakeBuildRunner(outcome=BuildStatus.CANCELLED)) as pipeline:
        request = pipeline.ingest.ingest(QUEUE)
        pipeline.wait_for(pipeline.settled(request.id))
        pipeline.idle()
        assert pipeline.state(request.id) == RequestState.CANCELLED
        assert pipeline.queue().in_flight == 0
        with pytest.raises(NotFound):
            pipeline.storage.facts.get(QUEUE, request.uri, "")


def test_redelivered_process_and_build_messages_start_one_build(pipeline: Pipeline) -> None:
    request = pipeline.ingest.ingest(QUEUE)
    for _ in range(3):  # a poller reporting the same head again, and again
        pipeline.ingest.ingest(QUEUE)
    pipeline.wait_for(pipeline.settled(request.id))
    payload = encode(ProcessRequest(id=request.id, queue=QUEUE))
    pipeline.messaging.publish(TOPIC_PROCESS, QUEUE, payload)
    pipeline.idle()

    assert [t.request_id for t in pipeline.runner.triggers] == [request.id]
    assert pipeline.queue().in_flight == 0


def test_ingest_only_queue_admits_heads_and_publishes_nothing() -> None:
    messaging = InProcessMessaging()
    source = FakeSourceControl(["c1"], name="monorepo")
    with open_storage("memory://") as storage:
        ingest = IngestController(
            storage, QueueMap({QUEUE: source}), messaging, builds=lambda q: False
        )
        request = ingest.ingest(QUEUE)
        assert storage.queues.get(QUEUE).latest_request_id == request.id
    delivered: list[Message] = []
    messaging.subscribe(TOPIC_PROCESS, delivered.append)
    messaging.start()
    messaging.stop(timeout=TIMEOUT)
    assert delivered == []


@pytest.mark.parametrize("payload", [b"not json", b"{}", b'{"id": 1}'])
def test_process_malformed_payload_raises_permanent_failure(payload: bytes) -> None:
    with open_storage("memory://") as storage:
        controller = ProcessController(storage, QueueMap({}), InProcessMessaging())
        with pytest.raises(PermanentFailure, match="malformed"):
            controller.handle(Message(TOPIC_PROCESS, QUEUE, payload, 1))


def test_process_missing_request_raises_permanent_failure_not_a_retry() -> None:
    with open_storage("memory://") as storage:
        controller = ProcessController(storage, QueueMap({}), InProcessMessaging())
        payload = encode(ProcessRequest(id="request/monorepo/main/9", queue=QUEUE))
        with pytest.raises(PermanentFailure, match="named by a process message"):
            controller.handle(Message(TOPIC_PROCESS, QUEUE, payload, 1))


class _RunnerWithOneId(FakeBuildRunner):
    def trigger(self, request_id: str, base_uri: str | None, head_uri: str) -> str:
        super().trigger(request_id, base_uri, head_uri)
        return "the-only-id"


def test_build_id_that_another_request_holds_fails_the_request_instead_of_deciding_it() -> None:
    with make_pipeline(_RunnerWithOneId(), max_attempts=2) as pipeline:
        first = pipeline.ingest.ingest(QUEUE)
        pipeline.wait_for(pipeline.settled(first.id))
        pipeline.source.push("c2")
        second = pipeline.ingest.ingest(QUEUE)
        pipeline.wait_for(pipeline.settled(second.id))
        pipeline.idle()

        assert pipeline.state(second.id) == RequestState.FAILED
        assert pipeline.storage.builds.get("the-only-id").request_id == first.id
        assert pipeline.queue().in_flight == 0


def test_buildsignal_looks_again_soon_then_less_often_up_to_the_poll_interval() -> None:
    runner = FakeBuildRunner(outcome=BuildStatus.RUNNING)
    with open_storage("memory://") as storage:
        controller = BuildSignalController(
            storage, RunnerMap({QUEUE: runner}), InProcessMessaging(), poll_interval=0.1
        )
        request = Request("request/monorepo/main/1", QUEUE, "u", RequestState.PROCESSING, 1)
        storage.requests.create(request)
        build_id = runner.trigger(request.id, None, request.uri)
        storage.builds.create(Build(build_id, request.id, BuildStatus.ACCEPTED, "", 1))
        payload = encode(BuildSignal(build_id=build_id, request_id=request.id, queue=QUEUE))
        delays = []
        for _ in range(6):
            with pytest.raises(Hold) as held:
                controller.handle(Message(TOPIC_BUILDSIGNAL, QUEUE, payload, 1))
            delays.append(held.value.delay)
    assert delays == [0.01, 0.02, 0.04, 0.08, 0.1, 0.1]


def test_a_head_that_waited_for_a_slot_is_superseded_when_a_newer_head_is_admitted_past_a_gap(
    pipeline: Pipeline,
) -> None:
    # 250 and 251 were admitted; 252 waited for a slot (its delivery is gone); 253 was
    # superseded by its own delivery (it swept nothing); 254 was drawn by a caller that lost its
    # claim; 255, the head, is admitted now.
    def stored(number: int, state: RequestState, strategy: BuildStrategy) -> Request:
        request = Request(
            f"request/{QUEUE}/{number}", QUEUE, f"fake://monorepo/c{number}", state, 1, strategy
        )
        pipeline.storage.requests.create(request)
        return request

    stored(250, RequestState.SUCCEEDED, BuildStrategy.FULL)
    stored(251, RequestState.SUCCEEDED, BuildStrategy.INCREMENTAL)
    waited = stored(252, RequestState.ACCEPTED, BuildStrategy.UNSET)
    stored(253, RequestState.SUPERSEDED, BuildStrategy.UNSET)
    pipeline.source.push("c255")
    head = stored(255, RequestState.ACCEPTED, BuildStrategy.UNSET)
    pipeline.storage.queues.create(Queue(QUEUE, latest_request_id=head.id))
    pipeline.messaging.publish(
        TOPIC_PROCESS, QUEUE, encode(ProcessRequest(id=head.id, queue=QUEUE))
    )
    pipeline.wait_for(pipeline.settled(head.id))

    assert pipeline.state(waited.id) == RequestState.SUPERSEDED
