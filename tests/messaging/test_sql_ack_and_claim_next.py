"""The SQL broker acknowledges a delivery and leases its key's next message in one transaction,
and the consumer engine runs that message next on the same worker (SQLite here; the MySQL
backend's tests count its statements too)."""

from __future__ import annotations

import contextlib
import pathlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from stovepipe.messaging import Message
from stovepipe.messaging.brokered import (
    MAX_CHAINED_DELIVERIES,
    BrokeredMessaging,
    Delivery,
    MessagingUnavailable,
)
from stovepipe.messaging.sqlqueue import SQLBroker, sqlite_broker

TIMEOUT = 20.0
# The first statement of the combined transaction: the key's lease under its new token.
COMBINED = "UPDATE stovepipe_queue_key_lease SET lease_token"
# The first statement of a plain acknowledgement's transaction.
PLAIN_ACK = "DELETE FROM stovepipe_queue_key_lease"


class _Cursor:
    def __init__(self, cursor: Any, connections: CountingConnections) -> None:
        self._cursor = cursor
        self._connections = connections

    def execute(self, statement: str, parameters: Any = None) -> Any:
        self._connections.seen(statement)
        if parameters is None:
            result = self._cursor.execute(statement)
        else:
            result = self._cursor.execute(statement, parameters)
        self._connections.done(statement)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


class CountingConnections:
    """Wraps a broker's connections: records every statement, and fails the first
    statements that start with a prefix in ``faults`` (as many times as it maps to)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self.statements: list[str] = []
        self.faults: dict[str, int] = {}
        self.unanswered_commits = 0
        self._combined_open = False  # one engine thread in these tests: one transaction

    def seen(self, statement: str) -> None:
        with self._lock:
            self.statements.append(statement)
            for prefix, left in self.faults.items():
                if left and statement.startswith(prefix):
                    self.faults[prefix] = left - 1
                    raise MessagingUnavailable(f"injected fault at {prefix!r}")

    def done(self, statement: str) -> None:
        """After ``statement`` took effect: with ``unanswered_commits`` left, a COMMIT of a
        transaction that ran the combined call's first statement fails, as one whose answer
        was lost does."""
        with self._lock:
            if statement.startswith(COMBINED):
                self._combined_open = True
            elif statement in ("COMMIT", "ROLLBACK"):
                lost = statement == "COMMIT" and self._combined_open and self.unanswered_commits
                self._combined_open = False
                if lost:
                    self.unanswered_commits -= 1
                    raise MessagingUnavailable("injected: the COMMIT's answer was lost")

    @contextlib.contextmanager
    def cursor(self) -> Iterator[_Cursor]:
        with self._inner.cursor() as cursor:
            yield _Cursor(cursor, self)

    def close(self) -> None:
        self._inner.close()

    def taken(self) -> list[str]:
        """The statements since the last call."""
        with self._lock:
            taken, self.statements = self.statements, []
        return taken


def transactions(statements: Sequence[str]) -> int:
    return sum(statement.startswith("BEGIN") for statement in statements)


def outside_transactions(statements: Sequence[str]) -> list[str]:
    """The statements run on their own, each its own round trip and commit."""
    alone, depth = [], 0
    for statement in statements:
        if statement.startswith("BEGIN"):
            depth = 1
        elif statement in ("COMMIT", "ROLLBACK"):
            depth = 0
        elif not depth:
            alone.append(statement)
    return alone


@pytest.fixture
def counted(tmp_path: pathlib.Path) -> Iterator[tuple[SQLBroker, CountingConnections]]:
    broker = sqlite_broker(f"sqlite:///{tmp_path}/queue.db", visibility_timeout=1.0)
    connections = CountingConnections(broker._connections)
    broker._connections = connections
    yield broker, connections
    broker.close()


def claim_within(broker: SQLBroker, topic: str) -> Delivery:
    deadline = time.monotonic() + TIMEOUT
    while (delivery := broker.claim([topic])) is None:
        assert time.monotonic() < deadline, "nothing to claim"
        time.sleep(0.01)
    return delivery


def test_ack_and_claim_next_is_one_transaction_where_ack_then_claim_took_two_and_a_query(
    counted: tuple[SQLBroker, CountingConnections],
) -> None:
    broker, connections = counted
    for n in range(3):
        broker.publish("t", "k", str(n).encode(), uuid.uuid4().hex)
    first = claim_within(broker, "t")
    connections.taken()

    broker.ack(first)
    second = broker.claim(["t"])
    separate = connections.taken()
    assert second is not None and second.message.payload == b"1"

    third = broker.ack_and_claim_next(second)
    combined = connections.taken()
    assert third is not None and (third.message.payload, third.message.attempt) == (b"2", 1)

    assert (transactions(separate), len(outside_transactions(separate))) == (2, 1)
    assert (transactions(combined), outside_transactions(combined)) == (1, [])
    assert len(combined) < len(separate), (combined, separate)


def test_ack_and_claim_next_does_not_take_a_backing_off_message(
    counted: tuple[SQLBroker, CountingConnections], tmp_path: pathlib.Path
) -> None:
    import sqlite3

    broker, _ = counted
    broker.publish("t", "k", b"first", uuid.uuid4().hex)
    broker.publish("t", "k", b"backing off", uuid.uuid4().hex)
    delivery = claim_within(broker, "t")
    # Only a head can back off through the broker; a row stored out of order (a late commit
    # on MySQL) can stand behind the delivery backing off: set its backoff directly.
    with contextlib.closing(sqlite3.connect(tmp_path / "queue.db", timeout=5)) as raw, raw:
        raw.execute(
            "UPDATE stovepipe_queue_message SET available_at = available_at + 3600"
            " WHERE payload = ?",
            (b"backing off",),
        )

    assert broker.ack_and_claim_next(delivery) is None
    with contextlib.closing(sqlite3.connect(tmp_path / "queue.db", timeout=5)) as raw, raw:
        (attempt,) = raw.execute("SELECT attempt FROM stovepipe_queue_message").fetchone()
        (leases,) = raw.execute("SELECT COUNT(*) FROM stovepipe_queue_key_lease").fetchone()
        raw.execute("UPDATE stovepipe_queue_message SET available_at = available_at - 3600")
    assert (attempt, leases) == (0, 0), "the backing-off message was leased, or the key kept"
    again = claim_within(broker, "t")  # the key is free: its message goes once it is due
    assert (again.message.payload, again.message.attempt) == (b"backing off", 1)


class ChainCountingBroker:
    """Proxies a broker, counting the deliveries its claims and its combined calls hand out."""

    def __init__(self, broker: SQLBroker) -> None:
        self._broker = broker
        self.claimed = 0
        self.chained = 0

    def claim(self, topics: Sequence[str]) -> Delivery | None:
        delivery = self._broker.claim(topics)
        self.claimed += delivery is not None
        return delivery

    def ack_and_claim_next(self, delivery: Delivery) -> Delivery | None:
        following = self._broker.ack_and_claim_next(delivery)
        self.chained += following is not None
        return following

    def __getattr__(self, name: str) -> Any:
        return getattr(self._broker, name)


def drained(
    broker: Any, topic: str, count: int, behaviour: Callable[[Message], None] = lambda m: None
) -> list[Message]:
    """Run a one-worker engine on ``broker`` until ``count`` messages were handled, and a
    moment more (a message handled twice would show); the messages handled, in order. Fails
    unless ``topic``'s backlog is then empty."""
    handled: list[Message] = []
    condition = threading.Condition()

    def handle(message: Message) -> None:
        behaviour(message)
        with condition:
            handled.append(message)
            condition.notify_all()

    engine = BrokeredMessaging(broker, workers=1, poll_interval=0.01, backoff_seconds=0.01)
    engine.subscribe(topic, handle)
    engine.start()
    try:
        with condition:
            assert condition.wait_for(lambda: len(handled) >= count, TIMEOUT), handled
        # The last message is handled before its acknowledgement commits.
        deadline = time.monotonic() + TIMEOUT
        while engine.backlog(topic):
            assert time.monotonic() < deadline, "the last acknowledgement never committed"
            time.sleep(0.01)
        time.sleep(0.3)  # a message handled twice would show now
    finally:
        assert engine.stop(timeout=TIMEOUT)
    return handled


def test_the_engine_runs_a_keys_next_message_from_the_acknowledgement_up_to_the_chain_bound(
    tmp_path: pathlib.Path,
) -> None:
    inner = sqlite_broker(f"sqlite:///{tmp_path}/queue.db", visibility_timeout=30.0)
    count = MAX_CHAINED_DELIVERIES + 8
    for n in range(count):
        inner.publish("t", "k", f"{n:03}".encode(), uuid.uuid4().hex)
    broker = ChainCountingBroker(inner)

    handled = drained(broker, "t", count)

    assert [m.payload for m in handled] == [f"{n:03}".encode() for n in range(count)]
    assert [m.attempt for m in handled] == [1] * count
    # One claim, then the acknowledgements lease the rest: the chain ends at its bound and
    # the worker claims afresh once.
    assert (broker.claimed, broker.chained) == (2, count - 2)


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param({COMBINED: 2}, id="rolled-back"),
        pytest.param({"COMMIT": 1}, id="committed-unanswered"),
        pytest.param({COMBINED: 1, PLAIN_ACK: 2}, id="then-ack-fails-too"),
    ],
)
def test_a_failed_ack_and_claim_next_falls_back_to_the_retrying_ack_losing_and_doubling_nothing(
    tmp_path: pathlib.Path, fault: dict[str, int]
) -> None:
    broker = sqlite_broker(f"sqlite:///{tmp_path}/queue.db", visibility_timeout=1.0)
    connections = CountingConnections(broker._connections)
    broker._connections = connections
    count = 6
    for n in range(count):
        broker.publish("t", "k", f"{n:03}".encode(), uuid.uuid4().hex)
    connections.faults = {prefix: times for prefix, times in fault.items() if prefix != "COMMIT"}
    connections.unanswered_commits = 1 if "COMMIT" in fault else 0

    handled = drained(broker, "t", count)

    assert [m.payload for m in handled] == [f"{n:03}".encode() for n in range(count)], (
        "a message lost, doubled or out of order"
    )
    assert all(left == 0 for left in connections.faults.values()), "a fault never hit"
    assert connections.unanswered_commits == 0, "the COMMIT fault never hit"
    if "COMMIT" in fault:
        # The next message, leased by the call whose answer was lost, went again once its
        # lease ran out, counted as a second delivery.
        assert [m.attempt for m in handled] == [1, 2] + [1] * (count - 2)
    else:
        # Each acknowledgement took effect in the end (else the message had gone again).
        assert [m.attempt for m in handled] == [1] * count


def test_the_engine_does_not_chain_when_the_broker_only_acknowledges() -> None:
    from stovepipe.messaging.inprocess import MemoryBroker

    class Counting(MemoryBroker):
        claimed = 0

        def claim(self, topics: Sequence[str]) -> Delivery | None:
            delivery = super().claim(topics)
            self.claimed += delivery is not None
            return delivery

    broker = Counting()
    for n in range(5):
        broker.publish("t", "k", str(n).encode(), uuid.uuid4().hex)
    handled = drained(broker, "t", 5)
    assert [m.payload for m in handled] == [str(n).encode() for n in range(5)]
    assert broker.claimed == 5, "each message claimed: the memory broker combines nothing"
