"""Functions run in child processes by the cross-process tests (they must be importable)."""

from __future__ import annotations

from stovepipe.storage import open_storage


def count(url: str, domain: str, times: int) -> list[int]:
    """Open the storage afresh in this process and take ``times`` numbers from ``domain``."""
    with open_storage(url) as storage:
        return [storage.counter.next(domain) for _ in range(times)]
