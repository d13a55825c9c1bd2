"""Thread-safe and atomic: real threads and processes racing, exactly one winner."""

from __future__ import annotations

import multiprocessing

import pytest

from contract_tests import workers
from contract_tests.racing import RACERS, race
from stovepipe.entity import Request, RequestState
from stovepipe.storage import AlreadyExists, Storage, VersionMismatch


def test_race_concurrent_creates_of_one_id_have_exactly_one_winner(
    storage: Storage, ns: str
) -> None:
    def create(i: int) -> Request:
        request = Request(f"{ns}/id", f"{ns}/q", f"uri-{i}", RequestState.ACCEPTED, 1)
        storage.requests.create(request)
        return request

    outcomes = race(create)
    winners = [o for o in outcomes if isinstance(o, Request)]
    assert len(winners) == 1, outcomes
    assert all(isinstance(o, AlreadyExists) for o in outcomes if o is not winners[0])
    assert storage.requests.get(f"{ns}/id") == winners[0]


def test_race_concurrent_claims_of_one_uri_have_exactly_one_winner(
    storage: Storage, ns: str
) -> None:
    def claim(i: int) -> str:
        storage.request_uris.create(f"{ns}/q", "git://head", f"id-{i}")
        return f"id-{i}"

    outcomes = race(claim)
    winners = [o for o in outcomes if isinstance(o, str)]
    assert len(winners) == 1, outcomes
    assert sum(isinstance(o, AlreadyExists) for o in outcomes) == RACERS - 1
    assert storage.request_uris.get_id_by_uri(f"{ns}/q", "git://head") == winners[0]


def test_race_concurrent_updates_from_one_version_have_exactly_one_winner(
    storage: Storage, ns: str
) -> None:
    storage.requests.create(Request(f"{ns}/id", f"{ns}/q", "uri-0", RequestState.ACCEPTED, 1))

    def update(i: int) -> Request:
        request = Request(f"{ns}/id", f"{ns}/q", f"uri-{i}", RequestState.ACCEPTED, 1)
        storage.requests.update(request, old_version=1, new_version=2)
        return request

    outcomes = race(update)
    winners = [o for o in outcomes if isinstance(o, Request)]
    assert len(winners) == 1, outcomes
    assert sum(isinstance(o, VersionMismatch) for o in outcomes) == RACERS - 1
    stored = storage.requests.get(f"{ns}/id")
    assert (stored.uri, stored.version) == (winners[0].uri, 2)


def test_race_concurrent_counter_increments_never_repeat_or_skip(storage: Storage, ns: str) -> None:
    per_racer = 20
    outcomes = race(lambda i: [storage.counter.next(f"{ns}/c") for _ in range(per_racer)])
    assert all(isinstance(o, list) for o in outcomes), outcomes
    numbers = sorted(n for o in outcomes if isinstance(o, list) for n in o)
    assert numbers == list(range(1, RACERS * per_racer + 1)), numbers


def test_race_counter_across_processes_never_repeats_or_skips(
    storage_url: str, storage: Storage, ns: str
) -> None:
    if storage_url.startswith("memory:"):
        pytest.skip("memory:// is private to its process")
    processes, per_process = 4, 25
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        results = pool.starmap(workers.count, [(storage_url, f"{ns}/c", per_process)] * processes)
    numbers = sorted(n for result in results for n in result)
    assert numbers == list(range(1, processes * per_process + 1))
