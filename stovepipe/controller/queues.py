"""Per-queue state the pipeline's stages share: request numbers, the newest head, build slots.

Every change to a :class:`~stovepipe.entity.Queue` is a compare-and-set on its version, so
stages in several OS processes change one queue safely; each helper here re-reads and tries
again when another writer got there first, a bounded number of times.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Final

from stovepipe.entity import Queue
from stovepipe.storage import AlreadyExists, NotFound, Storage, Unavailable, VersionMismatch

MAX_CAS_ATTEMPTS: Final = 64
"""Compare-and-set rounds on one queue before giving up with ``Unavailable`` (transient)."""


def request_number(request_id: str) -> int:
    """The ``n`` of ``request/<queue>/<n>``; 0 for an empty id (no request yet).

    Raises ``ValueError`` for an id ingest did not mint.
    """
    if not request_id:
        return 0
    number = request_id.rpartition("/")[2]
    if not number.isdigit():
        raise ValueError(f"{request_id!r} is not a request id of the form request/<queue>/<n>")
    return int(number)


def request_id(queue: str, number: int) -> str:
    """The id of request ``number`` of ``queue``."""
    return f"request/{queue}/{number}"


def change_queue(storage: Storage, name: str, change: Callable[[Queue], Queue | None]) -> Queue:
    """Apply ``change`` to the stored queue ``name`` under compare-and-set; return the result.

    ``change`` gets the stored queue (a fresh one, version 1, if none is stored yet) and
    returns the new state, or ``None`` to leave it as it is. It may run several times: it
    must depend only on its argument. Raises ``Unavailable`` when other writers keep winning.
    """
    for _ in range(MAX_CAS_ATTEMPTS):
        try:
            stored = storage.queues.get(name)
        except NotFound:
            fresh = Queue(name)
            changed = change(fresh)
            try:
                storage.queues.create(changed if changed is not None else fresh)
            except AlreadyExists:
                continue  # a racer created it: change theirs
            return changed if changed is not None else fresh
        changed = change(stored)
        if changed is None:
            return stored
        try:
            storage.queues.update(
                changed, old_version=stored.version, new_version=stored.version + 1
            )
        except VersionMismatch:
            continue
        return dataclasses.replace(changed, version=stored.version + 1)
    raise Unavailable(
        f"queue {name!r} kept changing under {MAX_CAS_ATTEMPTS} attempts to change it"
    )


def stamp_latest(storage: Storage, name: str, new_request_id: str) -> Queue:
    """Make ``new_request_id`` the queue's ``latest_request_id`` unless a newer one (by request
    number) is stamped already; create the queue if absent."""

    def newer(queue: Queue) -> Queue | None:
        if request_number(queue.latest_request_id) >= request_number(new_request_id):
            return None
        return dataclasses.replace(queue, latest_request_id=new_request_id)

    return change_queue(storage, name, newer)


def take_slot(storage: Storage, name: str) -> Queue:
    """Count one more request in flight on the queue."""
    return change_queue(
        storage, name, lambda queue: dataclasses.replace(queue, in_flight=queue.in_flight + 1)
    )


def free_slot(storage: Storage, name: str) -> Queue:
    """Count one request fewer in flight on the queue, never below zero."""

    def freed(queue: Queue) -> Queue | None:
        if queue.in_flight == 0:
            return None
        return dataclasses.replace(queue, in_flight=queue.in_flight - 1)

    return change_queue(storage, name, freed)
