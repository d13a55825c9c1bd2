"""IngestController (DESIGN section 3) on the memory and SQLite backends, with fakes.

Faults are injected only by thin wrappers around a real backend's stores.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stovepipe.controller import Admission, InconsistentState, IngestController, InvalidQueue
from stovepipe.controller.ingest import DEFAULT_REPUBLISH_INTERVAL
from stovepipe.entity import Request, RequestState
from stovepipe.messaging import TOPIC_PROCESS
from stovepipe.messaging.codec import decode_process_request
from stovepipe.messaging.v1.messaging_pb2 import ProcessRequest
from stovepipe.sourcecontrol import NotFound as SourceNotFound
from stovepipe.sourcecontrol import QueueMap
from stovepipe.sourcecontrol.fake import FakeSourceControl
from stovepipe.storage import (
    AlreadyExists,
    Backend,
    BuildStore,
    Counter,
    FactStore,
    NotFound,
    QueueStore,
    RequestStore,
    RequestURIStore,
    Storage,
    Unavailable,
    open_storage,
)
from stovepipe.storage.memory import open_backend as open_memory_backend

QUEUE = "monorepo/main"


class RecordingPublisher:
    """Keeps what was published, decoded. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.published: list[tuple[str, str, ProcessRequest]] = []
        self.message_ids: list[str | None] = []

    def publish(
        self, topic: str, key: str, payload: bytes, *, message_id: str | None = None
    ) -> None:
        with self._lock:
            self.published.append((topic, key, decode_process_request(payload)))
            self.message_ids.append(message_id)


class FakeClock:
    """Seconds that pass only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclasses.dataclass
class World:
    storage: Storage
    source: FakeSourceControl
    publisher: RecordingPublisher
    controller: IngestController
    clock: FakeClock


def make_world(storage: Storage, *queues: str) -> World:
    source = FakeSourceControl(["c1"], name="monorepo")
    publisher = RecordingPublisher()
    sources = QueueMap({queue: source for queue in queues or (QUEUE,)})
    clock = FakeClock()
    controller = IngestController(storage, sources, publisher, clock=clock)
    return World(storage, source, publisher, controller, clock)


@pytest.fixture(params=["memory", "sqlite"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/stovepipe.db"


@pytest.fixture
def world(storage_url: str) -> Iterator[World]:
    with open_storage(storage_url) as storage:
        yield make_world(storage)


def stored_request_ids(storage: Storage, queue: str, up_to: int) -> list[str]:
    """The ids ``request/<queue>/1..up_to`` that have a stored row."""
    found = []
    for n in range(1, up_to + 1):
        with contextlib.suppress(NotFound):
            found.append(storage.requests.get(f"request/{queue}/{n}").id)
    return found


def test_ingest_new_head_stores_an_accepted_request_at_version_1_and_publishes_it(
    world: World,
) -> None:
    request = world.controller.ingest(QUEUE)
    expected = Request(
        "request/monorepo/main/1", QUEUE, "fake://monorepo/c1", RequestState.ACCEPTED, 1
    )
    assert request == Admission(expected.id, QUEUE, expected.uri, created=True)
    assert world.storage.requests.get(request.id) == expected
    assert world.storage.request_uris.get_id_by_uri(QUEUE, "fake://monorepo/c1") == request.id
    assert world.publisher.published == [
        (TOPIC_PROCESS, QUEUE, ProcessRequest(id=request.id, queue=QUEUE))
    ]


def test_ingest_is_idempotent_on_queue_and_uri_and_publishes_only_when_admitting(
    world: World,
) -> None:
    first = world.controller.ingest(QUEUE)
    second = world.controller.ingest(QUEUE)
    assert first.created and not second.created
    assert (second.id, second.uri) == (first.id, first.uri)
    assert [message.id for _, _, message in world.publisher.published] == [first.id]
    assert world.storage.counter.next(f"request/{QUEUE}") == 2  # the repeat minted nothing


def test_ingest_new_head_gets_the_next_number(world: World) -> None:
    assert world.controller.ingest(QUEUE).id == "request/monorepo/main/1"
    world.source.push("c2")
    assert world.controller.ingest(QUEUE).id == "request/monorepo/main/2"
    world.source.push("c3")
    third = world.controller.ingest(QUEUE)
    assert third.id == "request/monorepo/main/3"
    assert third.uri == "fake://monorepo/c3"


def test_ingest_numbers_each_queue_separately(storage_url: str) -> None:
    with open_storage(storage_url) as storage:
        world = make_world(storage, "a/main", "b/main")
        assert world.controller.ingest("a/main").id == "request/a/main/1"
        assert world.controller.ingest("b/main").id == "request/b/main/1"
        assert [key for _, key, _ in world.publisher.published] == ["a/main", "b/main"]


@pytest.mark.parametrize(
    "queue",
    ["", "q" * 201, "é" * 101, "bad\ud800surrogate", None, b"bytes"],
    ids=["empty", "201-ascii-bytes", "202-utf8-bytes", "lone-surrogate", "none", "bytes"],
)
def test_ingest_invalid_queue_raises_invalid_queue_before_any_lookup(
    world: World, queue: object
) -> None:
    with pytest.raises(InvalidQueue):
        world.controller.ingest(queue)  # type: ignore[arg-type]
    assert world.publisher.published == []


def test_ingest_queue_at_the_byte_limit_is_valid() -> None:
    queue = "é" * 100  # exactly 200 bytes
    with open_storage("memory://") as storage:
        world = make_world(storage, queue)
        assert world.controller.ingest(queue).id == f"request/{queue}/1"


def test_ingest_unknown_queue_raises_not_found_and_stores_nothing(world: World) -> None:
    with pytest.raises(SourceNotFound, match="unknown queue"):
        world.controller.ingest("monorepo/other")
    assert world.storage.counter.next("request/monorepo/other") == 1
    assert world.publisher.published == []


def test_ingest_ref_without_commits_raises_not_found(storage_url: str) -> None:
    with open_storage(storage_url) as storage:
        publisher = RecordingPublisher()
        sources = QueueMap({QUEUE: FakeSourceControl()})
        with pytest.raises(SourceNotFound):
            IngestController(storage, sources, publisher).ingest(QUEUE)


@dataclasses.dataclass
class WrappedBackend:
    """A real backend with some stores swapped for fault-injecting wrappers."""

    inner: Backend
    requests: RequestStore
    request_uris: RequestURIStore
    counter: Counter

    @property
    def queues(self) -> QueueStore:
        return self.inner.queues

    @property
    def builds(self) -> BuildStore:
        return self.inner.builds

    @property
    def facts(self) -> FactStore:
        return self.inner.facts

    def close(self) -> None:
        self.inner.close()


class AllMissURIStore:
    """Holds every racer's failed lookup until all have failed: the worst interleaving."""

    def __init__(self, inner: RequestURIStore, barrier: threading.Barrier) -> None:
        self._inner = inner
        self._barrier = barrier

    def create(self, queue: str, uri: str, request_id: str) -> None:
        self._inner.create(queue, uri, request_id)

    def get_id_by_uri(self, queue: str, uri: str) -> str:
        try:
            return self._inner.get_id_by_uri(queue, uri)
        except NotFound:
            self._barrier.wait()
            raise


@pytest.mark.parametrize(
    ("backend", "handles", "all_miss"),
    [
        ("memory", 1, False),
        ("memory", 1, True),
        ("sqlite", 1, False),
        ("sqlite", 2, False),
        ("sqlite", 2, True),
    ],
    ids=[
        "memory",
        "memory-all-miss",
        "sqlite",
        "sqlite-two-handles",
        "sqlite-two-handles-all-miss",
    ],
)
def test_ingest_race_32_threads_one_new_head_one_id_one_row_no_orphans(
    tmp_path: Path, backend: str, handles: int, all_miss: bool
) -> None:
    """32 racers ingest one new head: one id, one mapping, one row, every number but one unused.

    Two handles on one SQLite file stand for two server processes sharing it. ``all_miss``
    forces every racer past a failed lookup before any claims, so all 32 draw a number
    and race the claim; otherwise the threads interleave as the scheduler lets them.
    """
    racers = 32
    storage_url = "memory://" if backend == "memory" else f"sqlite:///{tmp_path}/stovepipe.db"
    storages = [open_storage(storage_url) for _ in range(handles)]
    if all_miss:
        lookups = threading.Barrier(racers)
        storages = [
            Storage(
                WrappedBackend(
                    storage,
                    storage.requests,
                    AllMissURIStore(storage.request_uris, lookups),
                    storage.counter,
                )
            )
            for storage in storages
        ]
    sources = QueueMap({QUEUE: FakeSourceControl(["c1"], name="monorepo")})
    publisher = RecordingPublisher()
    controllers = [IngestController(storage, sources, publisher) for storage in storages]
    start = threading.Barrier(racers)
    results: list[Admission] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def race(controller: IngestController) -> None:
        try:
            start.wait()
            request = controller.ingest(QUEUE)
            with lock:
                results.append(request)
        except BaseException as error:
            with lock:
                errors.append(error)

    threads = [
        threading.Thread(target=race, args=(controllers[n % handles],)) for n in range(racers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        storage = storages[0]
        assert errors == []
        assert len(results) == racers
        ids = {request.id for request in results}
        assert len(ids) == 1
        [winner] = ids
        # Every racer that missed the mapping drew a number; only the winner's is used.
        drawn = storage.counter.next(f"request/{QUEUE}") - 1
        assert drawn == racers if all_miss else 1 <= drawn <= racers
        assert int(winner.rsplit("/", 1)[1]) <= drawn
        assert stored_request_ids(storage, QUEUE, drawn) == [winner]
        assert storage.request_uris.get_id_by_uri(QUEUE, "fake://monorepo/c1") == winner
        # Exactly one racer wrote the row, and only it published.
        assert [request.created for request in results].count(True) == 1
        assert [message.id for _, _, message in publisher.published] == [winner]
    finally:
        for storage in storages:
            storage.close()


class InterleavingURIStore:
    """Lets a rival claim the head between this caller's lookup and its claim."""

    def __init__(self, inner: RequestURIStore, rival: Callable[[], None]) -> None:
        self._inner = inner
        self._rival: Callable[[], None] | None = rival

    def create(self, queue: str, uri: str, request_id: str) -> None:
        if self._rival is not None:
            rival, self._rival = self._rival, None
            rival()
        self._inner.create(queue, uri, request_id)

    def get_id_by_uri(self, queue: str, uri: str) -> str:
        return self._inner.get_id_by_uri(queue, uri)


class CrashingRequestStore:
    """Fails ``create`` once, as a process dying between the claim and the row would."""

    def __init__(self, inner: RequestStore) -> None:
        self._inner = inner
        self.crashes_left = 1

    def create(self, request: Request) -> None:
        if self.crashes_left:
            self.crashes_left -= 1
            raise Unavailable("connection reset")
        self._inner.create(request)

    def get(self, request_id: str) -> Request:
        return self._inner.get(request_id)

    def update(self, request: Request, *, old_version: int, new_version: int) -> None:
        self._inner.update(request, old_version=old_version, new_version=new_version)


def test_ingest_lost_race_adopts_the_winners_id_and_leaves_no_orphan_row() -> None:
    backend = open_memory_backend("memory://")
    plain = Storage(backend)
    winner = make_world(plain)

    def rival_claims() -> None:
        winner.controller.ingest(QUEUE)  # request/monorepo/main/2: claims first

    uris = InterleavingURIStore(backend.request_uris, rival_claims)
    loser = make_world(Storage(WrappedBackend(backend, backend.requests, uris, backend.counter)))
    request = loser.controller.ingest(QUEUE)
    assert request.id == "request/monorepo/main/2"
    assert not request.created
    assert stored_request_ids(plain, QUEUE, 2) == ["request/monorepo/main/2"]
    # The winner wrote the row and published it; the loser publishes nothing.
    assert [message.id for _, _, message in winner.publisher.published] == [request.id]
    assert loser.publisher.published == []


def test_ingest_heals_a_mapping_whose_row_is_missing(caplog: pytest.LogCaptureFixture) -> None:
    backend = open_memory_backend("memory://")
    crashing = CrashingRequestStore(backend.requests)
    world = make_world(
        Storage(WrappedBackend(backend, crashing, backend.request_uris, backend.counter))
    )
    with pytest.raises(Unavailable):
        world.controller.ingest(QUEUE)
    plain = Storage(backend)
    assert (
        plain.request_uris.get_id_by_uri(QUEUE, "fake://monorepo/c1") == "request/monorepo/main/1"
    )
    with pytest.raises(NotFound):
        plain.requests.get("request/monorepo/main/1")
    assert world.publisher.published == []

    healed = world.controller.ingest(QUEUE)
    expected = Request(
        "request/monorepo/main/1", QUEUE, "fake://monorepo/c1", RequestState.ACCEPTED, 1
    )
    assert healed == Admission(expected.id, QUEUE, expected.uri, created=True)
    assert plain.requests.get(healed.id) == expected
    assert [message.id for _, _, message in world.publisher.published] == [healed.id]
    assert plain.counter.next(f"request/{QUEUE}") == 2  # healing minted no new number


def test_ingest_row_created_by_a_racer_between_get_and_create_is_re_read() -> None:
    backend = open_memory_backend("memory://")
    row = Request("request/monorepo/main/1", QUEUE, "fake://monorepo/c1", RequestState.ACCEPTED, 1)

    class RacingRequestStore(CrashingRequestStore):
        def create(self, request: Request) -> None:
            self._inner.create(row)  # the racer's identical row lands first
            self._inner.create(request)

    racing = RacingRequestStore(backend.requests)
    world = make_world(
        Storage(WrappedBackend(backend, racing, backend.request_uris, backend.counter))
    )
    assert world.controller.ingest(QUEUE) == Admission(row.id, QUEUE, row.uri, created=False)


@pytest.mark.parametrize(
    "stored",
    [
        Request("request/monorepo/main/1", QUEUE, "fake://monorepo/c0", RequestState.ACCEPTED, 1),
        Request(
            "request/monorepo/main/1",
            "monorepo/other",
            "fake://monorepo/c1",
            RequestState.ACCEPTED,
            1,
        ),
    ],
    ids=["uri-differs", "queue-differs"],
)
def test_ingest_stored_request_differing_from_its_mapping_raises_inconsistent_state(
    world: World, stored: Request, caplog: pytest.LogCaptureFixture
) -> None:
    world.storage.request_uris.create(QUEUE, "fake://monorepo/c1", stored.id)
    world.storage.requests.create(stored)
    # The row is read before an id is first answered: the contradiction is found at once.
    with (
        caplog.at_level(logging.ERROR, logger="stovepipe.controller.ingest"),
        pytest.raises(InconsistentState, match="does not match the mapping"),
    ):
        world.controller.ingest(QUEUE)
    logged = caplog.text
    assert repr(stored.uri) in logged
    assert repr(stored.queue) in logged
    assert "'fake://monorepo/c1'" in logged
    assert world.publisher.published == []


def test_ingest_publish_failure_propagates_and_the_next_ingest_republishes(world: World) -> None:
    class FlakyPublisher(RecordingPublisher):
        down = True

        def publish(
            self, topic: str, key: str, payload: bytes, *, message_id: str | None = None
        ) -> None:
            if self.down:
                self.down = False
                raise ConnectionError("broker down")
            super().publish(topic, key, payload, message_id=message_id)

    publisher = FlakyPublisher()
    controller = IngestController(world.storage, QueueMap({QUEUE: world.source}), publisher)
    with pytest.raises(ConnectionError):
        controller.ingest(QUEUE)
    request = controller.ingest(QUEUE)
    assert request.id == "request/monorepo/main/1"
    assert [message.id for _, _, message in publisher.published] == [request.id]


def test_ingest_publish_lost_in_another_process_is_republished_after_the_interval(
    world: World,
) -> None:
    class DownPublisher:
        def publish(
            self, topic: str, key: str, payload: bytes, *, message_id: str | None = None
        ) -> None:
            raise ConnectionError("broker down")

    sources = QueueMap({QUEUE: world.source})
    with pytest.raises(ConnectionError):
        IngestController(world.storage, sources, DownPublisher()).ingest(QUEUE)
    # This process first sees the head unchanged: answered from the mapping, no publish.
    request = world.controller.ingest(QUEUE)
    assert request.id == "request/monorepo/main/1"
    assert world.publisher.published == []
    world.clock.now += DEFAULT_REPUBLISH_INTERVAL
    world.controller.ingest(QUEUE)
    assert [message.id for _, _, message in world.publisher.published] == [request.id]


def test_ingest_storage_unavailable_propagates() -> None:
    backend = open_memory_backend("memory://")

    class DownURIStore:
        def create(self, queue: str, uri: str, request_id: str) -> None:
            raise Unavailable("connection refused")

        def get_id_by_uri(self, queue: str, uri: str) -> str:
            raise Unavailable("connection refused")

    world = make_world(
        Storage(WrappedBackend(backend, backend.requests, DownURIStore(), backend.counter))
    )
    with pytest.raises(Unavailable):
        world.controller.ingest(QUEUE)
    assert world.publisher.published == []


def test_ingest_mapping_that_exists_by_create_but_not_by_read_raises_inconsistent_state() -> None:
    backend = open_memory_backend("memory://")

    class BrokenURIStore:
        def create(self, queue: str, uri: str, request_id: str) -> None:
            raise AlreadyExists("mapped")

        def get_id_by_uri(self, queue: str, uri: str) -> str:
            raise NotFound("not mapped")

    world = make_world(
        Storage(WrappedBackend(backend, backend.requests, BrokenURIStore(), backend.counter))
    )
    with pytest.raises(InconsistentState, match="exists by create but not by read"):
        world.controller.ingest(QUEUE)


def test_ingest_row_that_exists_by_create_but_not_by_read_raises_inconsistent_state() -> None:
    backend = open_memory_backend("memory://")

    class BrokenRequestStore(CrashingRequestStore):
        def create(self, request: Request) -> None:
            raise AlreadyExists("exists")

        def get(self, request_id: str) -> Request:
            raise NotFound("missing")

    broken = BrokenRequestStore(backend.requests)
    world = make_world(
        Storage(WrappedBackend(backend, broken, backend.request_uris, backend.counter))
    )
    with pytest.raises(InconsistentState, match="exists by create but not by read"):
        world.controller.ingest(QUEUE)
    assert world.publisher.published == []


def test_ingest_publishes_with_the_request_id_as_message_id(world: World) -> None:
    first = world.controller.ingest(QUEUE)
    world.clock.now += DEFAULT_REPUBLISH_INTERVAL  # the periodic check of a waiting head
    again = world.controller.ingest(QUEUE)
    assert first.id == again.id
    # Admission and republish carry one id: a pending copy makes the republish a no-op.
    assert world.publisher.message_ids == [first.id, first.id]


def test_ingest_republish_interval_zero_checks_at_every_ingest_cached_or_not(
    world: World,
) -> None:
    """``republish_interval = 0`` means a check at every Ingest, even of a head the cache
    does not hold (evicted, or first seen by this process)."""
    sources = QueueMap({QUEUE: world.source, "other/main": world.source})
    world.controller.ingest(QUEUE)  # admitted and published
    world.publisher.published.clear()
    controller = IngestController(
        world.storage, sources, world.publisher, cache_size=1, republish_interval=0
    )
    for _ in range(3):
        controller.ingest(QUEUE)  # not cached in this controller at first, then cached
        controller.ingest("other/main")  # evicts QUEUE's head from the one-entry cache
    republished = [message.id for _, _, message in world.publisher.published]
    assert republished.count("request/monorepo/main/1") == 3, republished


def test_ingest_a_cache_smaller_than_the_heads_polled_warns_once(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    queues = [f"q{n}/main" for n in range(3)]
    sources = QueueMap({queue: world.source for queue in queues})
    controller = IngestController(
        world.storage, sources, world.publisher, cache_size=2, clock=world.clock
    )
    with caplog.at_level(logging.WARNING, logger="stovepipe.controller.ingest"):
        for queue in queues:  # admitted: 3 heads, 2 remembered
            controller.ingest(queue)
        assert not caplog.records  # nothing polled again yet
        for _ in range(3):
            for queue in queues:  # round robin over more heads than the cache holds
                controller.ingest(queue)
    warnings = [r for r in caplog.records if "ingest_cache_size 2" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]


def test_ingest_a_cache_that_holds_every_head_polled_never_warns(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    queues = [f"q{n}/main" for n in range(3)]
    sources = QueueMap({queue: world.source for queue in queues})
    controller = IngestController(
        world.storage, sources, world.publisher, cache_size=3, clock=world.clock
    )
    with caplog.at_level(logging.WARNING, logger="stovepipe.controller.ingest"):
        for _ in range(4):
            for queue in queues:
                controller.ingest(queue)
    assert not caplog.records
