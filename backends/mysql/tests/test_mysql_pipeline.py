"""The pipeline's stores (queues, builds, facts) and the request's new columns where MySQL and
MariaDB make the rules easy to break: one statement per operation, DOUBLE round trips, the
three-column fact key, column widths, affected-rows counting, stored values this version cannot
read, and races."""

from __future__ import annotations

import math
import random
import struct
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pymysql.cursors import Cursor
from stovepipe_mysql.options import parse_url

from stovepipe.entity import (
    Build,
    BuildStatus,
    BuildStrategy,
    Fact,
    Queue,
    Request,
    RequestState,
)
from stovepipe.storage import (
    AlreadyExists,
    NotFound,
    Storage,
    StorageError,
    VersionMismatch,
)

RACERS = 16


def unique(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4().hex}"


def race(count: int, action: Callable[[int], object]) -> list[object]:
    """Run ``action(i)`` in ``count`` threads released together; return results or exceptions."""
    barrier = threading.Barrier(count, timeout=30)
    results: list[object] = [None] * count

    def racer(i: int) -> None:
        barrier.wait()
        try:
            results[i] = action(i)
        except Exception as error:
            results[i] = error

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return results


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every statement any PyMySQL cursor executes from now on, in order."""
    executed: list[str] = []
    execute = Cursor.execute

    def counting(self: Cursor, query: str, args: Any = None) -> int:
        executed.append(query)
        return execute(self, query, args)

    monkeypatch.setattr(Cursor, "execute", counting)
    yield executed


def test_every_operation_is_one_statement(storage: Storage, statements: list[str]) -> None:
    request_id, queue, build_id = unique("request/"), unique("queue/"), unique("build/")
    stored = Request(request_id, queue, "git://r/1", RequestState.ACCEPTED, 1)
    operations: list[tuple[str, Callable[[], object]]] = [
        ("requests.create", lambda: storage.requests.create(stored)),
        ("requests.get", lambda: storage.requests.get(request_id)),
        (
            "requests.update",
            lambda: storage.requests.update(
                Request(
                    request_id,
                    queue,
                    "git://r/1",
                    RequestState.PROCESSING,
                    1,
                    BuildStrategy.INCREMENTAL,
                    "git://r/0",
                ),
                old_version=1,
                new_version=2,
            ),
        ),
        ("queues.create", lambda: storage.queues.create(Queue(queue))),
        ("queues.get", lambda: storage.queues.get(queue)),
        (
            "queues.update",
            lambda: storage.queues.update(
                Queue(queue, request_id, in_flight=1), old_version=1, new_version=2
            ),
        ),
        (
            "builds.create",
            lambda: storage.builds.create(Build(build_id, request_id, BuildStatus.ACCEPTED, "", 1)),
        ),
        ("builds.get", lambda: storage.builds.get(build_id)),
        (
            "builds.update",
            lambda: storage.builds.update(
                Build(build_id, request_id, BuildStatus.RUNNING, "log", 1),
                old_version=1,
                new_version=2,
            ),
        ),
        (
            "facts.create",
            lambda: storage.facts.create(Fact(queue, "git://r/1", "", 0.0, request_id, 1.0)),
        ),
        ("facts.get", lambda: storage.facts.get(queue, "git://r/1", "")),
        ("request_uris.create", lambda: storage.request_uris.create(queue, "u", request_id)),
        ("request_uris.get_id_by_uri", lambda: storage.request_uris.get_id_by_uri(queue, "u")),
        ("counter.next", lambda: storage.counter.next(queue)),
    ]
    for name, operation in operations:
        statements.clear()
        operation()
        assert len(statements) == 1, (name, statements)


# Bit patterns of doubles: both ends of each field's range, the smallest subnormal and normal
# numbers, values whose shortest representation has 17 digits, and random ones.
EDGE_FLOATS = [
    0.0,
    5e-324,
    2.2250738585072014e-308,
    2.225073858507201e-308,
    1.2345678901234567e-300,
    0.1,
    1 / 3,
    2 / 3,
    0.30000000000000004,
    math.nextafter(1.0, 0.0),
    1.0,
    1.5,
    1_700_000_000.123456,
    math.nextafter(2.0**53, 0.0),
    2.0**53,
]


def floats_in(low: float, high: float, count: int, seed: int) -> list[float]:
    """``count`` doubles in [low, high]: uniform in value, and uniform in bit pattern."""
    rng = random.Random(seed)
    values = [rng.uniform(low, high) for _ in range(count)]
    low_bits, high_bits = (struct.unpack("<q", struct.pack("<d", x))[0] for x in (low, high))
    values += [
        struct.unpack("<d", struct.pack("<q", rng.randint(low_bits, high_bits)))[0]
        for _ in range(count)
    ]
    return values


def test_degree_and_created_at_read_back_as_the_very_same_float(storage: Storage) -> None:
    queue = unique("queue/")
    degrees = [x for x in EDGE_FLOATS if x <= 1.0] + floats_in(0.0, 1.0, 250, seed=1)
    created = [*EDGE_FLOATS, *floats_in(0.0, 2.0**53, 250, seed=2)]
    pairs = [(degrees[i % len(degrees)], created[i % len(created)]) for i in range(len(created))]
    for n, (degree, created_at) in enumerate(pairs):
        storage.facts.create(Fact(queue, str(n), "", degree, "request/1", created_at))
    for n, (degree, created_at) in enumerate(pairs):
        read = storage.facts.get(queue, str(n), "")
        assert type(read.degree) is float and type(read.created_at) is float
        # Bit for bit, not merely ==.
        assert struct.pack("<dd", read.degree, read.created_at) == struct.pack(
            "<dd", degree, created_at
        ), (degree, created_at)


def test_integer_degree_and_created_at_read_back_as_equal_floats(storage: Storage) -> None:
    queue = unique("queue/")
    storage.facts.create(Fact(queue, "u", "", 1, "request/1", 2**53))
    read = storage.facts.get(queue, "u", "")
    assert (read.degree, read.created_at) == (1.0, 2.0**53)
    assert type(read.degree) is float and type(read.created_at) is float


# Strings a case-insensitive, accent-insensitive or PAD SPACE collation would treat as equal.
LOOKALIKES = ["key", "Key", "key ", "key\t", "key\x00", "kéy", "ke\u0301y", "k\U0001f600y"]


def test_queue_and_build_keys_compare_byte_for_byte_without_case_accent_or_pad_space_folding(
    storage: Storage,
) -> None:
    base = unique()
    for n, suffix in enumerate(LOOKALIKES):
        storage.queues.create(Queue(base + suffix, latest_request_id=f"r-{n}"))
        storage.builds.create(Build(base + suffix, f"r-{n}", BuildStatus.ACCEPTED, "", 1))
    for n, suffix in enumerate(LOOKALIKES):
        assert storage.queues.get(base + suffix).latest_request_id == f"r-{n}"
        assert storage.builds.get(base + suffix).request_id == f"r-{n}"
    with pytest.raises(NotFound):
        storage.queues.get(base + "KeY")


def test_fact_key_parts_compare_byte_for_byte_without_pad_space_folding(storage: Storage) -> None:
    queue = unique("queue/")
    for n, suffix in enumerate(LOOKALIKES):
        storage.facts.create(Fact(queue, "u", suffix, 0.0, f"p-{n}", 1.0))
        storage.facts.create(Fact(queue, "u" + suffix, "", 0.0, f"u-{n}", 1.0))
        storage.facts.create(Fact(queue + suffix, "u", "", 0.0, f"q-{n}", 1.0))
    for n, suffix in enumerate(LOOKALIKES):
        assert storage.facts.get(queue, "u", suffix).request_id == f"p-{n}"
        assert storage.facts.get(queue, "u" + suffix, "").request_id == f"u-{n}"
        assert storage.facts.get(queue + suffix, "u", "").request_id == f"q-{n}"


def test_fact_keys_with_separators_or_nul_never_share_a_row(storage: Storage) -> None:
    base = unique()
    triples = [
        (base + "a/b", "c", "d"),
        (base + "a", "b/c", "d"),
        (base + "a", "b", "c/d"),
        (base + "a\x00b", "c", "d"),
        (base + "a", "b\x00c", "d"),
        (base + "a", "b", "c\x00d"),
        (base + "a", "b", "cd"),
        (base + "a", "bc", "d"),
        (base + "ab", "c", "d"),
        (base + "a", "", "bcd"),
        (base + "a", "bcd", ""),
    ]
    for n, (queue, uri, project) in enumerate(triples):
        storage.facts.create(Fact(queue, uri, project, 0.0, f"id-{n}", float(n)))
    for n, (queue, uri, project) in enumerate(triples):
        assert storage.facts.get(queue, uri, project) == Fact(
            queue, uri, project, 0.0, f"id-{n}", float(n)
        )


def at_limit(prefix: str, size: int) -> str:
    """``size`` bytes of UTF-8 ending in a 4-byte character, so a column one byte short fails."""
    return prefix.ljust(size - 4, "x") + "\U0001f600"


def test_new_values_round_trip_exactly_at_their_byte_limits(storage: Storage) -> None:
    request = Request(
        at_limit(unique("r/"), 255),
        at_limit(unique("q"), 200),
        "u",
        RequestState.ACCEPTED,
        1,
        BuildStrategy.INCREMENTAL,
        "b" * 1020 + "\x00 \t ",
    )
    storage.requests.create(request)
    assert storage.requests.get(request.id) == request
    queue = Queue(
        at_limit(unique("q"), 200),
        at_limit("r", 255),
        at_limit("u", 1024),
        at_limit("g", 255),
        in_flight=2**63 - 1,
        version=2**63 - 1,
    )
    storage.queues.create(queue)
    assert storage.queues.get(queue.name) == queue
    build = Build(
        at_limit(unique("b"), 255),
        at_limit("r", 255),
        BuildStatus.CANCELLED,
        at_limit("l", 1024),
        2**63 - 1,
    )
    storage.builds.create(build)
    assert storage.builds.get(build.id) == build
    fact = Fact(
        at_limit(unique("q"), 200),
        at_limit("u", 1024),
        at_limit("p", 255),
        1.0,
        at_limit("r", 255),
        2.0**53,
    )
    storage.facts.create(fact)
    assert storage.facts.get(fact.queue, fact.uri, fact.project) == fact


def test_queue_and_build_updates_that_write_the_values_already_stored_still_succeed(
    storage: Storage,
) -> None:
    # Without CLIENT.FOUND_ROWS MySQL reports 0 affected rows here and a backend would
    # mistake a successful compare-and-set for a VersionMismatch.
    queue = Queue(unique("queue/"), in_flight=1, version=3)
    storage.queues.create(queue)
    storage.queues.update(queue, old_version=3, new_version=3)
    assert storage.queues.get(queue.name) == queue
    build = Build(unique("build/"), "r", BuildStatus.RUNNING, "log", 3)
    storage.builds.create(build)
    storage.builds.update(build, old_version=3, new_version=3)
    assert storage.builds.get(build.id) == build


def stored_directly(mysql_url: str, admin: Any, statement: str, args: tuple[Any, ...]) -> None:
    with admin.cursor() as cursor:
        cursor.execute(f"USE `{parse_url(mysql_url).database}`")
        cursor.execute(statement, args)


def test_stored_status_or_build_strategy_this_version_does_not_know_is_a_storage_error(
    storage: Storage, mysql_url: str, admin: Any
) -> None:
    build_id, request_id = unique("build/"), unique("request/")
    stored_directly(
        mysql_url,
        admin,
        "INSERT INTO build (id, request_id, status, log, version)"
        " VALUES (%s, 'r', 'paused', '', 1)",
        (build_id.encode(),),
    )
    stored_directly(
        mysql_url,
        admin,
        "INSERT INTO request (id, queue, uri, state, version, build_strategy, base_uri)"
        " VALUES (%s, 'q', 'u', 'accepted', 1, 'bisect', '')",
        (request_id.encode(),),
    )
    with pytest.raises(StorageError, match=f"{build_id}.*status 'paused'"):
        storage.builds.get(build_id)
    with pytest.raises(StorageError, match=f"{request_id}.*build_strategy 'bisect'"):
        storage.requests.get(request_id)


def test_stored_bytes_of_new_columns_that_are_not_utf8_are_a_storage_error_naming_the_key(
    storage: Storage, mysql_url: str, admin: Any
) -> None:
    request_id, name, build_id = unique("request/"), unique("queue/"), unique("build/")
    stored_directly(
        mysql_url,
        admin,
        "INSERT INTO request (id, queue, uri, state, version, build_strategy, base_uri)"
        " VALUES (%s, 'q', 'u', 'accepted', 1, '', X'FF')",
        (request_id.encode(),),
    )
    stored_directly(
        mysql_url,
        admin,
        "INSERT INTO queue (name, latest_request_id, last_green_uri, last_green_request_id,"
        " in_flight, version) VALUES (%s, '', X'C328', '', 0, 1)",
        (name.encode(),),
    )
    stored_directly(
        mysql_url,
        admin,
        "INSERT INTO build (id, request_id, status, log, version)"
        " VALUES (%s, 'r', 'accepted', X'80', 1)",
        (build_id.encode(),),
    )
    stored_directly(
        mysql_url,
        admin,
        "INSERT INTO fact (queue, uri, project, degree, request_id, created_at)"
        " VALUES (%s, 'u', 'p', 0, X'FE', 0)",
        (name.encode(),),
    )
    with pytest.raises(StorageError, match=f"{request_id}.*base_uri.*UTF-8"):
        storage.requests.get(request_id)
    with pytest.raises(StorageError, match=f"{name}.*last_green_uri.*UTF-8"):
        storage.queues.get(name)
    with pytest.raises(StorageError, match=f"{build_id}.*log.*UTF-8"):
        storage.builds.get(build_id)
    with pytest.raises(StorageError, match=f"{name}.*request_id.*UTF-8"):
        storage.facts.get(name, "u", "p")


@pytest.mark.parametrize("store", ["queues", "builds", "facts"])
def test_create_race_has_exactly_one_winner_among_16_threads(storage: Storage, store: str) -> None:
    key = unique("key/")
    creates: dict[str, Callable[[int], None]] = {
        "queues": lambda i: storage.queues.create(Queue(key, latest_request_id=f"r-{i}")),
        "builds": lambda i: storage.builds.create(
            Build(key, f"r-{i}", BuildStatus.ACCEPTED, "", 1)
        ),
        "facts": lambda i: storage.facts.create(Fact(key, "u", "", 0.0, f"r-{i}", float(i))),
    }
    reads: dict[str, Callable[[], str]] = {
        "queues": lambda: storage.queues.get(key).latest_request_id,
        "builds": lambda: storage.builds.get(key).request_id,
        "facts": lambda: storage.facts.get(key, "u", "").request_id,
    }
    results = race(RACERS, creates[store])
    winners = [i for i, result in enumerate(results) if result is None]
    assert len(winners) == 1
    assert all(isinstance(r, AlreadyExists) for r in results if r is not None)
    assert reads[store]() == f"r-{winners[0]}"


def test_queue_slot_counter_driven_by_16_racing_compare_and_set_loops_ends_at_16(
    storage: Storage,
) -> None:
    name = unique("queue/")
    storage.queues.create(Queue(name))

    def take_a_slot(i: int) -> int:
        for attempt in range(1, 1000):
            stored = storage.queues.get(name)
            taken = Queue(name, latest_request_id=f"r-{i}", in_flight=stored.in_flight + 1)
            try:
                storage.queues.update(
                    taken, old_version=stored.version, new_version=stored.version + 1
                )
            except VersionMismatch:
                continue
            return attempt
        raise AssertionError("no slot after 999 attempts")

    attempts = race(RACERS, take_a_slot)
    assert all(isinstance(n, int) for n in attempts), attempts
    final = storage.queues.get(name)
    assert (final.in_flight, final.version) == (RACERS, RACERS + 1)


def test_build_update_race_has_exactly_one_winner_among_16_threads(storage: Storage) -> None:
    build = Build(unique("build/"), "r", BuildStatus.RUNNING, "", 1)
    storage.builds.create(build)
    results = race(
        RACERS,
        lambda i: storage.builds.update(
            Build(build.id, "r", BuildStatus.SUCCEEDED, f"log-{i}", 1), old_version=1, new_version=2
        ),
    )
    winners = [i for i, result in enumerate(results) if result is None]
    assert len(winners) == 1
    assert all(isinstance(r, VersionMismatch) for r in results if r is not None)
    assert storage.builds.get(build.id).log == f"log-{winners[0]}"
