"""QueueStore: create, get, and the conditional update."""

from __future__ import annotations

import dataclasses

import pytest

from stovepipe.entity import Queue
from stovepipe.storage import AlreadyExists, NotFound, Storage, VersionMismatch
from stovepipe.storage.limits import MAX_VERSION


def make_queue(ns: str, name: str = "main", version: int = 1) -> Queue:
    """A queue with every field set to a value of its own."""
    return Queue(
        name=f"{ns}/{name}",
        latest_request_id=f"request/{ns}/{name}/7",
        last_green_uri=f"git://origin/{ns}/{name}/c5",
        last_green_request_id=f"request/{ns}/{name}/5",
        in_flight=2,
        version=version,
    )


def test_queue_create_then_get_returns_the_queue_with_every_field(
    storage: Storage, ns: str
) -> None:
    queue = make_queue(ns)
    storage.queues.create(queue)
    assert storage.queues.get(queue.name) == queue


def test_queue_create_of_a_new_queue_keeps_its_empty_strings_and_zero(
    storage: Storage, ns: str
) -> None:
    # What the first ingest creates: nothing admitted, no bookmark, no slot taken.
    queue = Queue(f"{ns}/main")
    storage.queues.create(queue)
    assert storage.queues.get(queue.name) == Queue(f"{ns}/main", "", "", "", 0, 1)


def test_get_of_a_missing_queue_raises_not_found(storage: Storage, ns: str) -> None:
    with pytest.raises(NotFound):
        storage.queues.get(f"{ns}/missing")


def test_queue_create_of_an_existing_name_raises_already_exists_and_first_writer_wins(
    storage: Storage, ns: str
) -> None:
    first = make_queue(ns)
    second = Queue(first.name, "request/other/1", "git://other", "request/other/0", 9, 5)
    storage.queues.create(first)
    with pytest.raises(AlreadyExists):
        storage.queues.create(second)
    assert storage.queues.get(first.name) == first


def test_queue_create_persists_the_given_version(storage: Storage, ns: str) -> None:
    queue = make_queue(ns, version=42)
    storage.queues.create(queue)
    assert storage.queues.get(queue.name).version == 42


def test_queue_update_persists_every_mutable_field_and_sets_new_version(
    storage: Storage, ns: str
) -> None:
    queue = make_queue(ns)
    storage.queues.create(queue)
    changed = Queue(
        queue.name,
        latest_request_id=f"request/{ns}/main/8",
        last_green_uri=f"git://origin/{ns}/main/c7",
        last_green_request_id=f"request/{ns}/main/7",
        in_flight=3,
        version=1,
    )
    storage.queues.update(changed, old_version=1, new_version=2)
    assert storage.queues.get(queue.name) == dataclasses.replace(changed, version=2)


def test_queue_update_persists_fields_set_back_to_empty_and_zero(storage: Storage, ns: str) -> None:
    queue = make_queue(ns)
    storage.queues.create(queue)
    storage.queues.update(Queue(queue.name), old_version=1, new_version=2)
    assert storage.queues.get(queue.name) == Queue(queue.name, "", "", "", 0, 2)


def test_queue_update_with_a_stale_version_raises_version_mismatch_and_changes_nothing(
    storage: Storage, ns: str
) -> None:
    queue = make_queue(ns, version=3)
    storage.queues.create(queue)
    stale = Queue(queue.name, "request/stale/1", "git://stale", "request/stale/0", 5, 2)
    with pytest.raises(VersionMismatch):
        storage.queues.update(stale, old_version=2, new_version=3)
    assert storage.queues.get(queue.name) == queue


def test_queue_update_of_a_missing_queue_is_a_version_mismatch(storage: Storage, ns: str) -> None:
    missing = make_queue(ns, "missing")
    with pytest.raises(VersionMismatch):
        storage.queues.update(missing, old_version=1, new_version=2)
    with pytest.raises(NotFound):
        storage.queues.get(missing.name)


def test_queue_update_never_reads_queue_version(storage: Storage, ns: str) -> None:
    queue = make_queue(ns)
    storage.queues.create(queue)
    misleading = dataclasses.replace(queue, in_flight=3, version=999)
    storage.queues.update(misleading, old_version=1, new_version=2)
    assert storage.queues.get(queue.name) == dataclasses.replace(misleading, version=2)
    with pytest.raises(VersionMismatch):
        storage.queues.update(misleading, old_version=999, new_version=1000)


def test_queue_update_that_changes_no_value_still_succeeds_when_the_version_matches(
    storage: Storage, ns: str
) -> None:
    # Engines that count only changed rows would report this matching update as a miss.
    queue = make_queue(ns)
    storage.queues.create(queue)
    storage.queues.update(queue, old_version=1, new_version=1)
    assert storage.queues.get(queue.name) == queue


def test_queue_version_arithmetic_belongs_to_the_caller(storage: Storage, ns: str) -> None:
    queue = make_queue(ns)
    storage.queues.create(queue)
    storage.queues.update(queue, old_version=1, new_version=7)
    storage.queues.update(queue, old_version=7, new_version=3)
    storage.queues.update(queue, old_version=3, new_version=MAX_VERSION)
    assert storage.queues.get(queue.name) == dataclasses.replace(queue, version=MAX_VERSION)
