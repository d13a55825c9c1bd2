"""Limits are part of the contract: the maximum is stored, one byte more is rejected."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import cast

import pytest

from stovepipe.entity import Build, BuildStatus, BuildStrategy, Fact, Queue, Request, RequestState
from stovepipe.storage import LimitExceeded, NotFound, Storage, limits


def text_of_bytes(ns: str, size: int) -> str:
    """A string of exactly ``size`` UTF-8 bytes, unique to the test, with 4-byte characters."""
    head = ns + "😀" * ((size - len(ns)) // 8)
    return head + "x" * (size - len(head.encode()))


def test_limits_value_at_the_maximum_length_is_stored(storage: Storage, ns: str) -> None:
    request = Request(
        id=text_of_bytes(ns, limits.MAX_REQUEST_ID_BYTES),
        queue=text_of_bytes(ns, limits.MAX_QUEUE_BYTES),
        uri=text_of_bytes(ns, limits.MAX_URI_BYTES),
        state=RequestState.ACCEPTED,
        version=limits.MAX_VERSION,
    )
    assert len(request.id.encode()) == limits.MAX_REQUEST_ID_BYTES
    storage.requests.create(request)
    assert storage.requests.get(request.id) == request
    storage.request_uris.create(request.queue, request.uri, request.id)
    assert storage.request_uris.get_id_by_uri(request.queue, request.uri) == request.id
    domain = text_of_bytes(ns, limits.MAX_COUNTER_DOMAIN_BYTES)
    assert storage.counter.next(domain) == 1
    chosen = dataclasses.replace(
        request,
        state=RequestState.PROCESSING,
        build_strategy=BuildStrategy.INCREMENTAL,
        base_uri=text_of_bytes(ns + "base", limits.MAX_URI_BYTES),
    )
    storage.requests.update(chosen, old_version=limits.MAX_VERSION, new_version=1)
    assert storage.requests.get(request.id) == dataclasses.replace(chosen, version=1)


def test_limits_queue_with_every_field_at_its_maximum_is_stored(storage: Storage, ns: str) -> None:
    queue = Queue(
        name=text_of_bytes(ns, limits.MAX_QUEUE_BYTES),
        latest_request_id=text_of_bytes(ns + "latest", limits.MAX_REQUEST_ID_BYTES),
        last_green_uri=text_of_bytes(ns + "green", limits.MAX_URI_BYTES),
        last_green_request_id=text_of_bytes(ns + "green", limits.MAX_REQUEST_ID_BYTES),
        in_flight=limits.MAX_IN_FLIGHT,
        version=limits.MAX_VERSION,
    )
    storage.queues.create(queue)
    assert storage.queues.get(queue.name) == queue
    changed = dataclasses.replace(
        queue,
        latest_request_id=text_of_bytes(ns + "newer", limits.MAX_REQUEST_ID_BYTES),
        last_green_uri=text_of_bytes(ns + "greener", limits.MAX_URI_BYTES),
        last_green_request_id=text_of_bytes(ns + "greener", limits.MAX_REQUEST_ID_BYTES),
    )
    storage.queues.update(changed, old_version=limits.MAX_VERSION, new_version=1)
    assert storage.queues.get(queue.name) == dataclasses.replace(changed, version=1)


def test_limits_build_with_every_field_at_its_maximum_is_stored(storage: Storage, ns: str) -> None:
    build = Build(
        id=text_of_bytes(ns, limits.MAX_BUILD_ID_BYTES),
        request_id=text_of_bytes(ns + "request", limits.MAX_REQUEST_ID_BYTES),
        status=BuildStatus.ACCEPTED,
        log=text_of_bytes(ns + "log", limits.MAX_BUILD_LOG_BYTES),
        version=limits.MAX_VERSION,
    )
    storage.builds.create(build)
    assert storage.builds.get(build.id) == build
    changed = dataclasses.replace(
        build,
        status=BuildStatus.CANCELLED,
        log=text_of_bytes(ns + "log2", limits.MAX_BUILD_LOG_BYTES),
    )
    storage.builds.update(changed, old_version=limits.MAX_VERSION, new_version=1)
    assert storage.builds.get(build.id) == dataclasses.replace(changed, version=1)


def test_limits_fact_with_every_field_at_its_maximum_is_stored(storage: Storage, ns: str) -> None:
    fact = Fact(
        queue=text_of_bytes(ns, limits.MAX_QUEUE_BYTES),
        uri=text_of_bytes(ns, limits.MAX_URI_BYTES),
        project=text_of_bytes(ns, limits.MAX_PROJECT_BYTES),
        degree=limits.MAX_DEGREE,
        request_id=text_of_bytes(ns, limits.MAX_REQUEST_ID_BYTES),
        created_at=limits.MAX_CREATED_AT,
    )
    storage.facts.create(fact)
    assert storage.facts.get(fact.queue, fact.uri, fact.project) == fact
    # And at the other end of each range.
    low = dataclasses.replace(fact, project="", degree=limits.MIN_DEGREE, created_at=0.0)
    storage.facts.create(low)
    assert storage.facts.get(low.queue, low.uri, low.project) == low


def _over(ns: str, limit: int) -> str:
    return text_of_bytes(ns, limit + 1)


def _calls(storage: Storage, ns: str) -> dict[str, Callable[[], object]]:
    """Every operation with one argument one byte over its field's limit."""
    ok = Request(f"{ns}/id", f"{ns}/q", f"{ns}/u", RequestState.ACCEPTED, 1)
    queue = Queue(ok.queue, ok.id, ok.uri, ok.id, 1, 1)
    build = Build(f"{ns}/build", ok.id, BuildStatus.ACCEPTED, f"{ns}/log", 1)
    fact = Fact(ok.queue, ok.uri, f"{ns}/p", 0.0, ok.id, 0.0)
    long_id = _over(ns, limits.MAX_REQUEST_ID_BYTES)
    long_queue = _over(ns, limits.MAX_QUEUE_BYTES)
    long_uri = _over(ns, limits.MAX_URI_BYTES)
    long_domain = _over(ns, limits.MAX_COUNTER_DOMAIN_BYTES)
    long_build_id = _over(ns, limits.MAX_BUILD_ID_BYTES)
    long_log = _over(ns, limits.MAX_BUILD_LOG_BYTES)
    long_project = _over(ns, limits.MAX_PROJECT_BYTES)
    replace = dataclasses.replace
    return {
        "create id": lambda: storage.requests.create(
            Request(long_id, ok.queue, ok.uri, ok.state, 1)
        ),
        "create queue": lambda: storage.requests.create(
            Request(ok.id, long_queue, ok.uri, ok.state, 1)
        ),
        "create uri": lambda: storage.requests.create(
            Request(ok.id, ok.queue, long_uri, ok.state, 1)
        ),
        "get id": lambda: storage.requests.get(long_id),
        "update id": lambda: storage.requests.update(
            Request(long_id, ok.queue, ok.uri, ok.state, 1), old_version=1, new_version=2
        ),
        "update uri": lambda: storage.requests.update(
            Request(ok.id, ok.queue, long_uri, ok.state, 1), old_version=1, new_version=2
        ),
        "uri create queue": lambda: storage.request_uris.create(long_queue, ok.uri, ok.id),
        "uri create uri": lambda: storage.request_uris.create(ok.queue, long_uri, ok.id),
        "uri create id": lambda: storage.request_uris.create(ok.queue, ok.uri, long_id),
        "uri get queue": lambda: storage.request_uris.get_id_by_uri(long_queue, ok.uri),
        "uri get uri": lambda: storage.request_uris.get_id_by_uri(ok.queue, long_uri),
        "counter domain": lambda: storage.counter.next(long_domain),
        "create base_uri": lambda: storage.requests.create(replace(ok, base_uri=long_uri)),
        "update queue": lambda: storage.requests.update(
            replace(ok, queue=long_queue), old_version=1, new_version=2
        ),
        "update base_uri": lambda: storage.requests.update(
            replace(ok, base_uri=long_uri), old_version=1, new_version=2
        ),
        "queue create name": lambda: storage.queues.create(replace(queue, name=long_queue)),
        "queue create latest_request_id": lambda: storage.queues.create(
            replace(queue, latest_request_id=long_id)
        ),
        "queue create last_green_uri": lambda: storage.queues.create(
            replace(queue, last_green_uri=long_uri)
        ),
        "queue create last_green_request_id": lambda: storage.queues.create(
            replace(queue, last_green_request_id=long_id)
        ),
        "queue get name": lambda: storage.queues.get(long_queue),
        "queue update name": lambda: storage.queues.update(
            replace(queue, name=long_queue), old_version=1, new_version=2
        ),
        "queue update latest_request_id": lambda: storage.queues.update(
            replace(queue, latest_request_id=long_id), old_version=1, new_version=2
        ),
        "queue update last_green_uri": lambda: storage.queues.update(
            replace(queue, last_green_uri=long_uri), old_version=1, new_version=2
        ),
        "queue update last_green_request_id": lambda: storage.queues.update(
            replace(queue, last_green_request_id=long_id), old_version=1, new_version=2
        ),
        "build create id": lambda: storage.builds.create(replace(build, id=long_build_id)),
        "build create request_id": lambda: storage.builds.create(
            replace(build, request_id=long_id)
        ),
        "build create log": lambda: storage.builds.create(replace(build, log=long_log)),
        "build get id": lambda: storage.builds.get(long_build_id),
        "build update id": lambda: storage.builds.update(
            replace(build, id=long_build_id), old_version=1, new_version=2
        ),
        "build update request_id": lambda: storage.builds.update(
            replace(build, request_id=long_id), old_version=1, new_version=2
        ),
        "build update log": lambda: storage.builds.update(
            replace(build, log=long_log), old_version=1, new_version=2
        ),
        "fact create queue": lambda: storage.facts.create(replace(fact, queue=long_queue)),
        "fact create uri": lambda: storage.facts.create(replace(fact, uri=long_uri)),
        "fact create project": lambda: storage.facts.create(replace(fact, project=long_project)),
        "fact create request_id": lambda: storage.facts.create(replace(fact, request_id=long_id)),
        "fact get queue": lambda: storage.facts.get(long_queue, fact.uri, fact.project),
        "fact get uri": lambda: storage.facts.get(fact.queue, long_uri, fact.project),
        "fact get project": lambda: storage.facts.get(fact.queue, fact.uri, long_project),
    }


def _nothing_stored(storage: Storage, ns: str) -> None:
    """Nothing was written under the valid keys the calls of ``_calls`` carry."""
    with pytest.raises(NotFound):
        storage.requests.get(f"{ns}/id")
    with pytest.raises(NotFound):
        storage.request_uris.get_id_by_uri(f"{ns}/q", f"{ns}/u")
    with pytest.raises(NotFound):
        storage.queues.get(f"{ns}/q")
    with pytest.raises(NotFound):
        storage.builds.get(f"{ns}/build")
    with pytest.raises(NotFound):
        storage.facts.get(f"{ns}/q", f"{ns}/u", f"{ns}/p")


# Building the calls runs none of them, so their names can be read off without a storage.
OPERATIONS = list(_calls(cast(Storage, None), "ns"))


@pytest.mark.parametrize("operation", OPERATIONS)
def test_limits_one_byte_longer_is_rejected_before_the_backend(
    storage: Storage, ns: str, operation: str
) -> None:
    with pytest.raises(LimitExceeded, match="limit"):
        _calls(storage, ns)[operation]()
    _nothing_stored(storage, ns)


def test_limits_text_that_is_not_valid_unicode_is_rejected(storage: Storage, ns: str) -> None:
    with pytest.raises(LimitExceeded, match="Unicode"):
        storage.requests.get(f"{ns}\udc80")
    with pytest.raises(LimitExceeded, match="Unicode"):
        storage.request_uris.create(f"{ns}/q", "\ud800", "id")
    with pytest.raises(LimitExceeded, match="Unicode"):
        storage.queues.create(Queue(f"{ns}/q", last_green_uri="\udfff"))
    with pytest.raises(LimitExceeded, match="Unicode"):
        storage.builds.create(Build(f"{ns}/build", "id", BuildStatus.ACCEPTED, "\ud83d", 1))
    with pytest.raises(LimitExceeded, match="Unicode"):
        storage.facts.get(f"{ns}/q", f"{ns}/u", "\udc00")
    _nothing_stored(storage, ns)


@pytest.mark.parametrize("version", [0, -1, limits.MAX_VERSION + 1])
def test_limits_versions_outside_the_range_are_rejected(
    storage: Storage, ns: str, version: int
) -> None:
    request = Request(f"{ns}/id", f"{ns}/q", f"{ns}/u", RequestState.ACCEPTED, version)
    with pytest.raises(LimitExceeded):
        storage.requests.create(request)
    good = Request(f"{ns}/id", f"{ns}/q", f"{ns}/u", RequestState.ACCEPTED, 1)
    with pytest.raises(LimitExceeded):
        storage.requests.update(good, old_version=version, new_version=2)
    with pytest.raises(LimitExceeded):
        storage.requests.update(good, old_version=1, new_version=version)
    with pytest.raises(NotFound):
        storage.requests.get(good.id)


@pytest.mark.parametrize("version", [0, -1, limits.MAX_VERSION + 1])
def test_limits_queue_and_build_versions_outside_the_range_are_rejected(
    storage: Storage, ns: str, version: int
) -> None:
    queue = Queue(f"{ns}/q")
    build = Build(f"{ns}/build", f"{ns}/id", BuildStatus.ACCEPTED, "", 1)
    with pytest.raises(LimitExceeded):
        storage.queues.create(dataclasses.replace(queue, version=version))
    with pytest.raises(LimitExceeded):
        storage.builds.create(dataclasses.replace(build, version=version))
    for old, new in [(version, 2), (1, version)]:
        with pytest.raises(LimitExceeded):
            storage.queues.update(queue, old_version=old, new_version=new)
        with pytest.raises(LimitExceeded):
            storage.builds.update(build, old_version=old, new_version=new)
    _nothing_stored(storage, ns)


@pytest.mark.parametrize("in_flight", [-1, limits.MAX_IN_FLIGHT + 1])
def test_limits_in_flight_outside_0_to_its_maximum_is_rejected(
    storage: Storage, ns: str, in_flight: int
) -> None:
    queue = Queue(f"{ns}/q", in_flight=1)
    with pytest.raises(LimitExceeded, match="in_flight"):
        storage.queues.create(dataclasses.replace(queue, in_flight=in_flight))
    with pytest.raises(NotFound):
        storage.queues.get(queue.name)
    storage.queues.create(queue)
    with pytest.raises(LimitExceeded, match="in_flight"):
        storage.queues.update(
            dataclasses.replace(queue, in_flight=in_flight), old_version=1, new_version=2
        )
    assert storage.queues.get(queue.name) == queue


@pytest.mark.parametrize(
    "degree",
    # Ints too large for a float are out of range too, not an overflow.
    [
        math.nan,
        -math.nan,
        -0.1,
        1.1,
        math.nextafter(1.0, 2.0),
        -5e-324,
        math.inf,
        -math.inf,
        2,
        -(10**400),
        10**400,
    ],
)
def test_limits_degree_outside_0_to_1_is_rejected(storage: Storage, ns: str, degree: float) -> None:
    fact = Fact(f"{ns}/q", f"{ns}/u", f"{ns}/p", degree, f"{ns}/id", 0.0)
    with pytest.raises(LimitExceeded, match="degree"):
        storage.facts.create(fact)
    _nothing_stored(storage, ns)


@pytest.mark.parametrize(
    "created_at",
    [
        math.nan,
        -1.0,
        -5e-324,
        math.inf,
        -math.inf,
        math.nextafter(limits.MAX_CREATED_AT, math.inf),
        -1,
        10**400,
    ],
)
def test_limits_created_at_outside_its_range_is_rejected(
    storage: Storage, ns: str, created_at: float
) -> None:
    fact = Fact(f"{ns}/q", f"{ns}/u", f"{ns}/p", 0.0, f"{ns}/id", created_at)
    with pytest.raises(LimitExceeded, match="created_at"):
        storage.facts.create(fact)
    _nothing_stored(storage, ns)
