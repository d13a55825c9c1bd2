"""Redis backend against raw redis-py issuing the same commands, in the same run.

    python -m benchmarks.bench_redis [redis://127.0.0.1:6379/15] [--count N]

The URL defaults to ``STOVEPIPE_TEST_REDIS_URL``, then ``redis://127.0.0.1:6379/15``. Every
key written lives under a fresh prefix and is deleted at the end.

Each operation runs through ``open_storage`` (limit checks, key and value encoding, error
mapping) and, beside it, as the same commands on a redis-py pool with the same settings, two
ways: through the ``redis.Redis`` client's methods (what an application would write), and as
bare sends on a pooled connection (the least redis-py can do; the backend works this way).
A request update is the two pipelined sends in both raw columns: redis-py's ``Pipeline`` sends
``WATCH`` on its own, which would cost a third round trip. A queue or build update is one
``EVALSHA`` of the backend's own compare-and-set script in every column. Round trips are
counted by wrapping the connections' send: one send, one round trip.
"""

from __future__ import annotations

import argparse
import json
import os
import uuid
from collections.abc import Callable
from typing import Any

import redis
import redis.connection
import redis.retry
from redis.backoff import NoBackoff
from stovepipe_redis.backend import COMPARE_AND_SET

from benchmarks.timing import Latency, measure, print_comparison
from stovepipe.entity import Build, BuildStatus, Fact, Queue, Request, RequestState
from stovepipe.storage import VersionMismatch, open_storage

QUEUE = "monorepo/main"
URI = "git://github.com/example/monorepo/main/" + "0" * 40
LOG = "https://ci.example.com/builds/monorepo/main/12345/log"
BUILD_TAIL = b',"request_id":'
WARMUP = 200

Operation = Callable[[int], object]


class RoundTrips:
    """Counts the sends of every redis-py connection in this process."""

    def __init__(self) -> None:
        self.sent = 0
        self.last = 0.0
        send: Callable[..., None] = redis.connection.Connection.send_packed_command

        def counting_send(connection: redis.connection.Connection, *args: Any, **kw: Any) -> None:
            self.sent += 1
            send(connection, *args, **kw)

        redis.connection.Connection.send_packed_command = counting_send  # type: ignore[assignment,method-assign]

    def per_call(self, operation: Callable[[int], object], count: int) -> Latency:
        """Measure ``operation`` and remember its round trips per call."""
        before = self.sent
        latency = measure(operation, count, warmup=WARMUP)
        self.last = (self.sent - before) / (count + WARMUP)
        return latency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "url",
        nargs="?",
        default=os.environ.get("STOVEPIPE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"),
    )
    parser.add_argument("--count", type=int, default=2000, help="timed calls per round")
    parser.add_argument("--rounds", type=int, default=7, help="best p50 of this many rounds")
    args = parser.parse_args()
    count: int = args.count
    prefix = f"bench-{uuid.uuid4().hex}:"
    raw_prefix = prefix + "raw:"
    trips = RoundTrips()

    storage = open_storage(f"{args.url}?prefix={prefix}")
    # The backend's pool settings: blocking pool of 50, 5 s timeouts, no driver retries.
    pool: redis.ConnectionPool = redis.BlockingConnectionPool.from_url(
        args.url,
        timeout=5.0,
        socket_connect_timeout=5.0,
        socket_timeout=5.0,
        retry=redis.retry.Retry(NoBackoff(), 0),
    )
    client = redis.Redis(connection_pool=pool)

    def request(n: int, version: int = 1) -> Request:
        return Request(
            id=f"request/{QUEUE}/{n}",
            queue=QUEUE,
            uri=URI,
            state=RequestState.ACCEPTED,
            version=version,
        )

    def compact(fields: dict[str, object]) -> bytes:
        return json.dumps(fields, separators=(",", ":")).encode()

    def value(version: int) -> bytes:
        fields = {"queue": QUEUE, "uri": URI, "state": "accepted", "version": version}
        fields |= {"build_strategy": "", "base_uri": ""}
        return compact(fields)

    # The pipeline's stores: the values the backend writes, built once for the raw columns.
    def queue(n: int, version: int = 1) -> Queue:
        return Queue(f"{QUEUE}/{n}", latest_request_id=f"request/{QUEUE}/1", version=version)

    def build(n: int, version: int = 1) -> Build:
        return Build(f"build/{n}", f"request/{QUEUE}/1", BuildStatus.ACCEPTED, LOG, version)

    def fact(n: int) -> Fact:
        return Fact(QUEUE, f"{URI}{n}", "", 0.0, f"request/{QUEUE}/1", 1764439245.123456)

    def queue_value(version: int) -> bytes:
        return compact(
            {
                "version": version,
                "latest_request_id": f"request/{QUEUE}/1",
                "last_green_uri": "",
                "last_green_request_id": "",
                "in_flight": 0,
            }
        )

    build_value = compact(
        {"version": 1, "status": "accepted", "log": LOG, "request_id": f"request/{QUEUE}/1"}
    )
    build_head_v2 = compact({"version": 2, "status": "accepted", "log": LOG})[:-1]
    fact_value = compact(
        {"degree": 0.0, "request_id": f"request/{QUEUE}/1", "created_at": 1764439245.123456}
    )
    queue_v1, queue_v2, head_v1 = queue_value(1), queue_value(2), b'{"version":1,'
    sha, sha_text = COMPARE_AND_SET.sha, COMPARE_AND_SET.sha.decode()

    def raw_queue_key(n: int) -> bytes:
        return f"{raw_prefix}queue:{QUEUE}/{n}".encode()

    def raw_build_key(n: int) -> bytes:
        return f"{raw_prefix}build:build/{n}".encode()

    def raw_fact_key(n: int) -> bytes:
        uri = f"{URI}{n}"
        return f"{raw_prefix}fact:{len(QUEUE)}:{QUEUE}:{len(uri)}:{uri}:0:".encode()

    def checked(written: int) -> None:
        if not written:
            raise VersionMismatch("raw compare-and-set")

    def raw_request_key(n: int) -> bytes:
        return f"{raw_prefix}request:request/{QUEUE}/{n}".encode()

    def raw_uri_key(n: int) -> bytes:
        return f"{raw_prefix}request_uri:{len(QUEUE)}:{QUEUE}:{URI}{n}".encode()

    value_v1, value_v2 = value(1), value(2)

    def bare(*command: str | bytes) -> Any:
        connection: Any = pool.get_connection()
        try:
            connection.send_command(*command)
            return connection.read_response()
        finally:
            pool.release(connection)

    def raw_update(n: int) -> None:
        key = raw_request_key(n)
        connection: Any = pool.get_connection()
        try:
            connection.send_packed_command(connection.pack_commands([("WATCH", key), ("GET", key)]))
            connection.read_response()
            stored = connection.read_response()
            if json.loads(stored)["version"] != 1:
                raise VersionMismatch(key)
            connection.send_packed_command(
                connection.pack_commands([("MULTI",), ("SET", key, value_v2), ("EXEC",)])
            )
            connection.read_response()
            connection.read_response()
            assert connection.read_response() is not None
        finally:
            pool.release(connection)

    def our_update(n: int) -> None:
        storage.requests.update(request(n), old_version=1, new_version=2)

    def our_queue_update(n: int) -> None:
        storage.queues.update(queue(n), old_version=1, new_version=2)

    def our_build_update(n: int) -> None:
        storage.builds.update(build(n), old_version=1, new_version=2)

    # The raw columns start with the script cached, as the backend is after its warm-up.
    client.script_load(COMPARE_AND_SET.source)

    # Each round writes fresh keys: creates need absent keys, updates need version-1 requests.
    # Per operation: ours, then raw through the client, then raw bare.
    def operations(base: int) -> list[tuple[str, Operation, Operation, Operation]]:
        counter_key = f"{raw_prefix}counter:request/{QUEUE}"
        return [
            (
                "requests.create",
                lambda i: storage.requests.create(request(base + i)),
                lambda i: client.set(raw_request_key(base + i), value_v1, nx=True),
                lambda i: bare("SET", raw_request_key(base + count + WARMUP + i), value_v1, "NX"),
            ),
            (
                "requests.get",
                lambda i: storage.requests.get(f"request/{QUEUE}/{base + i}"),
                lambda i: client.get(raw_request_key(base + i)),
                lambda i: bare("GET", raw_request_key(base + i)),
            ),
            (
                "requests.update",
                lambda i: our_update(base + i),
                lambda i: raw_update(base + i),
                lambda i: raw_update(base + count + WARMUP + i),
            ),
            (
                "request_uris.create",
                lambda i: storage.request_uris.create(QUEUE, f"{URI}{base + i}", "request/x/1"),
                lambda i: client.set(raw_uri_key(base + i), b"request/x/1", nx=True),
                lambda i: bare("SET", raw_uri_key(base + count + WARMUP + i), b"request/x/1", "NX"),
            ),
            (
                "request_uris.get",
                lambda i: storage.request_uris.get_id_by_uri(QUEUE, f"{URI}{base + i}"),
                lambda i: client.get(raw_uri_key(base + i)),
                lambda i: bare("GET", raw_uri_key(base + i)),
            ),
            (
                "counter.next",
                lambda i: storage.counter.next(f"request/{QUEUE}"),
                lambda i: client.incr(counter_key),
                lambda i: bare("INCR", counter_key),
            ),
            (
                "queues.create",
                lambda i: storage.queues.create(queue(base + i)),
                lambda i: client.set(raw_queue_key(base + i), queue_v1, nx=True),
                lambda i: bare("SET", raw_queue_key(base + count + WARMUP + i), queue_v1, "NX"),
            ),
            (
                "queues.get",
                lambda i: storage.queues.get(f"{QUEUE}/{base + i}"),
                lambda i: client.get(raw_queue_key(base + i)),
                lambda i: bare("GET", raw_queue_key(base + i)),
            ),
            (
                "queues.update",
                lambda i: our_queue_update(base + i),
                lambda i: checked(
                    client.evalsha(sha_text, 1, raw_queue_key(base + i), head_v1, queue_v2, b"")
                ),
                lambda i: checked(
                    bare(
                        "EVALSHA",
                        sha,
                        b"1",
                        raw_queue_key(base + count + WARMUP + i),
                        head_v1,
                        queue_v2,
                        b"",
                    )
                ),
            ),
            (
                "builds.create",
                lambda i: storage.builds.create(build(base + i)),
                lambda i: client.set(raw_build_key(base + i), build_value, nx=True),
                lambda i: bare("SET", raw_build_key(base + count + WARMUP + i), build_value, "NX"),
            ),
            (
                "builds.get",
                lambda i: storage.builds.get(f"build/{base + i}"),
                lambda i: client.get(raw_build_key(base + i)),
                lambda i: bare("GET", raw_build_key(base + i)),
            ),
            (
                "builds.update",
                lambda i: our_build_update(base + i),
                lambda i: checked(
                    client.evalsha(
                        sha_text, 1, raw_build_key(base + i), head_v1, build_head_v2, BUILD_TAIL
                    )
                ),
                lambda i: checked(
                    bare(
                        "EVALSHA",
                        sha,
                        b"1",
                        raw_build_key(base + count + WARMUP + i),
                        head_v1,
                        build_head_v2,
                        BUILD_TAIL,
                    )
                ),
            ),
            (
                "facts.create",
                lambda i: storage.facts.create(fact(base + i)),
                lambda i: client.set(raw_fact_key(base + i), fact_value, nx=True),
                lambda i: bare("SET", raw_fact_key(base + count + WARMUP + i), fact_value, "NX"),
            ),
            (
                "facts.get",
                lambda i: storage.facts.get(QUEUE, f"{URI}{base + i}", ""),
                lambda i: client.get(raw_fact_key(base + i)),
                lambda i: bare("GET", raw_fact_key(base + i)),
            ),
        ]

    best: dict[str, list[Latency]] = {}
    round_trips: dict[str, list[float]] = {}
    try:
        for round_number in range(args.rounds):
            # Room for two sets of keys per round: one for ours and the client, one for bare.
            base = round_number * 2 * (count + WARMUP) + WARMUP
            for name, *variants in operations(base):
                # Rotate who goes first, so no variant always runs on a warmer or colder machine.
                latencies: list[Latency] = [Latency(0, 0, 0, 0)] * len(variants)
                round_trips[name] = [0.0] * len(variants)
                for k in range(len(variants)):
                    which = (k + round_number) % len(variants)
                    latencies[which] = trips.per_call(variants[which], count)
                    round_trips[name][which] = trips.last
                previous = best.get(name, latencies)
                best[name] = [
                    min(a, b, key=lambda x: x.p50_us)
                    for a, b in zip(previous, latencies, strict=True)
                ]
        title = f"Redis backend, {args.url}, {count} calls, best p50 of {args.rounds} rounds"
        print_comparison(
            f"{title}; raw = redis.Redis client methods",
            [(name, ours, client_raw) for name, (ours, client_raw, _) in best.items()],
        )
        print_comparison(
            f"{title}; raw = bare sends on a pooled connection",
            [(name, ours, bare_raw) for name, (ours, _, bare_raw) in best.items()],
        )
        print(f"\n{'round trips per call':<22}{'ours':>10}{'client':>10}{'bare':>10}")
        for name, (ours_trips, client_trips, bare_trips) in round_trips.items():
            print(f"{name:<22}{ours_trips:>10.2f}{client_trips:>10.2f}{bare_trips:>10.2f}")
    finally:
        keys = list(client.scan_iter(match=prefix.encode() + b"*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
        storage.close()
        client.close()
        pool.disconnect()


if __name__ == "__main__":
    main()
