"""Shared timing for the benchmarks: per-operation latency, and a side-by-side table.

Benchmarks are scripts, not tests: they print figures and assert nothing.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Latency:
    """Latency of one operation over ``count`` calls, in microseconds."""

    count: int
    p50_us: float
    p99_us: float
    mean_us: float


def measure(operation: Callable[[int], object], count: int, warmup: int = 50) -> Latency:
    """Call ``operation(i)`` for i in range(count) after ``warmup`` calls; time each call."""
    for i in range(warmup):
        operation(-1 - i)
    samples = []
    for i in range(count):
        start = time.perf_counter_ns()
        operation(i)
        samples.append((time.perf_counter_ns() - start) / 1000)
    samples.sort()
    return Latency(
        count=count,
        p50_us=samples[len(samples) // 2],
        p99_us=samples[min(len(samples) - 1, int(len(samples) * 0.99))],
        mean_us=statistics.fmean(samples),
    )


def print_comparison(title: str, rows: Sequence[tuple[str, Latency, Latency]]) -> None:
    """Print each operation's latency next to the raw driver's, with the ratio of medians."""
    print(f"\n{title}")
    print(
        f"{'operation':<22}{'p50 us':>10}{'p99 us':>10}{'raw p50':>10}{'raw p99':>10}{'ratio':>8}"
    )
    for name, ours, raw in rows:
        print(
            f"{name:<22}{ours.p50_us:>10.1f}{ours.p99_us:>10.1f}"
            f"{raw.p50_us:>10.1f}{raw.p99_us:>10.1f}{ours.p50_us / raw.p50_us:>7.2f}x"
        )
