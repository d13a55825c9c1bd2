"""Run one callable on many real threads released at the same instant."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

RACERS = 16
SWITCH_INTERVAL = 1e-6
"""Seconds between the interpreter's thread switches during a race (normally 0.005): so
short that an unguarded read-modify-write in Python code is interleaved in every run."""


def race(attempt: Callable[[int], T], racers: int = RACERS) -> list[T | BaseException]:
    """Call ``attempt(i)`` on ``racers`` threads at once; return each result or exception."""
    barrier = threading.Barrier(racers)

    def run(i: int) -> T | BaseException:
        barrier.wait()
        try:
            return attempt(i)
        except Exception as error:
            return error

    interval = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        with ThreadPoolExecutor(max_workers=racers) as pool:
            return list(pool.map(run, range(racers)))
    finally:
        sys.setswitchinterval(interval)
