"""RequestStore: create, get, and the conditional update."""

from __future__ import annotations

import dataclasses

import pytest

from stovepipe.entity import BuildStrategy, Request, RequestState
from stovepipe.storage import AlreadyExists, NotFound, Storage, VersionMismatch
from stovepipe.storage.limits import MAX_VERSION


def make_request(ns: str, name: str = "r", version: int = 1) -> Request:
    return Request(
        id=f"request/{ns}/{name}",
        queue=f"{ns}/main",
        uri=f"git://origin/{ns}/main/{name}",
        state=RequestState.ACCEPTED,
        version=version,
    )


def test_create_then_get_returns_the_request(storage: Storage, ns: str) -> None:
    request = make_request(ns)
    storage.requests.create(request)
    assert storage.requests.get(request.id) == request


def test_get_of_a_missing_request_raises_not_found(storage: Storage, ns: str) -> None:
    with pytest.raises(NotFound):
        storage.requests.get(f"request/{ns}/missing")


def test_create_of_an_existing_id_raises_already_exists_and_first_writer_wins(
    storage: Storage, ns: str
) -> None:
    first = make_request(ns)
    second = Request(first.id, f"{ns}/other", "git://other", RequestState.ACCEPTED, 5)
    storage.requests.create(first)
    with pytest.raises(AlreadyExists):
        storage.requests.create(second)
    assert storage.requests.get(first.id) == first


def test_create_of_an_identical_request_again_raises_already_exists(
    storage: Storage, ns: str
) -> None:
    # A retried create is still a second create: only the first may report success.
    request = make_request(ns)
    storage.requests.create(request)
    with pytest.raises(AlreadyExists):
        storage.requests.create(dataclasses.replace(request))
    assert storage.requests.get(request.id) == request


def test_create_persists_the_given_version(storage: Storage, ns: str) -> None:
    request = make_request(ns, version=42)
    storage.requests.create(request)
    assert storage.requests.get(request.id).version == 42


def test_create_persists_build_strategy_and_base_uri(storage: Storage, ns: str) -> None:
    request = dataclasses.replace(
        make_request(ns),
        build_strategy=BuildStrategy.INCREMENTAL,
        base_uri=f"git://origin/{ns}/main/green",
    )
    storage.requests.create(request)
    assert storage.requests.get(request.id) == request


def test_update_persists_uri_and_state_and_sets_new_version(storage: Storage, ns: str) -> None:
    request = make_request(ns)
    storage.requests.create(request)
    changed = Request(request.id, request.queue, f"{request.uri}-v2", RequestState.PROCESSING, 1)
    storage.requests.update(changed, old_version=1, new_version=2)
    assert storage.requests.get(request.id) == Request(
        request.id, request.queue, changed.uri, RequestState.PROCESSING, 2
    )


def test_update_persists_build_strategy_and_base_uri(storage: Storage, ns: str) -> None:
    request = make_request(ns)
    storage.requests.create(request)
    chosen = dataclasses.replace(
        request, build_strategy=BuildStrategy.INCREMENTAL, base_uri=f"git://origin/{ns}/green"
    )
    storage.requests.update(chosen, old_version=1, new_version=2)
    assert storage.requests.get(request.id) == dataclasses.replace(chosen, version=2)
    # Set back to their empty values, they persist as such too.
    full = dataclasses.replace(request, build_strategy=BuildStrategy.FULL)
    storage.requests.update(full, old_version=2, new_version=3)
    assert storage.requests.get(request.id) == dataclasses.replace(full, version=3)
    storage.requests.update(request, old_version=3, new_version=4)
    assert storage.requests.get(request.id) == dataclasses.replace(request, version=4)


def test_update_with_a_stale_version_raises_version_mismatch_and_changes_nothing(
    storage: Storage, ns: str
) -> None:
    request = make_request(ns, version=3)
    storage.requests.create(request)
    stale = Request(
        request.id, request.queue, "git://stale", RequestState.FAILED, 2, BuildStrategy.FULL, "b"
    )
    with pytest.raises(VersionMismatch):
        storage.requests.update(stale, old_version=2, new_version=3)
    assert storage.requests.get(request.id) == request


def test_update_of_a_missing_request_is_a_version_mismatch(storage: Storage, ns: str) -> None:
    missing = make_request(ns, "missing")
    with pytest.raises(VersionMismatch):
        storage.requests.update(missing, old_version=1, new_version=2)
    with pytest.raises(NotFound):
        storage.requests.get(missing.id)


def test_update_never_changes_id_or_queue(storage: Storage, ns: str) -> None:
    request = make_request(ns)
    storage.requests.create(request)
    moved = Request(request.id, f"{ns}/elsewhere", "git://new", RequestState.ACCEPTED, 1)
    storage.requests.update(moved, old_version=1, new_version=2)
    stored = storage.requests.get(request.id)
    assert (stored.id, stored.queue, stored.uri) == (request.id, request.queue, "git://new")


def test_update_never_reads_request_version(storage: Storage, ns: str) -> None:
    request = make_request(ns)
    storage.requests.create(request)
    misleading = Request(request.id, request.queue, request.uri, RequestState.ACCEPTED, 999)
    storage.requests.update(misleading, old_version=1, new_version=2)
    assert storage.requests.get(request.id).version == 2
    with pytest.raises(VersionMismatch):
        storage.requests.update(misleading, old_version=999, new_version=1000)


def test_update_that_changes_no_value_still_succeeds_when_the_version_matches(
    storage: Storage, ns: str
) -> None:
    # Engines that count only changed rows would report this matching update as a miss.
    request = make_request(ns)
    storage.requests.create(request)
    storage.requests.update(request, old_version=1, new_version=1)
    assert storage.requests.get(request.id) == request


def test_version_arithmetic_belongs_to_the_caller(storage: Storage, ns: str) -> None:
    request = make_request(ns)
    storage.requests.create(request)
    storage.requests.update(request, old_version=1, new_version=7)
    storage.requests.update(request, old_version=7, new_version=3)
    storage.requests.update(request, old_version=3, new_version=MAX_VERSION)
    assert storage.requests.get(request.id).version == MAX_VERSION
