"""Run one callable on many real threads released at the same instant."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import Any, TypeVar

T = TypeVar("T")

RACERS = 16
SWITCH_INTERVAL = 1e-6
"""Seconds between the interpreter's thread switches during a race (normally 0.005): so
short that an unguarded read-modify-write in Python code is interleaved in every run."""


def _yield_every_line(frame: FrameType, event: str, arg: Any) -> Any:
    """A trace function that offers the other threads a turn before every line."""
    if event == "line":
        time.sleep(0)
    return _yield_every_line


def race(
    attempt: Callable[[int], T], racers: int = RACERS, *, interleave: bool = False
) -> list[T | BaseException]:
    """Call ``attempt(i)`` on ``racers`` threads at once; return each result or exception.

    With ``interleave``, each racer offers the others a turn before every line of Python it
    runs (much slower): a read-modify-write that only a lock keeps whole is split every run,
    however loaded the machine.
    """
    barrier = threading.Barrier(racers, timeout=60)

    def run(i: int) -> T | BaseException:
        barrier.wait()
        if interleave:
            sys.settrace(_yield_every_line)
        try:
            return attempt(i)
        except Exception as error:
            return error
        finally:
            sys.settrace(None)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        with ThreadPoolExecutor(max_workers=racers) as pool:
            return list(pool.map(run, range(racers)))
    finally:
        sys.setswitchinterval(interval)
