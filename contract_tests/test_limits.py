"""Limits are part of the contract: the maximum is stored, one byte more is rejected."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import pytest

from stovepipe.entity import Request, RequestState
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


def _over(ns: str, limit: int) -> str:
    return text_of_bytes(ns, limit + 1)


def _calls(storage: Storage, ns: str) -> dict[str, Callable[[], object]]:
    """Every operation with one argument one byte over its field's limit."""
    ok = Request(f"{ns}/id", f"{ns}/q", f"{ns}/u", RequestState.ACCEPTED, 1)
    long_id = _over(ns, limits.MAX_REQUEST_ID_BYTES)
    long_queue = _over(ns, limits.MAX_QUEUE_BYTES)
    long_uri = _over(ns, limits.MAX_URI_BYTES)
    long_domain = _over(ns, limits.MAX_COUNTER_DOMAIN_BYTES)
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
    }


# Building the calls runs none of them, so their names can be read off without a storage.
OPERATIONS = list(_calls(cast(Storage, None), "ns"))


@pytest.mark.parametrize("operation", OPERATIONS)
def test_limits_one_byte_longer_is_rejected_before_the_backend(
    storage: Storage, ns: str, operation: str
) -> None:
    with pytest.raises(LimitExceeded, match="limit"):
        _calls(storage, ns)[operation]()
    # Nothing was written under the valid keys the call carried.
    with pytest.raises(NotFound):
        storage.requests.get(f"{ns}/id")
    with pytest.raises(NotFound):
        storage.request_uris.get_id_by_uri(f"{ns}/q", f"{ns}/u")


def test_limits_text_that_is_not_valid_unicode_is_rejected(storage: Storage, ns: str) -> None:
    with pytest.raises(LimitExceeded, match="Unicode"):
        storage.requests.get(f"{ns}\udc80")
    with pytest.raises(LimitExceeded, match="Unicode"):
        storage.request_uris.create(f"{ns}/q", "\ud800", "id")


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
