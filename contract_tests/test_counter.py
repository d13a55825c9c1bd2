"""Counter: 1, 2, 3, ... per domain."""

from __future__ import annotations

from stovepipe.storage import Storage


def test_counter_gives_1_2_3_per_domain(storage: Storage, ns: str) -> None:
    assert [storage.counter.next(f"request/{ns}") for _ in range(5)] == [1, 2, 3, 4, 5]


def test_counter_domains_are_independent(storage: Storage, ns: str) -> None:
    assert storage.counter.next(f"{ns}/a") == 1
    assert storage.counter.next(f"{ns}/a") == 2
    assert storage.counter.next(f"{ns}/b") == 1
    assert storage.counter.next(f"{ns}/a") == 3
