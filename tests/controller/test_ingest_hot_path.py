"""The poller's common case, an unchanged head: what it may cost (DESIGN section 3).

An unchanged head is answered from its ``(queue, uri)`` mapping and its row: two storage
reads, none once the controller has seen the head, no write and no publish beyond the
admitting call's, except one check per republish interval while the request is still
accepted. Storage calls are counted by a proxy around a real backend's stores.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stovepipe.controller import IngestController
from stovepipe.controller.ingest import DEFAULT_REPUBLISH_INTERVAL
from stovepipe.entity import RequestState
from stovepipe.messaging.codec import decode_process_request
from stovepipe.messaging.v1.messaging_pb2 import ProcessRequest
from stovepipe.sourcecontrol import QueueMap
from stovepipe.sourcecontrol.fake import FakeSourceControl
from stovepipe.storage import NotFound, Storage, Unavailable, open_storage

QUEUE = "monorepo/main"
STORES = ("requests", "request_uris", "counter", "queues", "builds", "facts")


class RecordingPublisher:
    """Keeps what was published, decoded. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.published: list[tuple[str, str, ProcessRequest]] = []

    def publish(
        self, topic: str, key: str, payload: bytes, *, message_id: str | None = None
    ) -> None:
        with self._lock:
            self.published.append((topic, key, decode_process_request(payload)))


class FakeClock:
    """Seconds that pass only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingStore:
    """Forwards every call to ``inner``, recording ``(store, method)`` in ``calls``."""

    def __init__(self, inner: object, name: str, calls: list[tuple[str, str]]) -> None:
        self._inner = inner
        self._name = name
        self._calls = calls

    def __getattr__(self, attribute: str) -> Any:
        value = getattr(self._inner, attribute)
        if attribute.startswith("_") or not callable(value):
            return value

        def counted(*args: Any, **kwargs: Any) -> Any:
            self._calls.append((self._name, attribute))
            return value(*args, **kwargs)

        return counted


def counting(storage: Storage) -> tuple[Storage, list[tuple[str, str]]]:
    """``storage`` with every store call recorded, in place; and the record."""
    calls: list[tuple[str, str]] = []
    for name in STORES:
        setattr(storage, name, CountingStore(getattr(storage, name), name, calls))
    return storage, calls


@pytest.fixture(params=["memory", "sqlite"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/stovepipe.db"
    with open_storage(url) as opened:
        yield opened


def controller(
    storage: Storage,
    source: FakeSourceControl,
    publisher: RecordingPublisher,
    clock: FakeClock,
    *queues: str,
    cache_size: int = 64,
) -> IngestController:
    sources = QueueMap({queue: source for queue in queues or (QUEUE,)})
    return IngestController(storage, sources, publisher, clock=clock, cache_size=cache_size)


def test_unchanged_head_costs_two_storage_reads_and_no_write_then_none_once_cached(
    storage: Storage,
) -> None:
    source, clock = FakeSourceControl(["c1"], name="monorepo"), FakeClock()
    admitting = RecordingPublisher()
    admitted = controller(storage, source, admitting, clock).ingest(QUEUE)
    # Another server process, which has not seen this head yet.
    storage, calls = counting(storage)
    publisher = RecordingPublisher()
    other = controller(storage, source, publisher, clock)
    assert other.ingest(QUEUE).id == admitted.id
    assert calls == [("request_uris", "get_id_by_uri"), ("requests", "get")]
    calls.clear()
    for _ in range(10):
        assert other.ingest(QUEUE).id == admitted.id
    assert calls == []
    assert publisher.published == []
    assert len(admitting.published) == 1


def test_unchanged_head_evicted_from_the_cache_costs_two_storage_reads(storage: Storage) -> None:
    source, clock, publisher = (
        FakeSourceControl(["c1"], name="monorepo"),
        FakeClock(),
        RecordingPublisher(),
    )
    ingest = controller(storage, source, publisher, clock, "a/main", "b/main", cache_size=1)
    first = ingest.ingest("a/main")
    ingest.ingest("b/main")  # pushes a/main's head out of the one-entry cache
    storage, calls = counting(storage)
    assert ingest.ingest("a/main").id == first.id
    assert calls == [("request_uris", "get_id_by_uri"), ("requests", "get")]
    assert [message.id for _, _, message in publisher.published] == [
        first.id,
        "request/b/main/1",
    ]


def test_unchanged_head_is_republished_at_most_once_per_interval_while_accepted(
    storage: Storage,
) -> None:
    source, clock, publisher = (
        FakeSourceControl(["c1"], name="monorepo"),
        FakeClock(),
        RecordingPublisher(),
    )
    ingest = controller(storage, source, publisher, clock)
    request_id = ingest.ingest(QUEUE).id
    for _ in range(20):
        ingest.ingest(QUEUE)
    clock.now += DEFAULT_REPUBLISH_INTERVAL / 2
    for _ in range(20):
        ingest.ingest(QUEUE)
    assert len(publisher.published) == 1
    clock.now += DEFAULT_REPUBLISH_INTERVAL / 2
    for _ in range(20):
        ingest.ingest(QUEUE)
    assert [message.id for _, _, message in publisher.published] == [request_id, request_id]


def test_unchanged_head_past_accepted_is_never_published_or_read_again(storage: Storage) -> None:
    source, clock, publisher = (
        FakeSourceControl(["c1"], name="monorepo"),
        FakeClock(),
        RecordingPublisher(),
    )
    ingest = controller(storage, source, publisher, clock)
    request = storage.requests.get(ingest.ingest(QUEUE).id)
    processing = dataclasses.replace(request, state=RequestState.PROCESSING, version=2)
    storage.requests.update(processing, old_version=1, new_version=2)
    storage, calls = counting(storage)
    clock.now += DEFAULT_REPUBLISH_INTERVAL
    ingest.ingest(QUEUE)
    assert calls == [("requests", "get")]  # the check
    calls.clear()
    for _ in range(3):
        clock.now += DEFAULT_REPUBLISH_INTERVAL
        ingest.ingest(QUEUE)
    assert calls == []
    assert len(publisher.published) == 1


def test_head_cache_is_bounded_under_many_heads(storage: Storage) -> None:
    source, clock, publisher = (
        FakeSourceControl(["c0"], name="monorepo"),
        FakeClock(),
        RecordingPublisher(),
    )
    ingest = controller(storage, source, publisher, clock, cache_size=8)
    for n in range(1, 101):
        source.push(f"c{n}")
        ingest.ingest(QUEUE)
        assert ingest.cached_heads() <= 8
    assert ingest.cached_heads() == 8
    assert len(publisher.published) == 100


def test_head_cache_size_below_one_is_refused() -> None:
    with open_storage("memory://") as storage, pytest.raises(ValueError, match="cache_size"):
        controller(
            storage, FakeSourceControl(["c1"]), RecordingPublisher(), FakeClock(), cache_size=0
        )


def test_racing_checks_of_one_unchanged_head_republish_it_once(storage: Storage) -> None:
    source, clock, publisher = (
        FakeSourceControl(["c1"], name="monorepo"),
        FakeClock(),
        RecordingPublisher(),
    )
    ingest = controller(storage, source, publisher, clock)
    request_id = ingest.ingest(QUEUE).id
    clock.now += DEFAULT_REPUBLISH_INTERVAL
    racers = 16
    start = threading.Barrier(racers)
    errors: list[BaseException] = []

    def race() -> None:
        try:
            start.wait(timeout=10)
            for _ in range(5):
                assert ingest.ingest(QUEUE).id == request_id
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=race) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert [message.id for _, _, message in publisher.published] == [request_id, request_id]


def test_unchanged_head_logs_nothing_above_debug(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    source, clock, publisher = (
        FakeSourceControl(["c1"], name="monorepo"),
        FakeClock(),
        RecordingPublisher(),
    )
    ingest = controller(storage, source, publisher, clock)
    with caplog.at_level(logging.DEBUG, logger="stovepipe.controller.ingest"):
        ingest.ingest(QUEUE)
        admitted = [record for record in caplog.records if record.levelno >= logging.INFO]
        caplog.clear()
        for _ in range(5):
            ingest.ingest(QUEUE)
        clock.now += DEFAULT_REPUBLISH_INTERVAL
        ingest.ingest(QUEUE)  # a check that republishes
    assert len(admitted) == 1 and "claimed" in admitted[0].getMessage()
    assert [record for record in caplog.records if record.levelno >= logging.INFO] == []
    assert any("republishing" in record.getMessage() for record in caplog.records)


def test_new_head_writes_its_minted_request_without_reading_it_first(storage: Storage) -> None:
    source, clock, publisher = (
        FakeSourceControl(["c1"], name="monorepo"),
        FakeClock(),
        RecordingPublisher(),
    )
    storage, calls = counting(storage)
    admitted = controller(storage, source, publisher, clock).ingest(QUEUE)
    assert admitted.created
    assert calls[:4] == [
        ("request_uris", "get_id_by_uri"),
        ("counter", "next"),
        ("request_uris", "create"),
        ("requests", "create"),
    ]
    assert ("requests", "get") not in calls
    assert [message.id for _, _, message in publisher.published] == [admitted.id]


def test_an_id_answered_for_a_head_first_seen_here_always_has_its_request_row(
    storage: Storage,
) -> None:
    """A mapping whose row is missing (its writer crashed between the two, or is still
    between them): another process seeing the head for the first time answers the id only
    once the row exists, so GetRequest of an id Ingest gave never says NOT_FOUND."""
    source, clock, publisher = (
        FakeSourceControl(["c1"], name="monorepo"),
        FakeClock(),
        RecordingPublisher(),
    )
    uri = source.latest()
    storage.request_uris.create(QUEUE, uri, "request/monorepo/main/7")  # no row after it
    answered = controller(storage, source, publisher, clock).ingest(QUEUE)
    assert answered.id == "request/monorepo/main/7"
    assert storage.requests.get(answered.id).state == RequestState.ACCEPTED
    assert [message.id for _, _, message in publisher.published] == [answered.id]


class FailOnceThenGatedRequests:
    """A request store whose first ``create`` fails (``Unavailable``, as a lock timeout or a
    reset connection would, after the mapping was claimed) and whose ``get`` waits for
    ``gate`` while it is closed, saying so on ``reading``."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.failures_left = 1
        self.gate = threading.Event()
        self.gate.set()
        self.reading = threading.Event()

    def create(self, request: Any) -> None:
        if self.failures_left:
            self.failures_left -= 1
            raise Unavailable("sqlite: waited 0.001 s for the write lock")
        self._inner.create(request)

    def get(self, request_id: str) -> Any:
        self.reading.set()
        assert self.gate.wait(timeout=10)
        return self._inner.get(request_id)

    def update(self, request: Any, *, old_version: int, new_version: int) -> None:
        self._inner.update(request, old_version=old_version, new_version=new_version)


def test_after_an_admission_failed_before_its_row_no_caller_is_answered_until_the_row_exists(
    storage: Storage,
) -> None:
    """The first caller claimed the head and failed writing its row. While a second caller
    checks (reads, then writes the row), a third must not be answered from the cache: the id
    would have no request yet, and would have none at all if the check failed too."""
    source, clock, publisher = (
        FakeSourceControl(["c1"], name="monorepo"),
        FakeClock(),
        RecordingPublisher(),
    )
    rows = storage.requests
    requests = FailOnceThenGatedRequests(rows)
    storage.requests = requests
    ingest = controller(storage, source, publisher, clock)
    with pytest.raises(Unavailable):
        ingest.ingest(QUEUE)
    requests.gate.clear()
    requests.reading.clear()
    answers: dict[str, tuple[str, bool]] = {}

    def call(name: str) -> None:
        request_id = ingest.ingest(QUEUE).id
        try:
            rows.get(request_id)
            answers[name] = (request_id, True)
        except NotFound:
            answers[name] = (request_id, False)

    checking = threading.Thread(target=call, args=("checking",))
    checking.start()
    assert requests.reading.wait(timeout=10)  # the check is reading the row, held at the gate
    racing = threading.Thread(target=call, args=("racing",))
    racing.start()
    racing.join(timeout=0.5)
    requests.gate.set()
    for thread in (checking, racing):
        thread.join(timeout=10)
    assert not checking.is_alive() and not racing.is_alive()
    assert answers == {
        "checking": ("request/monorepo/main/1", True),
        "racing": ("request/monorepo/main/1", True),
    }
