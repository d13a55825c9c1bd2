"""Per-operation latency of the embedded backends, memory and SQLite.

    python -m benchmarks.bench_storage [--count N]

SQLite is printed next to the raw sqlite3 module executing the same statements on a
connection with the same settings (autocommit, WAL, synchronous=FULL), in the same run.
"""

from __future__ import annotations

import argparse
import pathlib
import sqlite3
import tempfile
import uuid
from collections.abc import Callable

from benchmarks.timing import Latency, measure, print_comparison
from stovepipe.entity import Request, RequestState
from stovepipe.storage import Storage, open_storage


def operations(storage: Storage, ns: str) -> dict[str, Callable[[int], object]]:
    """One callable per contract operation; call i touches keys of its own."""

    def request(i: int, version: int = 1) -> Request:
        return Request(
            f"{ns}/{i}", "bench/main", f"git://o/r/main/{i}", RequestState.ACCEPTED, version
        )

    return {
        "requests.create": lambda i: storage.requests.create(request(i)),
        "requests.get": lambda i: storage.requests.get(f"{ns}/{i}"),
        "requests.update": lambda i: storage.requests.update(
            request(i), old_version=1, new_version=2
        ),
        "request_uris.create": lambda i: storage.request_uris.create(
            "bench/main", f"{ns}/{i}", "id"
        ),
        "request_uris.get": lambda i: storage.request_uris.get_id_by_uri("bench/main", f"{ns}/{i}"),
        "counter.next": lambda i: storage.counter.next(f"{ns}/counter"),
    }


def raw_sqlite_operations(
    connection: sqlite3.Connection, ns: str
) -> dict[str, Callable[[int], object]]:
    """The same statements the SQLite backend runs, straight on one sqlite3 connection."""
    execute = connection.execute
    return {
        "requests.create": lambda i: execute(
            "INSERT INTO request (id, queue, uri, state, version) VALUES (?, ?, ?, ?, ?)",
            (f"{ns}/{i}", "bench/main", f"git://o/r/main/{i}", "accepted", 1),
        ),
        "requests.get": lambda i: execute(
            "SELECT queue, uri, state, version FROM request WHERE id = ?", (f"{ns}/{i}",)
        ).fetchone(),
        "requests.update": lambda i: execute(
            "UPDATE request SET uri = ?, state = ?, version = ? WHERE id = ? AND version = ?",
            (f"git://o/r/main/{i}", "accepted", 2, f"{ns}/{i}", 1),
        ),
        "request_uris.create": lambda i: execute(
            "INSERT INTO request_uri (queue, uri, request_id) VALUES (?, ?, ?)",
            ("bench/main", f"{ns}/{i}", "id"),
        ),
        "request_uris.get": lambda i: execute(
            "SELECT request_id FROM request_uri WHERE queue = ? AND uri = ?",
            ("bench/main", f"{ns}/{i}"),
        ).fetchone(),
        "counter.next": lambda i: execute(
            "INSERT INTO counter (domain, value) VALUES (?, 1)"
            " ON CONFLICT (domain) DO UPDATE SET value = value + 1 RETURNING value",
            (f"{ns}/counter",),
        ).fetchall(),
    }


def run(ops: dict[str, Callable[[int], object]], count: int) -> dict[str, Latency]:
    # In contract order, so that get and update find what create wrote.
    return {name: measure(op, count, warmup=0) for name, op in ops.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="calls per operation")
    count = parser.parse_args().count

    with open_storage("memory://") as storage:
        memory = run(operations(storage, "m"), count)
    print(f"\nmemory://  ({count} calls per operation)")
    for name, latency in memory.items():
        print(f"{name:<22}p50 {latency.p50_us:8.1f} us   p99 {latency.p99_us:8.1f} us")

    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "bench.db"
        with open_storage(f"sqlite:///{path}") as storage:
            ours = run(operations(storage, uuid.uuid4().hex), count)
        raw_connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        raw_connection.execute("PRAGMA synchronous = full")
        raw = run(raw_sqlite_operations(raw_connection, uuid.uuid4().hex), count)
        raw_connection.close()
    print_comparison(
        f"sqlite:// vs raw sqlite3, same statements ({count} calls per operation)",
        [(name, ours[name], raw[name]) for name in ours],
    )


if __name__ == "__main__":
    main()
