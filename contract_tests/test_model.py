"""Model-based: random operation sequences give the same outcomes as the memory model."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.internal.conjecture import engine
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    rule,
    run_state_machine_as_test,
)

from stovepipe.entity import Build, BuildStatus, BuildStrategy, Fact, Queue, Request, RequestState
from stovepipe.storage import Storage, StorageError, open_storage
from stovepipe.storage.limits import MAX_CREATED_AT

# Few distinct values, so sequences keep hitting the same keys; tricky on purpose.
NAMES = st.sampled_from(["a", "A", "a ", "a/b", "a:b", "é", "e\u0301", "😀", "\x00", ""])
VERSIONS = st.integers(min_value=1, max_value=4)
COUNTS = st.integers(min_value=0, max_value=3)
STATES = st.sampled_from(list(RequestState))
STRATEGIES = st.sampled_from(list(BuildStrategy))
STATUSES = st.sampled_from(list(BuildStatus))
DEGREES = st.floats(min_value=0.0, max_value=1.0)
TIMES = st.floats(min_value=0.0, max_value=MAX_CREATED_AT)
FACT_KEYS = st.tuples(NAMES, NAMES, NAMES)


def outcome(call: Callable[[], object]) -> object:
    """What an operation did: its result, or the kind of storage error it raised."""
    try:
        return ("ok", call())
    except StorageError as error:
        return ("error", type(error).__name__)


SHRINKING_SECONDS = 30
"""How long hypothesis may shrink a failing sequence before it reports the smallest found: a
slow backend's shrinking must end well within the suite's time limit per test, or the limit
would cut it off and hide the failure itself."""


def test_model_random_operation_sequences_match_the_memory_model(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    # hypothesis has no setting for it: its engine's module constant (300 s) is the budget.
    monkeypatch.setattr(engine, "MAX_SHRINKING_SECONDS", SHRINKING_SECONDS)

    class Machine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.model = open_storage("memory://")
            self.ns = uuid.uuid4().hex[:12]  # a fresh keyspace per sequence

        def both(self, operation: Callable[[Storage], object]) -> None:
            expected = outcome(lambda: operation(self.model))
            actual = outcome(lambda: operation(storage))
            assert actual == expected

        def key(self, name: str) -> str:
            return self.ns + name

        # The keys each store's creates used, so that its other operations mostly meet stored
        # values rather than missing ones.
        requests: Bundle[str] = Bundle("requests")
        queues: Bundle[str] = Bundle("queues")
        builds: Bundle[str] = Bundle("builds")
        facts: Bundle[tuple[str, str, str]] = Bundle("facts")

        # Every sequence starts with a value stored in each store, under a random key.
        @initialize(target=requests, name=NAMES, state=STATES, version=VERSIONS)
        def first_request(self, name: str, state: RequestState, version: int) -> str:
            request = Request(self.key(name), name, name, state, version)
            self.both(lambda s: s.requests.create(request))
            return name

        @initialize(target=queues, name=NAMES, version=VERSIONS)
        def first_queue(self, name: str, version: int) -> str:
            queue = Queue(self.key(name), version=version)
            self.both(lambda s: s.queues.create(queue))
            return name

        @initialize(target=builds, name=NAMES, status=STATUSES, version=VERSIONS)
        def first_build(self, name: str, status: BuildStatus, version: int) -> str:
            build = Build(self.key(name), name, status, "", version)
            self.both(lambda s: s.builds.create(build))
            return name

        @initialize(target=facts, key=FACT_KEYS, degree=DEGREES, at=TIMES)
        def first_fact(
            self, key: tuple[str, str, str], degree: float, at: float
        ) -> tuple[str, str, str]:
            queue, uri, project = key
            fact = Fact(self.key(queue), uri, project, degree, "", at)
            self.both(lambda s: s.facts.create(fact))
            return key

        @rule(
            target=requests,
            name=st.one_of(requests, NAMES),
            queue=NAMES,
            uri=NAMES,
            state=STATES,
            version=VERSIONS,
        )
        def create(self, name: str, queue: str, uri: str, state: RequestState, version: int) -> str:
            request = Request(self.key(name), queue, uri, state, version)
            self.both(lambda s: s.requests.create(request))
            return name

        @rule(name=st.one_of(requests, NAMES))
        def get(self, name: str) -> None:
            self.both(lambda s: s.requests.get(self.key(name)))

        @rule(
            name=st.one_of(requests, NAMES),
            queue=NAMES,
            uri=NAMES,
            old=VERSIONS,
            new=VERSIONS,
            seen=VERSIONS,
        )
        def update(self, name: str, queue: str, uri: str, old: int, new: int, seen: int) -> None:
            request = Request(self.key(name), queue, uri, RequestState.ACCEPTED, seen)
            self.both(lambda s: s.requests.update(request, old_version=old, new_version=new))

        @rule(
            name=st.one_of(requests, NAMES),
            state=STATES,
            strategy=STRATEGIES,
            base=NAMES,
            old=VERSIONS,
        )
        def choose_strategy(
            self, name: str, state: RequestState, strategy: BuildStrategy, base: str, old: int
        ) -> None:
            request = Request(self.key(name), "q", "u", state, old, strategy, base)
            self.both(lambda s: s.requests.update(request, old_version=old, new_version=old + 1))

        @rule(
            target=queues,
            name=st.one_of(queues, NAMES),
            latest=NAMES,
            in_flight=COUNTS,
            version=VERSIONS,
        )
        def create_queue(self, name: str, latest: str, in_flight: int, version: int) -> str:
            queue = Queue(self.key(name), latest, in_flight=in_flight, version=version)
            self.both(lambda s: s.queues.create(queue))
            return name

        @rule(name=st.one_of(queues, NAMES))
        def get_queue(self, name: str) -> None:
            self.both(lambda s: s.queues.get(self.key(name)))

        @rule(
            name=st.one_of(queues, NAMES),
            green=NAMES,
            in_flight=COUNTS,
            old=VERSIONS,
            new=VERSIONS,
            seen=VERSIONS,
        )
        def update_queue(
            self, name: str, green: str, in_flight: int, old: int, new: int, seen: int
        ) -> None:
            queue = Queue(self.key(name), green, green, green, in_flight, seen)
            self.both(lambda s: s.queues.update(queue, old_version=old, new_version=new))

        @rule(
            target=builds,
            name=st.one_of(builds, NAMES),
            request=NAMES,
            status=STATUSES,
            version=VERSIONS,
        )
        def create_build(self, name: str, request: str, status: BuildStatus, version: int) -> str:
            build = Build(self.key(name), request, status, request, version)
            self.both(lambda s: s.builds.create(build))
            return name

        @rule(name=st.one_of(builds, NAMES))
        def get_build(self, name: str) -> None:
            self.both(lambda s: s.builds.get(self.key(name)))

        @rule(
            name=st.one_of(builds, NAMES),
            log=NAMES,
            status=STATUSES,
            old=VERSIONS,
            new=VERSIONS,
            seen=VERSIONS,
        )
        def update_build(
            self, name: str, log: str, status: BuildStatus, old: int, new: int, seen: int
        ) -> None:
            build = Build(self.key(name), log, status, log, seen)
            self.both(lambda s: s.builds.update(build, old_version=old, new_version=new))

        @rule(target=facts, key=st.one_of(facts, FACT_KEYS), degree=DEGREES, at=TIMES)
        def create_fact(
            self, key: tuple[str, str, str], degree: float, at: float
        ) -> tuple[str, str, str]:
            queue, uri, project = key
            fact = Fact(self.key(queue), uri, project, degree, uri, at)
            self.both(lambda s: s.facts.create(fact))
            return key

        @rule(key=st.one_of(facts, FACT_KEYS))
        def get_fact(self, key: tuple[str, str, str]) -> None:
            queue, uri, project = key
            self.both(lambda s: s.facts.get(self.key(queue), uri, project))

        @rule(queue=NAMES, uri=NAMES, name=NAMES)
        def claim_uri(self, queue: str, uri: str, name: str) -> None:
            self.both(lambda s: s.request_uris.create(self.key(queue), uri, name))

        @rule(queue=NAMES, uri=NAMES)
        def get_id_by_uri(self, queue: str, uri: str) -> None:
            self.both(lambda s: s.request_uris.get_id_by_uri(self.key(queue), uri))

        @rule(domain=NAMES)
        def next_number(self, domain: str) -> None:
            self.both(lambda s: s.counter.next(self.key(domain)))

        def teardown(self) -> None:
            self.model.close()

    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=40,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
            database=None,
        ),
    )
