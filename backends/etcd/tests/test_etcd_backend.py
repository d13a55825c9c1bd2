"""The etcd backend's own promises, beyond the conformance suite: key layout, prefixes, round
trips, and the counter's compare-and-swap under contention. Against a real etcd."""

from __future__ import annotations

import dataclasses
import struct
import threading
from collections import Counter as Tally
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from stovepipe_etcd import EtcdBackend, open_backend
from stovepipe_etcd.backend import EtcdCounter
from stovepipe_etcd.client import EtcdClient
from stovepipe_etcd.etcdrpc.rpc_pb2 import PutRequest, RangeRequest, RequestOp, TxnRequest

from stovepipe.entity import (
    Build,
    BuildStatus,
    BuildStrategy,
    Fact,
    Queue,
    Request,
    RequestState,
)
from stovepipe.storage import NotFound, StorageError, Unavailable, VersionMismatch, open_storage

RACERS = 16


def _keys_under(client: EtcdClient, prefix: bytes) -> list[bytes]:
    """Every key that starts with ``prefix``: one range up to the prefix's successor."""
    end = prefix[:-1] + bytes((prefix[-1] + 1,))
    response = client.txn(
        TxnRequest(success=[RequestOp(request_range=RangeRequest(key=prefix, range_end=end))])
    )
    return [kv.key for kv in response.responses[0].response_range.kvs]


def _put(client: EtcdClient, key: bytes, value: bytes) -> None:
    client.txn(TxnRequest(success=[RequestOp(request_put=PutRequest(key=key, value=value))]))


def _count_round_trips(backend: EtcdBackend, monkeypatch: pytest.MonkeyPatch) -> Tally[str]:
    """Count the client's calls from now on, by kind."""
    calls: Tally[str] = Tally()
    client = backend.client

    def counted(name: str, call: Callable[..., object]) -> Callable[..., object]:
        def wrapper(*args: object, **kwargs: object) -> object:
            calls[name] += 1
            return call(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(client, "txn", counted("txn", client.txn))
    monkeypatch.setattr(client, "range", counted("range", client.range))
    return calls


def _request(
    request_id: str, queue: str = "q", uri: str = "git://r/main/1", version: int = 1
) -> Request:
    return Request(request_id, queue, uri, RequestState.ACCEPTED, version)


def _build(
    build_id: str, request_id: str = "r", status: BuildStatus = BuildStatus.ACCEPTED
) -> Build:
    return Build(build_id, request_id, status, "", 1)


def _fact(queue: str, uri: str, project: str, request_id: str = "r") -> Fact:
    return Fact(queue, uri, project, 0.0, request_id, 1700000000.25)


# Key layout


TRICKY_PAIRS = [
    ("a", "bc"),
    ("ab", "c"),
    ("abc", ""),
    ("", "abc"),
    ("a/b", "c"),
    ("a", "b/c"),
    ("1:a", "b"),
    ("1", ":ab"),
    ("3:a", "bc"),
    ("a\x00", "b"),
    ("a", "\x00b"),
    ("q", "uri/1:qx"),
    ("é", "x"),
    ("\u00c3", "\u00a9x"),
]


def test_key_layout_never_collides_on_the_engine_for_pairs_sharing_a_concatenation(
    url: str,
) -> None:
    with open_storage(url) as storage:
        for i, (queue, uri) in enumerate(TRICKY_PAIRS):
            storage.request_uris.create(queue, uri, f"id-{i}")
        for i, (queue, uri) in enumerate(TRICKY_PAIRS):
            assert storage.request_uris.get_id_by_uri(queue, uri) == f"id-{i}"


# Every way to cut "1:a:b\x00c" into (queue, uri, project): same concatenation, distinct keys.
_WHOLE = "1:a:b\x00c"
_CUTS = {
    (_WHOLE[:i], _WHOLE[i:j], _WHOLE[j:])
    for i in range(len(_WHOLE) + 1)
    for j in range(i, len(_WHOLE) + 1)
}
TRICKY_TRIPLES = [
    *sorted(_CUTS),
    ("q", "1:u", ""),
    ("q", "", "1:u"),
    ("é", "x", ""),
    ("Ã", "©x", ""),
]


def test_key_layout_never_collides_on_the_engine_for_fact_triples_sharing_a_concatenation(
    url: str,
) -> None:
    with open_storage(url) as storage:
        for i, triple in enumerate(TRICKY_TRIPLES):
            storage.facts.create(_fact(*triple, request_id=f"id-{i}"))
        for i, triple in enumerate(TRICKY_TRIPLES):
            assert storage.facts.get(*triple) == _fact(*triple, request_id=f"id-{i}")


def test_key_layout_keeps_the_six_stores_apart_for_one_string(url: str) -> None:
    name = "uri/1:ab"
    with open_storage(url) as storage:
        storage.requests.create(_request(name))
        storage.request_uris.create("a", "b", "mapped")
        assert storage.counter.next(name) == 1
        storage.queues.create(Queue(name))
        storage.builds.create(_build(name))
        storage.facts.create(_fact(name, "", ""))
        assert storage.requests.get(name).id == name
        assert storage.queues.get(name).name == name
        assert storage.builds.get(name).id == name
        assert storage.facts.get(name, "", "").queue == name
        with pytest.raises(NotFound):
            storage.request_uris.get_id_by_uri(name, "")


def test_key_layout_is_readable_and_documented(backend: EtcdBackend, prefix: str) -> None:
    backend.requests.create(_request("request/monorepo/main/1", queue="monorepo/main"))
    backend.request_uris.create("monorepo/main", "git://r/main/abc", "request/monorepo/main/1")
    backend.counter.next("request/monorepo/main")
    backend.queues.create(Queue("monorepo/main"))
    backend.builds.create(_build("fake/7", request_id="request/monorepo/main/1"))
    backend.facts.create(_fact("monorepo/main", "git://r/main/abc", ""))
    p = prefix.encode()
    assert sorted(_keys_under(backend.client, p)) == [
        p + b"build/fake/7",
        p + b"counter/request/monorepo/main",
        p + b"fact/13:monorepo/main16:git://r/main/abc",
        p + b"queue/monorepo/main",
        p + b"request/request/monorepo/main/1",
        p + b"uri/13:monorepo/maingit://r/main/abc",
    ]


# Prefix isolation


def test_prefix_isolation_two_prefixes_share_no_data(
    url_with: Callable[..., str], prefix: str
) -> None:
    with (
        open_storage(url_with(prefix=prefix + "a/")) as first,
        open_storage(url_with(prefix=prefix + "b/")) as second,
    ):
        first.requests.create(_request("r"))
        first.request_uris.create("q", "u", "r")
        assert [first.counter.next("d") for _ in range(3)] == [1, 2, 3]
        with pytest.raises(NotFound):
            second.requests.get("r")
        with pytest.raises(NotFound):
            second.request_uris.get_id_by_uri("q", "u")
        assert second.counter.next("d") == 1


def test_prefix_isolation_every_key_written_lies_under_the_prefix(
    backend: EtcdBackend, prefix: str
) -> None:
    backend.requests.create(_request("r"))
    backend.requests.update(_request("r", uri="u2"), old_version=1, new_version=2)
    backend.request_uris.create("q", "u", "r")
    backend.counter.next("d")
    backend.queues.create(Queue("q"))
    backend.queues.update(Queue("q", in_flight=1), old_version=1, new_version=2)
    backend.builds.create(_build("b"))
    backend.builds.update(_build("b", status=BuildStatus.RUNNING), old_version=1, new_version=2)
    backend.facts.create(_fact("q", "u", ""))
    # The prefix is unique to the test; without its final "/" it also covers near misses.
    near = _keys_under(backend.client, prefix.rstrip("/").encode())
    assert len(near) == 6
    assert all(key.startswith(prefix.encode()) for key in near)


# Round trips


def test_create_get_and_update_are_one_round_trip_each(
    backend: EtcdBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_round_trips(backend, monkeypatch)
    backend.requests.create(_request("r"))
    backend.requests.get("r")
    backend.requests.update(_request("r", uri="u2"), old_version=1, new_version=2)
    backend.request_uris.create("q", "u", "r")
    backend.request_uris.get_id_by_uri("q", "u")
    assert calls == {"txn": 3, "range": 2}


def test_update_with_another_queue_takes_two_round_trips_and_keeps_the_stored_queue(
    backend: EtcdBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend.requests.create(_request("r", queue="stored"))
    calls = _count_round_trips(backend, monkeypatch)
    backend.requests.update(_request("r", queue="other", uri="u2"), old_version=1, new_version=2)
    assert calls == {"txn": 2}
    assert backend.requests.get("r") == _request("r", queue="stored", uri="u2", version=2)


def test_queue_build_and_fact_operations_are_one_round_trip_each(
    backend: EtcdBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_round_trips(backend, monkeypatch)
    backend.queues.create(Queue("q"))
    backend.queues.get("q")
    backend.queues.update(Queue("q", "r", in_flight=1), old_version=1, new_version=2)
    assert calls == {"txn": 2, "range": 1}
    calls.clear()
    backend.builds.create(_build("b"))
    backend.builds.get("b")
    backend.builds.update(_build("b", status=BuildStatus.RUNNING), old_version=1, new_version=2)
    assert calls == {"txn": 2, "range": 1}
    calls.clear()
    backend.facts.create(_fact("q", "u", ""))
    backend.facts.get("q", "u", "")
    assert calls == {"txn": 1, "range": 1}


def test_failed_updates_are_one_round_trip_each(
    backend: EtcdBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend.requests.create(_request("r"))
    backend.queues.create(Queue("q"))
    backend.builds.create(_build("b"))
    calls = _count_round_trips(backend, monkeypatch)
    with pytest.raises(VersionMismatch):
        backend.requests.update(_request("r"), old_version=2, new_version=3)
    with pytest.raises(VersionMismatch):
        backend.queues.update(Queue("q"), old_version=2, new_version=3)
    with pytest.raises(VersionMismatch):
        backend.builds.update(_build("b"), old_version=2, new_version=3)
    with pytest.raises(VersionMismatch):
        backend.queues.update(Queue("missing"), old_version=1, new_version=2)
    assert calls == {"txn": 4}


def test_build_update_with_another_request_id_takes_two_round_trips_and_keeps_the_stored_one(
    backend: EtcdBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend.builds.create(_build("b", request_id="stored"))
    calls = _count_round_trips(backend, monkeypatch)
    backend.builds.update(
        _build("b", request_id="other", status=BuildStatus.RUNNING), old_version=1, new_version=2
    )
    assert calls == {"txn": 2}
    assert backend.builds.get("b") == Build("b", "stored", BuildStatus.RUNNING, "", 2)


def test_uncontended_counter_next_is_one_round_trip_after_the_first(
    backend: EtcdBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_round_trips(backend, monkeypatch)
    assert backend.counter.next("d") == 1
    assert calls == {"txn": 1}
    assert [backend.counter.next("d") for _ in range(5)] == [2, 3, 4, 5, 6]
    assert calls == {"txn": 6}


# Counter under contention


def test_counter_under_racing_threads_never_repeats(url: str) -> None:
    per_racer = 10
    with open_storage(url) as storage:
        barrier = threading.Barrier(RACERS)

        def take(_: int) -> list[int]:
            barrier.wait()
            return [storage.counter.next("d") for _ in range(per_racer)]

        with ThreadPoolExecutor(RACERS) as pool:
            numbers = [n for batch in pool.map(take, range(RACERS)) for n in batch]
    assert sorted(numbers) == list(range(1, RACERS * per_racer + 1))


def test_counter_under_racing_clients_never_repeats(url: str) -> None:
    """Separate instances share no in-process state, so they contend on the compare."""
    per_racer = 10
    clients = [open_storage(url) for _ in range(RACERS)]
    try:
        barrier = threading.Barrier(RACERS)

        def take(i: int) -> list[int]:
            barrier.wait()
            return [clients[i].counter.next("d") for _ in range(per_racer)]

        with ThreadPoolExecutor(RACERS) as pool:
            numbers = [n for batch in pool.map(take, range(RACERS)) for n in batch]
    finally:
        for client in clients:
            client.close()
    assert sorted(numbers) == list(range(1, RACERS * per_racer + 1))


def test_counter_that_gives_up_raises_unavailable_and_hands_out_no_number(url: str) -> None:
    first, second = open_backend(url), open_backend(url)
    try:
        assert first.counter.next("d") == 1
        # The second instance's first attempt assumes the key absent and loses; allowed no
        # other attempt, it must give up rather than guess.
        second.counter.MAX_ATTEMPTS = 1
        with pytest.raises(Unavailable, match="contention"):
            second.counter.next("d")
        assert first.counter.next("d") == 2
        second.counter.MAX_ATTEMPTS = EtcdCounter.MAX_ATTEMPTS
        assert second.counter.next("d") == 3
    finally:
        first.close()
        second.close()


# Errors


# Values stored by earlier releases, and values this release does not know


def test_a_request_stored_before_the_pipeline_fields_reads_them_as_unset_and_updates(
    backend: EtcdBackend, prefix: str
) -> None:
    # The value a release without build_strategy and base_uri wrote.
    old = b'0000000000000000003\n["q", "git://r/main/1", "accepted"]'
    _put(backend.client, prefix.encode() + b"request/r", old)
    assert backend.requests.get("r") == _request("r", version=3)
    assert backend.requests.get("r").build_strategy == BuildStrategy.UNSET
    changed = Request(
        "r", "q", "git://r/main/1", RequestState.PROCESSING, 3, BuildStrategy.INCREMENTAL, "git://b"
    )
    backend.requests.update(changed, old_version=3, new_version=4)
    assert backend.requests.get("r") == Request(
        "r", "q", "git://r/main/1", RequestState.PROCESSING, 4, BuildStrategy.INCREMENTAL, "git://b"
    )


def test_update_persists_build_strategy_and_base_uri(backend: EtcdBackend) -> None:
    backend.requests.create(_request("r"))
    for version, (strategy, base) in enumerate(
        [
            (BuildStrategy.FULL, ""),
            (BuildStrategy.INCREMENTAL, "git://b"),
            (BuildStrategy.UNSET, ""),
        ],
        start=1,
    ):
        changed = Request("r", "q", "git://u", RequestState.PROCESSING, version, strategy, base)
        backend.requests.update(changed, old_version=version, new_version=version + 1)
        assert backend.requests.get("r") == dataclasses.replace(changed, version=version + 1)


@pytest.mark.parametrize(
    ("key", "value", "read"),
    [
        (
            b"request/r",
            b'0000000000000000001\n["q", "u", "paused"]',
            lambda b: b.requests.get("r"),
        ),
        (
            b"request/r",
            b'0000000000000000001\n["q", "u", "accepted", "nightly", ""]',
            lambda b: b.requests.get("r"),
        ),
        (
            b"build/b",
            b'0000000000000000001\n["r", "queued", ""]',
            lambda b: b.builds.get("b"),
        ),
    ],
    ids=["request state", "request build_strategy", "build status"],
)
def test_a_stored_enumeration_value_this_version_does_not_define_is_a_storage_error(
    backend: EtcdBackend,
    prefix: str,
    key: bytes,
    value: bytes,
    read: Callable[[EtcdBackend], object],
) -> None:
    _put(backend.client, prefix.encode() + key, value)
    with pytest.raises(StorageError, match="unknown"):
        read(backend)


def test_facts_read_back_the_very_same_floats(backend: EtcdBackend) -> None:
    numbers = [0.0, -0.0, 5e-324, 0.1, 1 / 3, 1 - 2**-53, 1.0, 1700000000.123456, 2.0**53]
    for i, number in enumerate(numbers):
        backend.facts.create(Fact("q", f"u{i}", "", min(abs(number), 1.0), "r", number))
    for i, number in enumerate(numbers):
        fact = backend.facts.get("q", f"u{i}", "")
        assert struct.pack(">d", fact.created_at) == struct.pack(">d", number)
        assert struct.pack(">d", fact.degree) == struct.pack(">d", min(abs(number), 1.0))


def test_a_corrupt_stored_value_is_a_storage_error(backend: EtcdBackend, prefix: str) -> None:
    _put(backend.client, prefix.encode() + b"request/r", b"not a request")
    _put(backend.client, prefix.encode() + b"counter/d", b"not a number")
    with pytest.raises(StorageError, match="unreadable"):
        backend.requests.get("r")
    with pytest.raises(StorageError, match="no number"):
        backend.counter.next("d")
    for tag in (b"queue/x", b"build/x", b"fact/1:q1:ux"):
        _put(backend.client, prefix.encode() + tag, b"not a record")
    with pytest.raises(StorageError, match="unreadable"):
        backend.queues.get("x")
    with pytest.raises(StorageError, match="unreadable"):
        backend.builds.get("x")
    with pytest.raises(StorageError, match="unreadable"):
        backend.facts.get("q", "u", "x")


def test_a_closed_storage_raises_storage_error(url: str) -> None:
    storage = open_storage(url)
    storage.close()
    with pytest.raises(StorageError, match="closed"):
        storage.requests.get("r")
    storage.close()


def test_counter_retries_under_its_tenacity_policy_and_gives_up_after_max_attempts(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = open_backend(url), open_backend(url)
    try:
        assert first.counter.next("d") == 1
        second.counter.MAX_ATTEMPTS = 4
        client = second.counter._client
        transaction = client.txn
        tries: list[int] = []

        def moved_before_each_try(request: Any, *, timeout: float) -> Any:
            # Another process takes a number before every try: each one loses.
            tries.append(first.counter.next("d"))
            return transaction(request, timeout=timeout)

        monkeypatch.setattr(client, "txn", moved_before_each_try)
        with pytest.raises(Unavailable, match="contention"):
            second.counter.next("d")
        assert tries == [2, 3, 4, 5]
        monkeypatch.undo()
        assert second.counter.next("d") == 6  # it handed out no number meanwhile
    finally:
        first.close()
        second.close()
