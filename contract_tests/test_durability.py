"""Read-after-write across instances, and the Storage object's own life cycle."""

from __future__ import annotations

import pytest

from stovepipe.entity import Request, RequestState
from stovepipe.storage import open_storage


def test_read_after_write_through_a_second_instance(storage_url: str, ns: str) -> None:
    if storage_url.startswith("memory:"):
        pytest.skip("memory:// is not durable: each instance is a new store")
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


def test_storage_is_a_context_manager_and_close_is_idempotent(storage_url: str, ns: str) -> None:
    with open_storage(storage_url) as storage:
        assert storage.counter.next(f"{ns}/c") == 1
    storage.close()
