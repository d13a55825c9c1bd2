"""Model-based: random operation sequences give the same outcomes as the memory model."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

from stovepipe.entity import Request, RequestState
from stovepipe.storage import Storage, StorageError, open_storage

# Few distinct values, so sequences keep hitting the same keys; tricky on purpose.
NAMES = st.sampled_from(["a", "A", "a ", "a/b", "a:b", "é", "e\u0301", "😀", "\x00", ""])
VERSIONS = st.integers(min_value=1, max_value=4)


def outcome(call: Callable[[], object]) -> object:
    """What an operation did: its result, or the kind of storage error it raised."""
    try:
        return ("ok", call())
    except StorageError as error:
        return ("error", type(error).__name__)


def test_model_random_operation_sequences_match_the_memory_model(storage: Storage) -> None:
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

        @rule(name=NAMES, queue=NAMES, uri=NAMES, version=VERSIONS)
        def create(self, name: str, queue: str, uri: str, version: int) -> None:
            request = Request(self.key(name), queue, uri, RequestState.ACCEPTED, version)
            self.both(lambda s: s.requests.create(request))

        @rule(name=NAMES)
        def get(self, name: str) -> None:
            self.both(lambda s: s.requests.get(self.key(name)))

        @rule(name=NAMES, queue=NAMES, uri=NAMES, old=VERSIONS, new=VERSIONS, seen=VERSIONS)
        def update(self, name: str, queue: str, uri: str, old: int, new: int, seen: int) -> None:
            request = Request(self.key(name), queue, uri, RequestState.ACCEPTED, seen)
            self.both(lambda s: s.requests.update(request, old_version=old, new_version=new))

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
