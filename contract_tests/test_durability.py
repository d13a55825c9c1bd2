"""Read-after-write across instances, and the Storage object's own life cycle."""

from __future__ import annotations

import dataclasses
import time

from stovepipe.entity import Build, BuildStatus, BuildStrategy, Fact, Queue, Request, RequestState
from stovepipe.storage import Capability, Storage, open_storage

from .capabilities import require


def test_read_after_write_through_a_second_instance(
    storage: Storage, storage_url: str, ns: str
) -> None:
    require(storage, Capability.DURABLE)
    request = Request(f"{ns}/id", f"{ns}/q", f"{ns}/u", RequestState.ACCEPTED, 1)
    with open_storage(storage_url) as writer:
        writer.requests.create(request)
        writer.request_uris.create(request.queue, request.uri, request.id)
        assert writer.counter.next(f"{ns}/c") == 1
        writer.requests.update(request, old_version=1, new_version=2)
    with open_storage(storage_url) as reader:
        assert reader.requests.get(request.id).version == 2
        assert reader.request_uris.get_id_by_uri(request.queue, request.uri) == request.id
        assert reader.counter.next(f"{ns}/c") == 2


def test_read_after_write_through_a_second_instance_for_queues_builds_and_facts(
    storage: Storage, storage_url: str, ns: str
) -> None:
    require(storage, Capability.DURABLE)
    request = Request(f"{ns}/id", f"{ns}/q", f"{ns}/u", RequestState.ACCEPTED, 1)
    chosen = dataclasses.replace(
        request,
        state=RequestState.PROCESSING,
        build_strategy=BuildStrategy.INCREMENTAL,
        base_uri=f"{ns}/base",
    )
    queue = Queue(f"{ns}/q", latest_request_id=request.id)
    taken = dataclasses.replace(queue, last_green_uri=f"{ns}/base", in_flight=1)
    build = Build(f"{ns}/build", request.id, BuildStatus.ACCEPTED, "", 1)
    finished = dataclasses.replace(build, status=BuildStatus.SUCCEEDED, log=f"{ns}/log")
    fact = Fact(queue.name, request.uri, "", 0.1, request.id, time.time())
    with open_storage(storage_url) as writer:
        writer.requests.create(request)
        writer.requests.update(chosen, old_version=1, new_version=2)
        writer.queues.create(queue)
        writer.queues.update(taken, old_version=1, new_version=2)
        writer.builds.create(build)
        writer.builds.update(finished, old_version=1, new_version=2)
        writer.facts.create(fact)
    with open_storage(storage_url) as reader:
        assert reader.requests.get(request.id) == dataclasses.replace(chosen, version=2)
        assert reader.queues.get(queue.name) == dataclasses.replace(taken, version=2)
        assert reader.builds.get(build.id) == dataclasses.replace(finished, version=2)
        assert reader.facts.get(fact.queue, fact.uri, fact.project) == fact


def test_read_after_write_between_two_live_instances(
    storage: Storage, storage_url: str, ns: str
) -> None:
    # Both instances stay open: a read served from what one instance remembers, instead of
    # from the shared store, shows the other's writes late or never.
    require(storage, Capability.SHARED)
    request = Request(f"{ns}/id", f"{ns}/q", f"{ns}/u", RequestState.ACCEPTED, 1)
    with open_storage(storage_url) as first, open_storage(storage_url) as second:
        first.requests.create(request)
        assert second.requests.get(request.id).version == 1
        second.requests.update(request, old_version=1, new_version=2)
        assert first.requests.get(request.id).version == 2
        first.requests.update(request, old_version=2, new_version=3)
        assert second.requests.get(request.id).version == 3
        first.request_uris.create(request.queue, request.uri, request.id)
        assert second.request_uris.get_id_by_uri(request.queue, request.uri) == request.id
        assert [first.counter.next(f"{ns}/c"), second.counter.next(f"{ns}/c")] == [1, 2]


def test_storage_is_a_context_manager_and_close_is_idempotent(storage_url: str, ns: str) -> None:
    with open_storage(storage_url) as storage:
        assert storage.counter.next(f"{ns}/c") == 1
    storage.close()
