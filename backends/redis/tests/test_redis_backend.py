"""The Redis backend's own rules, on a real server: what the conformance suite cannot see."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import pytest
import redis
import redis.connection
from hypothesis import given
from hypothesis import strategies as st
from stovepipe_redis import KeyLayout, RedisBackend, open_backend
from stovepipe_redis.backend import decode_request, encode_request
from stovepipe_redis.options import TLS_OPTIONS, parse_url

from stovepipe.entity import Build, BuildStatus, Fact, Queue, Request, RequestState
from stovepipe.storage import Storage, StorageError, Unavailable, VersionMismatch, open_storage


def _request(request_id: str, version: int = 1, uri: str = "git://r/main/0") -> Request:
    return Request(
        id=request_id, queue="monorepo/main", uri=uri, state=RequestState.ACCEPTED, version=version
    )


def _race(racers: int, work: Callable[[int], None]) -> list[BaseException]:
    """Run ``work(i)`` on ``racers`` threads released together; return what they raised."""
    barrier = threading.Barrier(racers)
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        barrier.wait()
        try:
            work(i)
        except BaseException as error:
            with lock:
                errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


# --- watch conflicts -------------------------------------------------------------------------


def test_update_retries_a_watch_conflict_while_the_version_still_matches(
    backend: RedisBackend,
) -> None:
    # Writers that keep the version (old == new) abort each other's EXEC all the time, yet
    # every one of their updates may still succeed, so none may fail.
    backend.requests.create(_request("request/q/1"))
    racers, updates = 4, 30

    def rewrite(racer: int) -> None:
        for n in range(updates):
            uri = f"git://r/main/{racer}-{n}"
            backend.requests.update(_request("request/q/1", uri=uri), old_version=1, new_version=1)

    assert _race(racers, rewrite) == []
    assert backend.requests.watch_conflicts > 0, "the racers never collided: nothing was shown"
    stored = backend.requests.get("request/q/1")
    assert stored.version == 1
    assert stored.uri.endswith(f"-{updates - 1}")


def test_update_never_retries_a_real_version_mismatch_16_racers_one_winner(
    backend: RedisBackend,
) -> None:
    backend.requests.create(_request("request/q/1"))
    winners: list[int] = []

    def bump(racer: int) -> None:
        uri = f"git://r/main/{racer}"
        backend.requests.update(_request("request/q/1", uri=uri), old_version=1, new_version=2)
        winners.append(racer)

    errors = _race(16, bump)
    assert len(winners) == 1
    assert len(errors) == 15
    assert all(isinstance(error, VersionMismatch) for error in errors)
    stored = backend.requests.get("request/q/1")
    assert (stored.version, stored.uri) == (2, f"git://r/main/{winners[0]}")


def test_update_retries_under_its_tenacity_policy_and_gives_up_after_max_update_attempts(
    backend: RedisBackend, raw: redis.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stovepipe_redis import MAX_UPDATE_ATTEMPTS
    from stovepipe_redis import backend as module

    backend.requests.create(_request("request/q/1"))
    key = f"{prefix}request:request/q/1".encode()
    reads: list[bytes] = []

    def read_then_touch(read_key: bytes, stored: bytes) -> object:
        # Another writer rewrites the key between this attempt's WATCH and its EXEC, every
        # time: the version still matches, so each attempt is a conflict, never a mismatch.
        reads.append(read_key)
        raw.set(key, stored)
        return decode_request(read_key, stored)

    monkeypatch.setattr(module, "decode_request", read_then_touch)
    conflicts_before = backend.requests.watch_conflicts
    with pytest.raises(Unavailable, match=f"gave up after {MAX_UPDATE_ATTEMPTS} attempts"):
        backend.requests.update(
            _request("request/q/1", uri="git://r/main/9"), old_version=1, new_version=2
        )
    assert len(reads) == MAX_UPDATE_ATTEMPTS
    assert backend.requests.watch_conflicts - conflicts_before == MAX_UPDATE_ATTEMPTS
    monkeypatch.undo()
    assert backend.requests.get("request/q/1").version == 1  # nothing was written


def test_update_version_mismatch_leaves_no_watch_on_the_pooled_connection(
    backend: RedisBackend, raw: redis.Redis, prefix: str
) -> None:
    backend.requests.create(_request("request/q/a"))
    backend.requests.create(_request("request/q/b"))
    with pytest.raises(VersionMismatch):
        backend.requests.update(_request("request/q/a"), old_version=7, new_version=8)
    # Had the WATCH on a survived, this write would abort the next EXEC on that connection.
    raw.set(f"{prefix}request:request/q/a".encode(), b"touched")
    backend.requests.update(_request("request/q/b"), old_version=1, new_version=2)
    assert backend.requests.watch_conflicts == 0


# --- round trips -----------------------------------------------------------------------------


def test_round_trips_create_1_get_1_update_2_mapping_1_counter_1(
    storage: Storage, round_trips: Callable[[], int]
) -> None:
    storage.counter.next("warm up the pool")
    round_trips()
    storage.requests.create(_request("request/q/1"))
    assert round_trips() == 1
    storage.requests.get("request/q/1")
    assert round_trips() == 1
    storage.requests.update(_request("request/q/1"), old_version=1, new_version=2)
    assert round_trips() == 2  # WATCH+GET, then MULTI+SET+EXEC
    with pytest.raises(VersionMismatch):
        storage.requests.update(_request("request/q/1"), old_version=1, new_version=2)
    assert round_trips() == 2  # WATCH+GET, then UNWATCH
    storage.request_uris.create("q", "git://r/main/0", "request/q/1")
    assert round_trips() == 1
    storage.request_uris.get_id_by_uri("q", "git://r/main/0")
    assert round_trips() == 1
    storage.counter.next("request/q")
    assert round_trips() == 1


# --- key layout ------------------------------------------------------------------------------


def _split_request_uri_key(layout_prefix: bytes, key: bytes) -> tuple[str, str]:
    """Invert KeyLayout.request_uri: if this always recovers the pair, no two pairs collide."""
    rest = key.removeprefix(layout_prefix + b"request_uri:")
    length, _, rest = rest.partition(b":")
    queue, separator, uri = (
        rest[: int(length)],
        rest[int(length) : int(length) + 1],
        rest[int(length) + 1 :],
    )
    assert separator == b":"
    return queue.decode(), uri.decode()


@given(queue=st.text(), uri=st.text())
def test_key_layout_request_uri_key_is_unambiguous_for_any_strings(queue: str, uri: str) -> None:
    layout = KeyLayout("p:")
    key = layout.request_uri(queue, uri)
    assert _split_request_uri_key(b"p:", key) == (queue, uri)


_TRICKY_PAIRS = [
    ("a:b", "c"),
    ("a", "b:c"),
    ("a", ":b:c"),
    ("a:", "b:c"),
    ("1:a", "b"),
    ("1", "a:b"),
    ("a/b", "c"),
    ("a", "b/c"),
    ("", "a:b"),
    ("a:b", ""),
    ("a\x00b", "c"),
    ("a", "\x00b:c"),
    ("A", "b"),
    ("a ", "b"),
    ("a", " b"),
    ("é", "b"),
    ("e\u0301", "b"),
    ("🚂", "b"),
]


def test_key_layout_distinct_queue_uri_pairs_never_share_a_key(storage: Storage) -> None:
    for n, (queue, uri) in enumerate(_TRICKY_PAIRS):
        storage.request_uris.create(queue, uri, f"request/{n}")
    for n, (queue, uri) in enumerate(_TRICKY_PAIRS):
        assert storage.request_uris.get_id_by_uri(queue, uri) == f"request/{n}"


def test_key_layout_stores_never_share_a_key(storage: Storage) -> None:
    # The same string as every store's key, and as the parts of the keys made of several.
    name = "request_uri:1:q:u"
    storage.requests.create(_request(name))
    storage.request_uris.create("q", "u", "the mapping")
    assert storage.counter.next(name) == 1
    storage.queues.create(Queue(name, latest_request_id="the queue"))
    storage.builds.create(Build(name, "the build", BuildStatus.ACCEPTED, "", 1))
    storage.facts.create(Fact("q", "u", "", 0.0, "the fact", 1.0))
    storage.facts.create(Fact(name, name, name, 1.0, "the other fact", 2.0))
    assert storage.requests.get(name).id == name
    assert storage.request_uris.get_id_by_uri("q", "u") == "the mapping"
    assert storage.queues.get(name).latest_request_id == "the queue"
    assert storage.builds.get(name).request_id == "the build"
    assert storage.facts.get("q", "u", "").request_id == "the fact"
    assert storage.facts.get(name, name, name).request_id == "the other fact"


def test_key_layout_store_tags_are_prefix_free(prefix: str) -> None:
    layout = KeyLayout(prefix)
    keys = {
        "request": layout.request(""),
        "request_uri": layout.request_uri("", "")[: -len(b"0::")],
        "counter": layout.counter(""),
        "queue": layout.queue(""),
        "build": layout.build(""),
        "fact": layout.fact("", "", "")[: -len(b"0::0::0:")],
    }
    for store, tag in keys.items():
        assert tag == f"{prefix}{store}:".encode()
        assert not [other for other in keys if other != store and keys[other].startswith(tag)]


def test_key_prefix_option_keeps_deployments_apart(
    storage: Storage, url_with: Callable[..., str], prefix: str
) -> None:
    storage.counter.next("request/q")
    with open_storage(url_with(prefix=prefix + "another-deployment:")) as other:
        assert other.counter.next("request/q") == 1
    assert storage.counter.next("request/q") == 2


# --- stored value ----------------------------------------------------------------------------

_text = st.text(st.characters(exclude_categories=["Cs"]))  # any code point but lone surrogates


@given(
    queue=_text,
    uri=_text,
    state=_text,
    build_strategy=_text,
    base_uri=_text,
    version=st.integers(1, 2**63 - 1),
)
def test_stored_value_is_compact_json_and_round_trips_any_text(
    queue: str, uri: str, state: str, build_strategy: str, base_uri: str, version: int
) -> None:
    fields = {
        "queue": queue,
        "uri": uri,
        "state": state,
        "build_strategy": build_strategy,
        "base_uri": base_uri,
        "version": version,
    }
    value = encode_request(queue, uri, state, build_strategy, base_uri, version)
    assert value == json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()
    assert decode_request(b"key", value) == fields


# --- errors ----------------------------------------------------------------------------------


def test_a_foreign_value_under_a_request_key_is_a_storage_error_never_a_driver_error(
    storage: Storage, raw: redis.Redis, prefix: str
) -> None:
    raw.set(f"{prefix}request:request/q/1".encode(), b"not json")
    raw.rpush(f"{prefix}counter:request/q".encode(), b"a list")
    unknown_state = b'{"queue":"q","uri":"u","state":"from the future","version":1}'
    raw.set(f"{prefix}request:request/q/3".encode(), unknown_state)
    raw.set(f"{prefix}request_uri:1:q:u".encode(), b"\xff not utf-8")
    for foreign in ("request/q/1", "request/q/3"):
        with pytest.raises(StorageError) as got:
            storage.requests.get(foreign)
        assert type(got.value) is StorageError
    with pytest.raises(StorageError) as got:
        storage.request_uris.get_id_by_uri("q", "u")
    assert type(got.value) is StorageError
    with pytest.raises(StorageError) as got:
        storage.requests.update(_request("request/q/1"), old_version=1, new_version=2)
    assert type(got.value) is StorageError
    with pytest.raises(StorageError) as got:
        storage.counter.next("request/q")  # WRONGTYPE
    assert type(got.value) is StorageError
    # The connections that saw those errors are still fit for use.
    storage.requests.create(_request("request/q/2"))
    storage.requests.update(_request("request/q/2"), old_version=1, new_version=2)


def test_a_connection_the_server_dropped_is_replaced_not_reported(
    url_with: Callable[..., str], raw: redis.Redis, prefix: str
) -> None:
    name = prefix.rstrip(":")
    with open_storage(url_with(client_name=name)) as storage:
        storage.counter.next("request/q")
        ids = [int(client["id"]) for client in raw.client_list() if client.get("name") == name]
        assert len(ids) == 1
        assert raw.client_kill_filter(_id=str(ids[0])) == 1
        assert storage.counter.next("request/q") == 2


@pytest.mark.parametrize(
    "bad", [{"timeout": "0"}, {"timeout": "-1"}, {"timeout": "nan"}, {"socket_timeout": "1"}]
)
def test_timeout_and_unknown_options_are_rejected_when_opening(
    url_with: Callable[..., str], bad: dict[str, str]
) -> None:
    with pytest.raises(ValueError):
        open_backend(url_with(**bad))


def test_dead_server_is_unavailable_from_open() -> None:
    with pytest.raises(Unavailable):
        open_backend("redis://127.0.0.1:1/0?timeout=1")


@pytest.mark.parametrize("option", sorted(TLS_OPTIONS))
def test_tls_options_belong_to_rediss_only(option: str) -> None:
    value = "true" if option == "ssl_check_hostname" else "x"
    with pytest.raises(ValueError, match=f"{option} is a TLS option: use rediss://") as raised:
        parse_url(f"redis://:s3cret-pw@127.0.0.1:6379/0?{option}={value}")
    assert "s3cret-pw" not in str(raised.value)
    assert parse_url(f"rediss://:s3cret-pw@127.0.0.1:6379/0?{option}={value}").pool_url
