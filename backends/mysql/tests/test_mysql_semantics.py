"""The contract's rules where MySQL and MariaDB make them easy to break: collations, PAD SPACE,
affected-rows counting, and read-modify-write races."""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from stovepipe_mysql.options import parse_url

from stovepipe.entity import Request, RequestState
from stovepipe.storage import (
    AlreadyExists,
    NotFound,
    Storage,
    StorageError,
    VersionMismatch,
    open_storage,
)

RACERS = 16


def unique(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4().hex}"


def request(
    request_id: str, *, uri: str = "git://remote/repo/main/abc", version: int = 1
) -> Request:
    return Request(
        id=request_id, queue="monorepo/main", uri=uri, state=RequestState.ACCEPTED, version=version
    )


def race(count: int, action: Callable[[int], object]) -> list[object]:
    """Run ``action(i)`` in ``count`` threads released together; return results or exceptions."""
    barrier = threading.Barrier(count)
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
        thread.join()
    return results


# Strings a case-insensitive, accent-insensitive or PAD SPACE collation would treat as equal.
LOOKALIKES = [
    "key",
    "Key",
    "KEY",
    "key ",
    "key  ",
    "key\t",
    "key\x00",
    "kéy",
    "ke\u0301y",
    "keý",
    "k\U0001f600y",
]


def test_request_ids_compare_byte_for_byte_without_case_accent_or_pad_space_folding(
    storage: Storage,
) -> None:
    base = unique("request/")
    for n, suffix in enumerate(LOOKALIKES):
        storage.requests.create(request(base + suffix, uri=f"uri-{n}"))
    for n, suffix in enumerate(LOOKALIKES):
        assert storage.requests.get(base + suffix).uri == f"uri-{n}"
    with pytest.raises(NotFound):
        storage.requests.get(base + "KeY")


def test_queue_and_uri_keys_compare_byte_for_byte_without_pad_space_folding(
    storage: Storage,
) -> None:
    queue = unique("queue/")
    for n, suffix in enumerate(LOOKALIKES):
        storage.request_uris.create(queue, "git://r/" + suffix, f"id-{n}")
        storage.request_uris.create(queue + suffix, "git://r/", f"queue-id-{n}")
    for n, suffix in enumerate(LOOKALIKES):
        assert storage.request_uris.get_id_by_uri(queue, "git://r/" + suffix) == f"id-{n}"
        assert storage.request_uris.get_id_by_uri(queue + suffix, "git://r/") == f"queue-id-{n}"


def test_queue_uri_pairs_with_separators_never_share_a_key(storage: Storage) -> None:
    base = unique()
    pairs = [
        (base + "a/b", "c"),
        (base + "a", "b/c"),
        (base + "a:", "bc"),
        (base + "a", ":bc"),
        (base + "a\x00b", "c"),
        (base + "a", "\x00bc"),
    ]
    for n, (queue, uri) in enumerate(pairs):
        storage.request_uris.create(queue, uri, f"id-{n}")
    for n, (queue, uri) in enumerate(pairs):
        assert storage.request_uris.get_id_by_uri(queue, uri) == f"id-{n}"


def test_values_round_trip_exactly_at_their_byte_limits(storage: Storage) -> None:
    request_id = unique("r/").ljust(255 - 4, "x") + "\U0001f600"  # 255 bytes, 4-byte char last
    stored = Request(
        id=request_id,
        queue=unique("q").ljust(196, "q") + "\U0001f600",
        uri="u" * 1020 + "\x00 \t ",
        state=RequestState.ACCEPTED,
        version=2**63 - 1,
    )
    storage.requests.create(stored)
    assert storage.requests.get(request_id) == stored
    storage.request_uris.create(stored.queue, stored.uri, request_id)
    assert storage.request_uris.get_id_by_uri(stored.queue, stored.uri) == request_id


def test_update_that_writes_the_values_already_stored_still_succeeds(storage: Storage) -> None:
    # Without CLIENT.FOUND_ROWS MySQL reports 0 affected rows here and a backend would
    # mistake a successful compare-and-set for a VersionMismatch.
    stored = request(unique("request/"), version=3)
    storage.requests.create(stored)
    storage.requests.update(stored, old_version=3, new_version=3)
    assert storage.requests.get(stored.id) == stored


def test_update_persists_uri_and_state_and_version_only_when_the_stored_version_matches(
    storage: Storage,
) -> None:
    stored = request(unique("request/"))
    storage.requests.create(stored)
    with pytest.raises(VersionMismatch):
        storage.requests.update(request(stored.id, uri="other"), old_version=2, new_version=3)
    assert storage.requests.get(stored.id) == stored
    storage.requests.update(
        request(stored.id, uri="other", version=99), old_version=1, new_version=2
    )
    assert storage.requests.get(stored.id) == request(stored.id, uri="other", version=2)


def test_update_of_a_missing_request_is_a_version_mismatch(storage: Storage) -> None:
    with pytest.raises(VersionMismatch):
        storage.requests.update(request(unique("request/")), old_version=1, new_version=2)


def test_request_create_race_has_exactly_one_winner_among_16_threads(storage: Storage) -> None:
    request_id = unique("request/")
    results = race(RACERS, lambda i: storage.requests.create(request(request_id, uri=f"uri-{i}")))
    winners = [i for i, result in enumerate(results) if result is None]
    assert len(winners) == 1
    assert all(isinstance(r, AlreadyExists) for r in results if r is not None)
    assert storage.requests.get(request_id).uri == f"uri-{winners[0]}"


def test_request_uri_create_race_has_exactly_one_winner_among_16_threads(storage: Storage) -> None:
    queue, uri = unique("queue/"), unique("git://")
    results = race(RACERS, lambda i: storage.request_uris.create(queue, uri, f"id-{i}"))
    winners = [i for i, result in enumerate(results) if result is None]
    assert len(winners) == 1
    assert all(isinstance(r, AlreadyExists) for r in results if r is not None)
    assert storage.request_uris.get_id_by_uri(queue, uri) == f"id-{winners[0]}"


def test_compare_and_set_race_has_exactly_one_winner_among_16_threads(storage: Storage) -> None:
    stored = request(unique("request/"))
    storage.requests.create(stored)
    results = race(
        RACERS,
        lambda i: storage.requests.update(
            request(stored.id, uri=f"uri-{i}"), old_version=1, new_version=2
        ),
    )
    winners = [i for i, result in enumerate(results) if result is None]
    assert len(winners) == 1
    assert all(isinstance(r, VersionMismatch) for r in results if r is not None)
    assert storage.requests.get(stored.id).uri == f"uri-{winners[0]}"


def test_counter_counts_1_2_3_per_domain(storage: Storage) -> None:
    first, second = unique("request/"), unique("request/")
    assert [storage.counter.next(first) for _ in range(3)] == [1, 2, 3]
    assert storage.counter.next(second) == 1
    assert storage.counter.next(first) == 4


def test_counter_never_repeats_across_16_racing_threads(storage: Storage) -> None:
    domain = unique("request/")
    results = race(RACERS, lambda i: [storage.counter.next(domain) for _ in range(25)])
    numbers = [n for result in results for n in result]  # type: ignore[attr-defined]
    assert sorted(numbers) == list(range(1, RACERS * 25 + 1))


_COUNT_IN_A_PROCESS = """
import sys
from stovepipe.storage import open_storage
url, domain, times = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.stdin.readline()  # start together
with open_storage(url) as storage:
    print(" ".join(str(storage.counter.next(domain)) for _ in range(times)))
"""


def test_counter_never_repeats_across_4_racing_processes(mysql_url: str) -> None:
    domain = unique("request/")
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _COUNT_IN_A_PROCESS, mysql_url, domain, "50"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [process.communicate("go\n", timeout=60)[0] for process in processes]
    assert [process.returncode for process in processes] == [0] * 4
    numbers = [int(n) for output in outputs for n in output.split()]
    assert sorted(numbers) == list(range(1, 201))


def test_one_storage_serves_16_threads_through_a_pool_of_4(
    url_with: Callable[..., str],
) -> None:
    with open_storage(url_with(pool_size=4)) as storage:
        ids = [unique("request/") for _ in range(RACERS)]
        assert race(RACERS, lambda i: storage.requests.create(request(ids[i]))) == [None] * RACERS
        # Read-after-write, whichever pooled connection each read lands on.
        assert race(RACERS, lambda i: storage.requests.get(ids[(i + 1) % RACERS]).id) == [
            ids[(i + 1) % RACERS] for i in range(RACERS)
        ]


def test_stored_state_this_version_does_not_know_is_a_storage_error_naming_the_request(
    storage: Storage, mysql_url: str, admin: Any
) -> None:
    request_id = unique("request/")
    with admin.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO `{parse_url(mysql_url).database}`.request"
            " (id, queue, uri, state, version) VALUES (%s, 'q', 'u', 'FROM_THE_FUTURE', 1)",
            (request_id.encode(),),
        )
    with pytest.raises(StorageError, match=f"{request_id}.*'FROM_THE_FUTURE'"):
        storage.requests.get(request_id)


def test_stored_bytes_that_are_not_utf8_are_a_storage_error_naming_the_key(
    storage: Storage, mysql_url: str, admin: Any
) -> None:
    database = parse_url(mysql_url).database
    request_id, queue, uri = unique("request/"), unique("queue/"), unique("git://")
    with admin.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO `{database}`.request (id, queue, uri, state, version)"
            " VALUES (%s, 'q', X'C328', 'accepted', 1)",
            (request_id.encode(),),
        )
        cursor.execute(
            f"INSERT INTO `{database}`.request_uri (queue, uri, request_id) VALUES (%s, %s, X'FF')",
            (queue.encode(), uri.encode()),
        )
    with pytest.raises(StorageError, match=f"{request_id}.*UTF-8"):
        storage.requests.get(request_id)
    with pytest.raises(StorageError, match=f"{uri}.*{queue}.*UTF-8"):
        storage.request_uris.get_id_by_uri(queue, uri)
