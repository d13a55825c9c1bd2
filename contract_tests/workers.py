"""Functions run in child processes by the cross-process tests (they must be importable).

Each opens the storage afresh in its process, warms its connection, then waits on a shared
barrier so that the processes really hit the backend at the same moment.
"""

from __future__ import annotations

import contextlib
import functools
import os
import traceback
from collections.abc import Callable
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from typing import ParamSpec, cast

from stovepipe.storage import AlreadyExists, NotFound, Storage, open_storage

FAILED = "failed"
"""The key of the result a worker puts instead when it raises: ``{FAILED: traceback}``."""

P = ParamSpec("P")


def _reported(work: Callable[P, None]) -> Callable[P, None]:
    """``work``, which on an exception puts the traceback on its results (its last argument)
    and breaks the barrier, so that the parent and the other racers stop at once."""

    @functools.wraps(work)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            work(*args, **kwargs)
        except BaseException:
            *_, barrier, results = args
            cast("Queue[object]", results).put({FAILED: traceback.format_exc()})
            cast(Barrier, barrier).abort()
            raise

    return run


def _ready(storage: Storage, barrier: Barrier) -> None:
    with contextlib.suppress(NotFound):
        storage.requests.get("warm-up: opens the connection before the race")
    barrier.wait(timeout=60)


@_reported
def count(url: str, domain: str, times: int, barrier: Barrier, results: Queue[object]) -> None:
    """Take ``times`` numbers from ``domain``; put the list on ``results``."""
    with open_storage(url) as storage:
        _ready(storage, barrier)
        results.put([storage.counter.next(domain) for _ in range(times)])


@_reported
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
