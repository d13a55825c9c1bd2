"""The Redis backend's queues, builds and facts, and the request's pipeline fields, on a real
server: the key layout, the stored values, the round trips, the compare-and-set script."""

from __future__ import annotations

import dataclasses
import json
import struct
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis
import redis.connection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stovepipe_redis import KeyLayout, RedisBackend
from stovepipe_redis.backend import (
    COMPARE_AND_SET,
    encode_build,
    encode_fact,
    encode_queue,
)

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
    open_storage,
)
from stovepipe.storage.limits import MAX_CREATED_AT, MAX_VERSION

_text = st.text(st.characters(exclude_categories=["Cs"]))  # any code point but lone surrogates
# Hypothesis examples against the server share one fixture (and so one key prefix).
_on_the_server = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _queue(name: str = "monorepo/main", version: int = 1, **fields: object) -> Queue:
    return Queue(name, version=version, **fields)  # type: ignore[arg-type]


def _build(build_id: str = "build/1", version: int = 1, log: str = "", **fields: object) -> Build:
    values: dict[str, object] = {"request_id": "request/q/1", "status": BuildStatus.ACCEPTED}
    values.update(fields)
    return Build(build_id, log=log, version=version, **values)  # type: ignore[arg-type]


def _fact(queue: str = "q", uri: str = "git://r/main/0", project: str = "") -> Fact:
    return Fact(queue, uri, project, 0.25, "request/q/1", 1764439245.123456)


def _bits(value: float) -> bytes:
    """The float's IEEE 754 bits: equal bits, the very same float (-0.0 is not 0.0)."""
    return struct.pack("<d", value)


# --- round trips -----------------------------------------------------------------------------


def test_round_trips_queues_builds_facts_one_per_operation(
    storage: Storage, round_trips: Callable[[], int]
) -> None:
    storage.counter.next("warm up the pool and load the script")
    with pytest.raises(VersionMismatch):  # loads the script on this server, if it lacked it
        storage.queues.update(_queue("absent"), old_version=1, new_version=2)
    round_trips()
    operations: list[tuple[str, Callable[[], object]]] = [
        ("queues.create", lambda: storage.queues.create(_queue())),
        ("queues.get", lambda: storage.queues.get("monorepo/main")),
        ("queues.update", lambda: storage.queues.update(_queue(), old_version=1, new_version=2)),
        ("builds.create", lambda: storage.builds.create(_build())),
        ("builds.get", lambda: storage.builds.get("build/1")),
        ("builds.update", lambda: storage.builds.update(_build(), old_version=1, new_version=2)),
        ("facts.create", lambda: storage.facts.create(_fact())),
        ("facts.get", lambda: storage.facts.get("q", "git://r/main/0", "")),
    ]
    for name, operation in operations:
        operation()
        assert round_trips() == 1, name
    refused: list[tuple[str, type[Exception], Callable[[], object]]] = [
        ("queues.create", AlreadyExists, lambda: storage.queues.create(_queue())),
        ("queues.get", NotFound, lambda: storage.queues.get("absent")),
        (
            "queues.update",
            VersionMismatch,
            lambda: storage.queues.update(_queue(), old_version=1, new_version=3),
        ),
        (
            "queues.update",
            VersionMismatch,
            lambda: storage.queues.update(_queue("absent"), old_version=1, new_version=2),
        ),
        ("builds.create", AlreadyExists, lambda: storage.builds.create(_build())),
        ("builds.get", NotFound, lambda: storage.builds.get("absent")),
        (
            "builds.update",
            VersionMismatch,
            lambda: storage.builds.update(_build(), old_version=1, new_version=3),
        ),
        (
            "builds.update",
            VersionMismatch,
            lambda: storage.builds.update(_build("absent"), old_version=1, new_version=2),
        ),
        ("facts.create", AlreadyExists, lambda: storage.facts.create(_fact())),
        ("facts.get", NotFound, lambda: storage.facts.get("q", "git://r/main/0", "absent")),
    ]
    for name, error, operation in refused:
        with pytest.raises(error):
            operation()
        assert round_trips() == 1, name


def test_update_reloads_a_script_the_server_lost_with_one_more_round_trip(
    private_server: str, round_trips: Callable[[], int]
) -> None:
    # Flushing the script cache is what a restarted or failed-over server looks like; done on
    # a private server, as it would also empty the cache of every other user of a shared one.
    raw = redis.Redis.from_url(private_server, socket_timeout=5, socket_connect_timeout=5)
    try:
        with open_storage(f"{private_server}?prefix={uuid.uuid4().hex}:") as storage:
            storage.queues.create(_queue())
            storage.builds.create(_build())
            raw.script_flush()
            round_trips()
            storage.queues.update(_queue(in_flight=1), old_version=1, new_version=2)
            assert round_trips() == 2  # EVALSHA answered NOSCRIPT, then EVAL
            assert raw.script_exists(COMPARE_AND_SET.sha.decode()) == [True]
            round_trips()  # not the backend's
            storage.builds.update(_build(log="l"), old_version=1, new_version=2)
            assert round_trips() == 1  # EVAL cached it: EVALSHA alone again
            assert storage.queues.get("monorepo/main") == _queue(in_flight=1, version=2)
            assert storage.builds.get("build/1") == _build(log="l", version=2)
            raw.script_flush()
            round_trips()
            with pytest.raises(VersionMismatch):
                storage.queues.update(_queue(), old_version=1, new_version=2)
            assert round_trips() == 2
    finally:
        raw.flushdb()
        raw.close()


def test_update_script_is_given_its_one_key_as_redis_cluster_requires(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Cluster routes a script by the keys it is given; a script that touched a key it was
    # not given could reach into another slot. The script touches KEYS[1] alone, and that is
    # the very key the item was created under.
    source = COMPARE_AND_SET.source.decode()
    assert "KEYS[1]" in source and "KEYS[2]" not in source
    sent: list[tuple[object, ...]] = []
    send: Callable[..., None] = redis.connection.Connection.send_command

    def recording_send(self: redis.connection.Connection, *args: object, **kwargs: Any) -> None:
        sent.append(args)
        send(self, *args, **kwargs)

    monkeypatch.setattr(redis.connection.Connection, "send_command", recording_send)
    storage.queues.create(_queue())
    storage.queues.update(_queue(), old_version=1, new_version=2)
    storage.builds.create(_build())
    storage.builds.update(_build(), old_version=1, new_version=2)
    create_queue, update_queue, create_build, update_build = sent
    for create, update in ((create_queue, update_queue), (create_build, update_build)):
        assert create[0] == "SET"
        assert update[:3] == ("EVALSHA", COMPARE_AND_SET.sha, b"1")
        assert update[3] == create[1]


# --- compare-and-set -------------------------------------------------------------------------


def test_update_compares_versions_exactly_even_beyond_a_double(storage: Storage) -> None:
    # As doubles (Lua's numbers) 2**63-1 and 2**63-2 are equal; as stored text they are not.
    top = MAX_VERSION
    storage.queues.create(_queue(version=top))
    storage.builds.create(_build(version=top))
    with pytest.raises(VersionMismatch):
        storage.queues.update(_queue(in_flight=1), old_version=top - 1, new_version=1)
    with pytest.raises(VersionMismatch):
        storage.builds.update(_build(log="l"), old_version=top - 1, new_version=1)
    assert storage.queues.get("monorepo/main") == _queue(version=top)
    storage.queues.update(_queue(in_flight=1), old_version=top, new_version=top - 1)
    storage.builds.update(_build(log="l"), old_version=top, new_version=top - 1)
    assert storage.queues.get("monorepo/main") == _queue(in_flight=1, version=top - 1)
    assert storage.builds.get("build/1") == _build(log="l", version=top - 1)


def test_update_compares_the_whole_version_never_a_prefix_of_its_digits(
    storage: Storage,
) -> None:
    storage.queues.create(_queue(version=12))
    storage.builds.create(_build(version=12))
    for old_version in (1, 2, 120, 21):
        with pytest.raises(VersionMismatch):
            storage.queues.update(_queue(in_flight=1), old_version=old_version, new_version=13)
        with pytest.raises(VersionMismatch):
            storage.builds.update(_build(log="l"), old_version=old_version, new_version=13)
    assert storage.queues.get("monorepo/main") == _queue(version=12)
    assert storage.builds.get("build/1") == _build(version=12)


_MARKER_LIKE = st.sampled_from(
    ['","request_id":"x"}', ',"request_id":', '\\",\\"request_id\\":', '"}', "\\", '"']
)


@_on_the_server
@given(
    request_id=st.one_of(_text, _MARKER_LIKE),
    log=st.one_of(_text, _MARKER_LIKE),
    new_log=st.one_of(_text, _MARKER_LIKE),
    other_request_id=_text,
)
def test_build_update_keeps_the_stored_request_id_whatever_the_texts_hold(
    storage: Storage, request_id: str, log: str, new_log: str, other_request_id: str
) -> None:
    build_id = uuid.uuid4().hex
    storage.builds.create(_build(build_id, request_id=request_id, log=log))
    changed = _build(
        build_id, request_id=other_request_id, status=BuildStatus.RUNNING, log=new_log, version=7
    )
    storage.builds.update(changed, old_version=1, new_version=2)
    assert storage.builds.get(build_id) == _build(
        build_id, request_id=request_id, status=BuildStatus.RUNNING, log=new_log, version=2
    )


# --- key layout ------------------------------------------------------------------------------


def _split_fact_key(layout_prefix: bytes, key: bytes) -> tuple[str, str, str]:
    """Invert KeyLayout.fact by reading each length, then that many bytes: if this always
    recovers the three parts, no two facts share a key."""
    rest = key.removeprefix(layout_prefix + b"fact:")
    parts = []
    for n in range(3):
        length, colon, rest = rest.partition(b":")
        assert colon == b":" and length == b"%d" % int(length)
        parts.append(rest[: int(length)].decode())
        rest = rest[int(length) :]
        if n < 2:
            assert rest[:1] == b":"
            rest = rest[1:]
    assert rest == b""
    return parts[0], parts[1], parts[2]


@given(queue=_text, uri=_text, project=_text)
def test_key_layout_fact_key_is_unambiguous_for_any_strings(
    queue: str, uri: str, project: str
) -> None:
    key = KeyLayout("p:").fact(queue, uri, project)
    assert _split_fact_key(b"p:", key) == (queue, uri, project)


@given(name=_text)
def test_key_layout_queue_and_build_keys_are_the_tag_then_the_exact_name(name: str) -> None:
    layout = KeyLayout("p:")
    assert layout.queue(name) == b"p:queue:" + name.encode()
    assert layout.build(name) == b"p:build:" + name.encode()


@given(first=st.tuples(_text, _text, _text), second=st.tuples(_text, _text, _text))
def test_key_layout_distinct_facts_never_share_a_key(
    first: tuple[str, str, str], second: tuple[str, str, str]
) -> None:
    layout = KeyLayout("p:")
    assert (layout.fact(*first) == layout.fact(*second)) == (first == second)


_TRICKY_TRIPLES = [
    ("a:b", "c", ""),
    ("a", "b:c", ""),
    ("a", "b", ":c"),
    ("a", "b:", "c"),
    ("a:", "b", "c"),
    ("", "a:b", "c"),
    ("", "", "a:b:c"),
    ("a:b:c", "", ""),
    ("1:a", "1:b", "1:c"),
    ("1", "a:1:b:1", "c"),
    ("a\x00b", "c", ""),
    ("a", "\x00", "b"),
    ("a", "b", "\x00"),
    ("a", "b\x00", ""),
    ("a/b", "c", ""),
    ("a", "b/c", ""),
    ("A", "b", ""),
    ("a", "b", " "),
    ("é", "b", ""),
    ("e\u0301", "b", ""),
    ("🚂", "b", "c"),
]


def test_key_layout_distinct_facts_never_share_a_key_on_the_server(storage: Storage) -> None:
    assert len(set(_TRICKY_TRIPLES)) == len(_TRICKY_TRIPLES)
    for n, (queue, uri, project) in enumerate(_TRICKY_TRIPLES):
        storage.facts.create(Fact(queue, uri, project, 0.5, f"request/{n}", float(n)))
    for n, (queue, uri, project) in enumerate(_TRICKY_TRIPLES):
        fact = storage.facts.get(queue, uri, project)
        assert (fact.request_id, fact.created_at) == (f"request/{n}", float(n))


def test_key_layout_writes_the_documented_keys(
    storage: Storage, raw: redis.Redis, prefix: str
) -> None:
    storage.queues.create(_queue("a:b"))
    storage.builds.create(_build("a:b"))
    storage.facts.create(_fact("a:b", "é", ""))
    expected = {b"queue:a:b", b"build:a:b", b"fact:3:a:b:2:\xc3\xa9:0:"}
    stored = {key.removeprefix(prefix.encode()) for key in raw.scan_iter(match=f"{prefix}*")}
    assert stored == expected


# --- stored values ---------------------------------------------------------------------------


def _compact(fields: dict[str, object]) -> bytes:
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()


@given(
    latest=_text,
    green_uri=_text,
    green_id=_text,
    in_flight=st.integers(0, 2**63 - 1),
    version=st.integers(1, MAX_VERSION),
)
def test_stored_queue_is_compact_json_beginning_with_its_version(
    latest: str, green_uri: str, green_id: str, in_flight: int, version: int
) -> None:
    queue = Queue("q", latest, green_uri, green_id, in_flight, version=99)
    assert encode_queue(queue, version) == _compact(
        {
            "version": version,
            "latest_request_id": latest,
            "last_green_uri": green_uri,
            "last_green_request_id": green_id,
            "in_flight": in_flight,
        }
    )


@given(request_id=_text, status=_text, log=_text, version=st.integers(1, MAX_VERSION))
def test_stored_build_is_compact_json_with_its_request_id_last(
    request_id: str, status: str, log: str, version: int
) -> None:
    assert encode_build(request_id, status, log, version) == _compact(
        {"version": version, "status": status, "log": log, "request_id": request_id}
    )


_degrees = st.one_of(st.floats(0.0, 1.0), st.just(-0.0), st.sampled_from([5e-324, 1 - 2**-53]))
_times = st.one_of(st.floats(0.0, MAX_CREATED_AT), st.sampled_from([MAX_CREATED_AT, 0.1 + 0.2]))


@given(degree=_degrees, request_id=_text, created_at=_times)
def test_stored_fact_is_compact_json_and_its_floats_read_back_bit_for_bit(
    degree: float, request_id: str, created_at: float
) -> None:
    value = encode_fact(degree, request_id, created_at)
    assert value == _compact({"degree": degree, "request_id": request_id, "created_at": created_at})
    fields = json.loads(value)
    assert (_bits(fields["degree"]), _bits(fields["created_at"])) == (
        _bits(degree),
        _bits(created_at),
    )


@_on_the_server
@given(degree=_degrees, created_at=_times)
def test_fact_floats_read_back_as_the_very_same_float_from_the_server(
    backend: RedisBackend, degree: float, created_at: float
) -> None:
    # The backend itself: open_storage stores -0.0 as 0.0 before a backend sees it.
    uri = uuid.uuid4().hex
    backend.facts.create(Fact("q", uri, "", degree, "request/q/1", created_at))
    fact = backend.facts.get("q", uri, "")
    assert type(fact.degree) is float and type(fact.created_at) is float
    assert (_bits(fact.degree), _bits(fact.created_at)) == (_bits(degree), _bits(created_at))


def test_fact_given_ints_reads_back_floats(storage: Storage) -> None:
    storage.facts.create(Fact("q", "u", "", 1, "request/q/1", 2**53))
    fact = storage.facts.get("q", "u", "")
    assert (type(fact.degree), fact.degree) == (float, 1.0)
    assert (type(fact.created_at), fact.created_at) == (float, 2.0**53)


def test_request_stored_before_the_pipeline_fields_reads_them_as_defaults(
    storage: Storage, raw: redis.Redis, prefix: str
) -> None:
    old = b'{"queue":"q","uri":"git://r/main/0","state":"accepted","version":3}'
    raw.set(f"{prefix}request:request/q/1".encode(), old)
    assert storage.requests.get("request/q/1") == Request(
        "request/q/1", "q", "git://r/main/0", RequestState.ACCEPTED, 3, BuildStrategy.UNSET, ""
    )
    changed = Request(
        "request/q/1",
        "q",
        "git://r/main/1",
        RequestState.PROCESSING,
        9,
        BuildStrategy.INCREMENTAL,
        "git://r/main/0",
    )
    storage.requests.update(changed, old_version=3, new_version=4)
    assert storage.requests.get("request/q/1") == Request(
        "request/q/1",
        "q",
        "git://r/main/1",
        RequestState.PROCESSING,
        4,
        BuildStrategy.INCREMENTAL,
        "git://r/main/0",
    )


# --- errors ----------------------------------------------------------------------------------


def test_unknown_status_or_build_strategy_read_back_is_a_storage_error(
    storage: Storage, raw: redis.Redis, prefix: str
) -> None:
    raw.set(
        f"{prefix}build:build/1".encode(),
        b'{"version":1,"status":"from the future","log":"","request_id":"r"}',
    )
    raw.set(
        f"{prefix}request:request/q/1".encode(),
        b'{"queue":"q","uri":"u","state":"accepted","build_strategy":"from the future",'
        b'"base_uri":"","version":1}',
    )
    with pytest.raises(StorageError, match="unknown status") as got:
        storage.builds.get("build/1")
    assert type(got.value) is StorageError
    with pytest.raises(StorageError, match="unknown build_strategy") as got:
        storage.requests.get("request/q/1")
    assert type(got.value) is StorageError


@pytest.mark.parametrize(
    "value",
    [
        b"not json",
        b"\xff not utf-8",
        b"[1]",
        b'{"version":1}',
        b'{"version":"1","latest_request_id":"","last_green_uri":"",'
        b'"last_green_request_id":"","in_flight":0}',
        b'{"version":1,"latest_request_id":"","last_green_uri":"",'
        b'"last_green_request_id":"","in_flight":0.0}',
    ],
)
def test_a_foreign_value_under_a_queue_build_or_fact_key_is_a_storage_error(
    storage: Storage, raw: redis.Redis, prefix: str, value: bytes
) -> None:
    raw.set(f"{prefix}queue:q".encode(), value)
    raw.set(f"{prefix}build:b".encode(), value)
    raw.set(f"{prefix}fact:1:q:1:u:0:".encode(), value)
    refused: list[Callable[[], object]] = [
        lambda: storage.queues.get("q"),
        lambda: storage.builds.get("b"),
        lambda: storage.facts.get("q", "u", ""),
    ]
    if not value.startswith(b'{"version":1,'):
        # A value that does not begin like a stored one is no version to compare.
        refused += [
            lambda: storage.queues.update(_queue("q"), old_version=1, new_version=2),
            lambda: storage.builds.update(_build("b"), old_version=1, new_version=2),
        ]
    for operation in refused:
        with pytest.raises(StorageError) as got:
            operation()
        assert type(got.value) is StorageError
    assert raw.get(f"{prefix}queue:q".encode()) == value
    assert raw.get(f"{prefix}build:b".encode()) == value


def test_a_build_value_without_its_request_id_is_never_overwritten(
    storage: Storage, raw: redis.Redis, prefix: str
) -> None:
    lost_tail = b'{"version":1,"status":"accepted","log":""}'
    raw.set(f"{prefix}build:b".encode(), lost_tail)
    with pytest.raises(StorageError) as got:
        storage.builds.update(_build("b"), old_version=1, new_version=2)
    assert type(got.value) is StorageError
    assert raw.get(f"{prefix}build:b".encode()) == lost_tail


def test_a_key_of_another_type_is_a_storage_error_and_the_connection_stays_usable(
    storage: Storage, raw: redis.Redis, prefix: str
) -> None:
    for key in ("queue:q", "build:b", "fact:1:q:1:u:0:"):
        raw.rpush(f"{prefix}{key}".encode(), b"a list")
    refused: list[Callable[[], object]] = [
        lambda: storage.queues.create(_queue("q")),  # the key exists: AlreadyExists
        lambda: storage.queues.get("q"),
        lambda: storage.queues.update(_queue("q"), old_version=1, new_version=2),
        lambda: storage.builds.get("b"),
        lambda: storage.builds.update(_build("b"), old_version=1, new_version=2),
        lambda: storage.facts.get("q", "u", ""),
    ]
    for operation in refused:
        with pytest.raises(StorageError):
            operation()
    storage.queues.create(_queue("fresh"))
    storage.queues.update(_queue("fresh", in_flight=1), old_version=1, new_version=2)
    assert storage.queues.get("fresh").in_flight == 1


# --- races -----------------------------------------------------------------------------------


def test_update_script_is_atomic_16_racing_compare_and_set_loops_count_exactly_16(
    storage: Storage,
) -> None:
    storage.queues.create(_queue())
    barrier = threading.Barrier(16)
    errors: list[BaseException] = []

    def take_a_slot() -> None:
        try:
            barrier.wait(timeout=10)
            for _ in range(10_000):
                stored = storage.queues.get("monorepo/main")
                taken = dataclasses.replace(stored, in_flight=stored.in_flight + 1)
                try:
                    storage.queues.update(
                        taken, old_version=stored.version, new_version=stored.version + 1
                    )
                    return
                except VersionMismatch:
                    continue
            raise AssertionError("never won a compare-and-set")
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=take_a_slot) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert storage.queues.get("monorepo/main") == _queue(in_flight=16, version=17)
