"""Per-operation latency of the MySQL backend next to raw PyMySQL, in the same run.

    python -m benchmarks.bench_mysql [--url mysql://root@127.0.0.1:3306/stovepipe_test] [--count N]

The URL defaults to ``STOVEPIPE_TEST_MYSQL_URL``; the schema is applied first. The raw side
executes the backend's own statement strings with the same arguments on one PyMySQL
connection opened with the backend's connection settings (``connect_arguments``: charset,
autocommit, sql_mode, FOUND_ROWS, timeouts, TLS), so the ratio is what the storage layer
(limit checks, pool, error mapping, decoding) costs on top of the round trip. Both sides of
an operation are measured in alternating rounds, so drifting load on a shared machine falls
on both alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import uuid
from collections.abc import Callable

import pymysql
from stovepipe_mysql import backend, migrate
from stovepipe_mysql.options import parse_url

from benchmarks.bench_storage import operations
from benchmarks.timing import Latency, measure, print_comparison
from stovepipe.storage import open_storage

Operations = dict[str, Callable[[int], object]]


def raw_operations(
    connection: pymysql.connections.Connection[pymysql.cursors.Cursor], ns: str
) -> Operations:
    """The backend's statements, arguments encoded as it encodes them, on one raw connection."""
    cursor = connection.cursor()
    execute = cursor.execute

    def create(i: int) -> None:
        execute(
            backend.INSERT_REQUEST,
            (f"{ns}/{i}".encode(), b"bench/main", f"git://o/r/main/{i}".encode(), b"accepted", 1),
        )

    def get(i: int) -> object:
        execute(backend.SELECT_REQUEST, (f"{ns}/{i}".encode(),))
        return cursor.fetchone()

    def update(i: int) -> int:
        execute(
            backend.UPDATE_REQUEST,
            (f"git://o/r/main/{i}".encode(), b"accepted", 2, f"{ns}/{i}".encode(), 1),
        )
        return cursor.rowcount

    def uri_create(i: int) -> None:
        execute(backend.INSERT_REQUEST_URI, (b"bench/main", f"{ns}/{i}".encode(), b"id"))

    def uri_get(i: int) -> object:
        execute(backend.SELECT_REQUEST_URI, (b"bench/main", f"{ns}/{i}".encode()))
        return cursor.fetchone()

    def counter_next(i: int) -> int:
        execute(backend.NEXT_COUNTER, (f"{ns}/counter".encode(),))
        return cursor.lastrowid

    return {
        "requests.create": create,
        "requests.get": get,
        "requests.update": update,
        "request_uris.create": uri_create,
        "request_uris.get": uri_get,
        "counter.next": counter_next,
    }


def interleaved(
    ours: Callable[[int], object], raw: Callable[[int], object], count: int, rounds: int
) -> tuple[Latency, Latency]:
    """Measure both sides in alternating rounds of ``count // rounds`` calls.

    On a shared machine the load drifts by the second; alternating rounds give both sides
    the same conditions. Each side's figure is the median over its rounds (p50 and p99) and
    the mean of its means. Call numbers never repeat across rounds, so creates stay new.
    """
    per_round = count // rounds
    ours_rounds: list[Latency] = []
    raw_rounds: list[Latency] = []
    for r in range(rounds):
        base = r * per_round
        ours_rounds.append(measure(_numbered_from(base, ours), per_round, warmup=0))
        raw_rounds.append(measure(_numbered_from(base, raw), per_round, warmup=0))
    return _combined(ours_rounds), _combined(raw_rounds)


def _numbered_from(base: int, operation: Callable[[int], object]) -> Callable[[int], object]:
    return lambda i: operation(base + i)


def _combined(rounds: list[Latency]) -> Latency:
    return Latency(
        count=sum(latency.count for latency in rounds),
        p50_us=statistics.median(latency.p50_us for latency in rounds),
        p99_us=statistics.median(latency.p99_us for latency in rounds),
        mean_us=statistics.fmean(latency.mean_us for latency in rounds),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("STOVEPIPE_TEST_MYSQL_URL"))
    parser.add_argument("--count", type=int, default=2000, help="calls per operation and side")
    parser.add_argument("--rounds", type=int, default=20, help="alternating rounds per operation")
    arguments = parser.parse_args()
    if not arguments.url:
        parser.error("give --url or set STOVEPIPE_TEST_MYSQL_URL")
    migrate(arguments.url)
    count: int = arguments.count
    rounds: int = arguments.rounds

    raw_connection = pymysql.connect(**parse_url(arguments.url).connect_arguments())
    with open_storage(arguments.url) as storage:
        ours = operations(storage, uuid.uuid4().hex)
        raw = raw_operations(raw_connection, uuid.uuid4().hex)
        # In contract order, so that get and update find what create wrote.
        rows = [(name, *interleaved(ours[name], raw[name], count, rounds)) for name in ours]
    raw_connection.close()
    print_comparison(
        f"mysql:// vs raw PyMySQL, same statements and settings "
        f"({count} calls per operation and side, {rounds} alternating rounds)",
        rows,
    )


if __name__ == "__main__":
    main()
