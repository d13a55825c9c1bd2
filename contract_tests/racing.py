"""Run one callable on many real threads released at the same instant."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

RACERS = 16


def race(attempt: Callable[[int], T], racers: int = RACERS) -> list[T | BaseException]:
    """Call ``attempt(i)`` on ``racers`` threads at once; return each result or exception."""
    barrier = threading.Barrier(racers)

    def run(i: int) -> T | BaseException:
        barrier.wait()
        try:
            return attempt(i)
        except Exception as error:
            return error

    with ThreadPoolExecutor(max_workers=racers) as pool:
        return list(pool.map(run, range(racers)))
