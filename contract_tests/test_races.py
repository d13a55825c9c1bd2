"""Thread-safe and atomic: real threads and processes racing, exactly one winner."""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import multiprocessing
import queue
import time
from collections.abc import Callable

import pytest

from stovepipe.entity import Build, BuildStatus, Fact, Queue, Request, RequestState
from stovepipe.storage import AlreadyExists, Capability, Storage, VersionMismatch

from . import workers
from .capabilities import require
from .racing import RACERS, race

# How long a racer of a compare-and-set loop may keep losing before the test gives up.
CAS_DEADLINE_SECONDS = 60.0


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


LOST_UPDATE_ROUNDS = 5
"""Races from successive versions, each with the racers interleaved line by line."""


def test_race_updates_interleaved_line_by_line_never_lose_an_update(
    storage: Storage, ns: str
) -> None:
    # An update that reads the version, compares, then writes, with nothing held between,
    # lets several racers pass the comparison before any of them writes: each believes it
    # won, and all but the last write are lost. Offering the other racers a turn before
    # every line puts them all between the read and the write in every round.
    storage.requests.create(Request(f"{ns}/id", f"{ns}/q", "uri-0", RequestState.ACCEPTED, 1))
    for version in range(1, LOST_UPDATE_ROUNDS + 1):

        def update(i: int, version: int = version) -> Request:
            request = Request(f"{ns}/id", f"{ns}/q", f"uri-{i}", RequestState.ACCEPTED, 1)
            storage.requests.update(request, old_version=version, new_version=version + 1)
            return request

        outcomes = race(update, interleave=True)
        winners = [o for o in outcomes if isinstance(o, Request)]
        assert len(winners) == 1, (
            f"{len(winners)} racers all updated from version {version}: lost updates "
            "(rule: an update compares the version and writes in one atomic step)"
        )
        assert sum(isinstance(o, VersionMismatch) for o in outcomes) == RACERS - 1, outcomes
        stored = storage.requests.get(f"{ns}/id")
        assert (stored.uri, stored.version) == (winners[0].uri, version + 1)


def test_race_concurrent_creates_of_one_queue_have_exactly_one_winner(
    storage: Storage, ns: str
) -> None:
    def create(i: int) -> Queue:
        queue = Queue(f"{ns}/q", f"request/{i}", f"git://{i}", f"request/{i}", i)
        storage.queues.create(queue)
        return queue

    outcomes = race(create)
    winners = [o for o in outcomes if isinstance(o, Queue)]
    assert len(winners) == 1, outcomes
    assert sum(isinstance(o, AlreadyExists) for o in outcomes) == RACERS - 1
    assert storage.queues.get(f"{ns}/q") == winners[0]


def test_race_concurrent_creates_of_one_build_have_exactly_one_winner(
    storage: Storage, ns: str
) -> None:
    def create(i: int) -> Build:
        build = Build(f"{ns}/build", f"request/{i}", BuildStatus.ACCEPTED, f"log-{i}", 1)
        storage.builds.create(build)
        return build

    outcomes = race(create)
    winners = [o for o in outcomes if isinstance(o, Build)]
    assert len(winners) == 1, outcomes
    assert sum(isinstance(o, AlreadyExists) for o in outcomes) == RACERS - 1
    assert storage.builds.get(f"{ns}/build") == winners[0]


def test_race_concurrent_creates_of_one_fact_have_exactly_one_winner(
    storage: Storage, ns: str
) -> None:
    def create(i: int) -> Fact:
        fact = Fact(f"{ns}/q", "git://head", "", i / RACERS, f"request/{i}", time.time())
        storage.facts.create(fact)
        return fact

    outcomes = race(create)
    winners = [o for o in outcomes if isinstance(o, Fact)]
    assert len(winners) == 1, outcomes
    assert sum(isinstance(o, AlreadyExists) for o in outcomes) == RACERS - 1
    assert storage.facts.get(f"{ns}/q", "git://head", "") == winners[0]


def test_race_queue_slot_counter_of_compare_and_set_loops_ends_exactly_at_the_racer_count(
    storage: Storage, ns: str
) -> None:
    # Each racer takes one slot the way the process stage does: read, add one, write back
    # conditionally, and start over on VersionMismatch. Lost or doubled slots would show.
    storage.queues.create(Queue(f"{ns}/q"))

    def take_a_slot(i: int) -> int:
        deadline = time.monotonic() + CAS_DEADLINE_SECONDS
        while time.monotonic() < deadline:
            queue = storage.queues.get(f"{ns}/q")
            taken = dataclasses.replace(queue, in_flight=queue.in_flight + 1)
            # The stage's work between its read and its write; it also lets the other
            # racers read the same version, however fast the backend answers.
            time.sleep(0.001)
            try:
                storage.queues.update(
                    taken, old_version=queue.version, new_version=queue.version + 1
                )
            except VersionMismatch:
                continue
            return queue.version + 1
        raise TimeoutError(f"racer {i} lost every compare-and-set for {CAS_DEADLINE_SECONDS}s")

    outcomes = race(take_a_slot)
    assert all(isinstance(o, int) for o in outcomes), outcomes
    # Every successful write moved the version on by one from the one before it.
    assert sorted(o for o in outcomes if isinstance(o, int)) == list(range(2, RACERS + 2))
    stored = storage.queues.get(f"{ns}/q")
    assert (stored.in_flight, stored.version) == (RACERS, RACERS + 1)


def test_race_concurrent_updates_of_a_build_have_exactly_one_winner_per_version(
    storage: Storage, ns: str
) -> None:
    storage.builds.create(Build(f"{ns}/build", f"{ns}/id", BuildStatus.ACCEPTED, "", 1))
    for version in range(1, 4):

        def update(i: int, version: int = version) -> Build:
            build = Build(f"{ns}/build", f"{ns}/id", BuildStatus.RUNNING, f"log-{i}", version)
            storage.builds.update(build, old_version=version, new_version=version + 1)
            return build

        outcomes = race(update)
        winners = [o for o in outcomes if isinstance(o, Build)]
        assert len(winners) == 1, (version, outcomes)
        assert sum(isinstance(o, VersionMismatch) for o in outcomes) == RACERS - 1
        stored = storage.builds.get(f"{ns}/build")
        assert stored == dataclasses.replace(winners[0], version=version + 1)


COUNTER_RACE_SECONDS = 5.0
COUNTER_RACE_MOST = 200
"""Each racer draws COUNTER_RACE_MOST numbers, or as many as it can in COUNTER_RACE_SECONDS,
with the threads interleaved line by line: an unguarded read-modify-write, even in memory,
is caught in every run."""


def test_race_concurrent_counter_increments_never_repeat_or_skip(storage: Storage, ns: str) -> None:
    deadline = time.monotonic() + COUNTER_RACE_SECONDS

    def draw(i: int) -> list[int]:
        drawn: list[int] = []
        while len(drawn) < COUNTER_RACE_MOST and time.monotonic() < deadline:
            drawn.append(storage.counter.next(f"{ns}/c"))
        return drawn

    outcomes = race(draw, interleave=True)
    errors = [o for o in outcomes if not isinstance(o, list)]
    assert not errors, errors
    numbers = sorted(n for o in outcomes if isinstance(o, list) for n in o)
    repeated = sorted({n for n, m in itertools.pairwise(numbers) if n == m})
    assert not repeated, f"{len(numbers)} draws repeated {len(repeated)} numbers: {repeated[:10]}"
    assert numbers == list(range(1, len(numbers) + 1)), "the counter skipped numbers"


PROCESSES = 4


CHILD_TIMEOUT = 60.0
"""Seconds the racing processes have, all together, to report."""


def _importable(function: Callable[..., None]) -> Callable[..., None]:
    """``function`` from its module as installed, which a spawned child can import whatever
    name pytest gave this test module."""
    module_name = function.__module__.rpartition(".")[2]
    module = importlib.import_module(f"stovepipe.conformance.storage.{module_name}")
    found: Callable[..., None] = getattr(module, function.__name__)
    return found


def race_processes(storage: Storage, target: Callable[..., None], *args: object) -> list[object]:
    """Run ``target(*args, barrier, results)`` in PROCESSES fresh processes; their results.

    Fails, with the child's traceback or exit status, as soon as one child fails or dies, and
    after CHILD_TIMEOUT seconds at most.
    """
    require(storage, Capability.SHARED)
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(PROCESSES), context.Queue()
    processes = [
        context.Process(target=_importable(target), args=(*args, barrier, results))
        for _ in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    outcomes: list[object] = []
    deadline = time.monotonic() + CHILD_TIMEOUT
    try:
        while len(outcomes) < PROCESSES:
            try:
                outcome = results.get(timeout=0.2)
            except queue.Empty:
                dead = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
                assert not dead, f"a racing process died without a result: exit status {dead}"
                assert time.monotonic() < deadline, (
                    f"{len(outcomes)} of {PROCESSES} racing processes reported within "
                    f"{CHILD_TIMEOUT:.0f} s"
                )
                continue
            if isinstance(outcome, dict) and workers.FAILED in outcome:
                pytest.fail(f"a racing process failed:\n{outcome[workers.FAILED]}")
            outcomes.append(outcome)
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.exitcode is None:
                process.kill()
                process.join(timeout=10)
    assert [p.exitcode for p in processes] == [0] * PROCESSES
    return outcomes


def test_race_counter_across_processes_never_repeats_or_skips(
    storage: Storage, storage_url: str, ns: str
) -> None:
    per_process = 25
    outcomes = race_processes(storage, workers.count, storage_url, f"{ns}/c", per_process)
    numbers = sorted(n for numbers in outcomes if isinstance(numbers, list) for n in numbers)
    assert numbers == list(range(1, PROCESSES * per_process + 1))


def test_race_uri_claims_across_processes_have_exactly_one_winner(
    storage: Storage, storage_url: str, ns: str
) -> None:
    # Each process claims with its own id; exactly one id must be mapped.
    outcomes = race_processes(storage, workers.claim_own, storage_url, f"{ns}/q", "git://head")
    winners = [outcome[0] for outcome in outcomes if isinstance(outcome, tuple) and outcome[1]]
    assert len(winners) == 1, outcomes
    assert storage.request_uris.get_id_by_uri(f"{ns}/q", "git://head") == winners[0]
