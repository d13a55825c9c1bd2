"""Functions run in child processes by the cross-process tests (they must be importable).

Each opens the storage afresh in its process, warms its connection, then waits on a shared
barrier so that the processes really hit the backend at the same moment.
"""

from __future__ import annotations

import contextlib
import os
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier

from stovepipe.storage import AlreadyExists, NotFound, Storage, open_storage


def _ready(storage: Storage, barrier: Barrier) -> None:
    with contextlib.suppress(NotFound):
        storage.requests.get("warm-up: opens the connection before the race")
    barrier.wait(timeout=60)


def count(url: str, domain: str, times: int, barrier: Barrier, results: Queue[object]) -> None:
    """Take ``times`` numbers from ``domain``; put the list on ``results``."""
    with open_storage(url) as storage:
        _ready(storage, barrier)
        results.put([storage.counter.next(domain) for _ in range(times)])


def claim_own(url: str, queue: str, uri: str, barrier: Barrier, results: Queue[object]) -> None:
    """Try to map ``(queue, uri)`` to an id naming this process; put (id, won) on ``results``."""
    request_id = f"request-of-process-{os.getpid()}"
    with open_storage(url) as storage:
        _ready(storage, barrier)
        try:
            storage.request_uris.create(queue, uri, request_id)
        except AlreadyExists:
            results.put((request_id, False))
        else:
            results.put((request_id, True))
