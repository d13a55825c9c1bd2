"""Per-operation latency of the MySQL backend next to raw PyMySQL, in the same run.

    python -m benchmarks.bench_mysql [--url mysql://root@127.0.0.1:3306/stovepipe_test] [--count N]

The URL defaults to ``STOVEPIPE_TEST_MYSQL_URL``; the schema is applied first. The raw side
executes the backend's own statement strings with the same arguments on one PyMySQL
connection opened with the backend's connection settings (``connect_arguments``: charset,
autocommit, sql_mode, FOUND_ROWS, timeouts, TLS), so the ratio is what the storage layer
(limit checks, pool, error mapping, decoding) costs on top of the round trip. Both sides of
an operation are timed call by call, interleaved, so drifting load on a shared machine falls
on both alike. Every operation of the contract is timed, the pipeline's stores included;
``requests.update+`` is a request update that also sets a build strategy and a base.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from collections.abc import Callable

import pymysql
from stovepipe_mysql import backend, migrate
from stovepipe_mysql.options import parse_url

from benchmarks.bench_storage import operations
from benchmarks.timing import Latency, print_comparison
from stovepipe.entity import (
    Build,
    BuildStatus,
    BuildStrategy,
    Fact,
    Queue,
    Request,
    RequestState,
)
from stovepipe.storage import Storage, VersionMismatch, open_storage

Operations = dict[str, Callable[[int], object]]

# Values of the pipeline's rows, alike on both sides.
LATEST = "request/bench/main/1"
LOG = "https://ci.example.com/builds/bench/main/12345/log"
BASE_URI = "git://o/r/main/" + "0" * 40
CREATED_AT = 1764439245.123456


def pipeline_operations(storage: Storage, ns: str) -> Operations:
    """The pipeline's operations through the storage; call i touches keys of its own.

    ``requests.update+`` moves the request ``requests.update`` left at version 2 to 3.
    """

    def strategy_update(i: int) -> None:
        storage.requests.update(
            Request(
                f"{ns}/{i}",
                "bench/main",
                f"git://o/r/main/{i}",
                RequestState.PROCESSING,
                2,
                BuildStrategy.INCREMENTAL,
                BASE_URI,
            ),
            old_version=2,
            new_version=3,
        )

    return {
        "requests.update+": strategy_update,
        "queues.create": lambda i: storage.queues.create(Queue(f"{ns}/{i}", LATEST)),
        "queues.get": lambda i: storage.queues.get(f"{ns}/{i}"),
        "queues.update": lambda i: storage.queues.update(
            Queue(f"{ns}/{i}", LATEST, in_flight=1), old_version=1, new_version=2
        ),
        "builds.create": lambda i: storage.builds.create(
            Build(f"{ns}/{i}", LATEST, BuildStatus.ACCEPTED, LOG, 1)
        ),
        "builds.get": lambda i: storage.builds.get(f"{ns}/{i}"),
        "builds.update": lambda i: storage.builds.update(
            Build(f"{ns}/{i}", LATEST, BuildStatus.RUNNING, LOG, 1), old_version=1, new_version=2
        ),
        "facts.create": lambda i: storage.facts.create(
            Fact("bench/main", f"{ns}/{i}", "", 0.0, LATEST, CREATED_AT)
        ),
        "facts.get": lambda i: storage.facts.get("bench/main", f"{ns}/{i}", ""),
    }


def raw_operations(
    connection: pymysql.connections.Connection[pymysql.cursors.Cursor], ns: str
) -> Operations:
    """The backend's statements, arguments encoded as it encodes them, on one raw connection."""
    cursor = connection.cursor()
    execute = cursor.execute

    def create(i: int) -> None:
        execute(
            backend.INSERT_REQUEST,
            (
                f"{ns}/{i}".encode(),
                b"bench/main",
                f"git://o/r/main/{i}".encode(),
                b"accepted",
                1,
                b"",
                b"",
            ),
        )

    def get(i: int) -> object:
        execute(backend.SELECT_REQUEST, (f"{ns}/{i}".encode(),))
        return cursor.fetchone()

    def compare_and_set(statement: str, args: tuple[object, ...]) -> None:
        # The backend's check of the matched rows, so that both sides would notice a miss.
        execute(statement, args)
        if cursor.rowcount != 1:
            raise VersionMismatch("raw compare-and-set")

    def update(i: int) -> None:
        compare_and_set(
            backend.UPDATE_REQUEST,
            (f"git://o/r/main/{i}".encode(), b"accepted", b"", b"", 2, f"{ns}/{i}".encode(), 1),
        )

    def strategy_update(i: int) -> None:
        compare_and_set(
            backend.UPDATE_REQUEST,
            (
                f"git://o/r/main/{i}".encode(),
                b"processing",
                b"incremental",
                BASE_URI.encode(),
                3,
                f"{ns}/{i}".encode(),
                2,
            ),
        )

    def uri_create(i: int) -> None:
        execute(backend.INSERT_REQUEST_URI, (b"bench/main", f"{ns}/{i}".encode(), b"id"))

    def uri_get(i: int) -> object:
        execute(backend.SELECT_REQUEST_URI, (b"bench/main", f"{ns}/{i}".encode()))
        return cursor.fetchone()

    def counter_next(i: int) -> int:
        execute(backend.NEXT_COUNTER, (f"{ns}/counter".encode(),))
        return cursor.lastrowid

    def queue_create(i: int) -> None:
        execute(backend.INSERT_QUEUE, (f"{ns}/{i}".encode(), LATEST.encode(), b"", b"", 0, 1))

    def queue_get(i: int) -> object:
        execute(backend.SELECT_QUEUE, (f"{ns}/{i}".encode(),))
        return cursor.fetchone()

    def queue_update(i: int) -> None:
        compare_and_set(
            backend.UPDATE_QUEUE, (LATEST.encode(), b"", b"", 1, 2, f"{ns}/{i}".encode(), 1)
        )

    def build_create(i: int) -> None:
        execute(
            backend.INSERT_BUILD,
            (f"{ns}/{i}".encode(), LATEST.encode(), b"accepted", LOG.encode(), 1),
        )

    def build_get(i: int) -> object:
        execute(backend.SELECT_BUILD, (f"{ns}/{i}".encode(),))
        return cursor.fetchone()

    def build_update(i: int) -> None:
        compare_and_set(
            backend.UPDATE_BUILD, (b"running", LOG.encode(), 2, f"{ns}/{i}".encode(), 1)
        )

    def fact_create(i: int) -> None:
        execute(
            backend.INSERT_FACT,
            (b"bench/main", f"{ns}/{i}".encode(), b"", 0.0, LATEST.encode(), CREATED_AT),
        )

    def fact_get(i: int) -> object:
        execute(backend.SELECT_FACT, (b"bench/main", f"{ns}/{i}".encode(), b""))
        return cursor.fetchone()

    return {
        "requests.create": create,
        "requests.get": get,
        "requests.update": update,
        "requests.update+": strategy_update,
        "request_uris.create": uri_create,
        "request_uris.get": uri_get,
        "counter.next": counter_next,
        "queues.create": queue_create,
        "queues.get": queue_get,
        "queues.update": queue_update,
        "builds.create": build_create,
        "builds.get": build_get,
        "builds.update": build_update,
        "facts.create": fact_create,
        "facts.get": fact_get,
    }


def interleaved(
    ours: Callable[[int], object], raw: Callable[[int], object], count: int
) -> tuple[Latency, Latency]:
    """Time both sides call by call: call i of one side, then call i of the other.

    On a shared machine the load drifts: a write's commit waits on a disk that other processes'
    writes slow for seconds at a time. Calls timed side by side meet the same conditions, where
    rounds of many calls let a burst fall on one side alone. Which side goes first alternates.
    """
    ours_samples: list[float] = []
    raw_samples: list[float] = []
    sides = ((ours, ours_samples), (raw, raw_samples))
    for i in range(count):
        for operation, samples in sides if i % 2 == 0 else sides[::-1]:
            start = time.perf_counter_ns()
            operation(i)
            samples.append((time.perf_counter_ns() - start) / 1000)
    return _latency(ours_samples), _latency(raw_samples)


def _latency(samples: list[float]) -> Latency:
    """The figures of ``benchmarks.timing.measure``, over samples taken here."""
    samples.sort()
    return Latency(
        count=len(samples),
        p50_us=samples[len(samples) // 2],
        p99_us=samples[min(len(samples) - 1, int(len(samples) * 0.99))],
        mean_us=statistics.fmean(samples),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("STOVEPIPE_TEST_MYSQL_URL"))
    parser.add_argument("--count", type=int, default=2000, help="calls per operation and side")
    arguments = parser.parse_args()
    if not arguments.url:
        parser.error("give --url or set STOVEPIPE_TEST_MYSQL_URL")
    migrate(arguments.url)
    count: int = arguments.count

    raw_connection = pymysql.connect(**parse_url(arguments.url).connect_arguments())
    with open_storage(arguments.url) as storage:
        ns = uuid.uuid4().hex
        ours = operations(storage, ns) | pipeline_operations(storage, ns)
        raw = raw_operations(raw_connection, uuid.uuid4().hex)
        # In the order raw_operations lists them, so that get and update find what create
        # wrote (and requests.update+ what requests.update left).
        rows = [(name, *interleaved(ours[name], raw[name], count)) for name in raw]
    raw_connection.close()
    print_comparison(
        f"mysql:// vs raw PyMySQL, same statements and settings "
        f"({count} calls per operation and side, interleaved call by call)",
        rows,
    )


if __name__ == "__main__":
    main()
