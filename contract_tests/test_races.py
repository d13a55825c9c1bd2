"""Thread-safe and atomic: real threads and processes racing, exactly one winner."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable

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


PROCESSES = 4


def race_processes(target: Callable[..., None], *args: object) -> list[object]:
    """Run ``target(*args, barrier, results)`` in PROCESSES fresh processes; their results."""
    if any(isinstance(arg, str) and arg.startswith("memory:") for arg in args):
        pytest.skip("memory:// is private to its process")
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(PROCESSES), context.Queue()
    processes = [
        context.Process(target=target, args=(*args, barrier, results)) for _ in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    return outcomes


def test_race_counter_across_processes_never_repeats_or_skips(storage_url: str, ns: str) -> None:
    per_process = 25
    outcomes = race_processes(workers.count, storage_url, f"{ns}/c", per_process)
    numbers = sorted(n for numbers in outcomes if isinstance(numbers, list) for n in numbers)
    assert numbers == list(range(1, PROCESSES * per_process + 1))


def test_race_uri_claims_across_processes_have_exactly_one_winner(
    storage: Storage, storage_url: str, ns: str
) -> None:
    # Each process claims with its own id; exactly one id must be mapped.
    outcomes = race_processes(workers.claim_own, storage_url, f"{ns}/q", "git://head")
    winners = [outcome[0] for outcome in outcomes if isinstance(outcome, tuple) and outcome[1]]
    assert len(winners) == 1, outcomes
    assert storage.request_uris.get_id_by_uri(f"{ns}/q", "git://head") == winners[0]
