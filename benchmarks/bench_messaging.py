"""Messaging queues: publish and claim+ack latency next to the raw driver, publish-to-consume
latency, and drain throughput, per implementation.

    python benchmarks/bench_messaging.py [--count N] [--url URL ...]

Without ``--url`` it covers ``memory://``, a SQLite file, and the servers named by
``STOVEPIPE_TEST_MYSQL_URL`` and ``STOVEPIPE_TEST_REDIS_URL`` when set. Each URL gets a
fresh topic, so a shared server is fine.

* publish, claim+ack: one call each, against the raw driver doing the same minimal round trips
  (SQL: INSERT; SELECT the head, conditional UPDATE, DELETE. Redis: XADD; XREADGROUP, then
  XACK+XDEL in one MULTI). ack+claim next: a key's message consumed by acknowledging the one
  before and leasing it in the same call, as a consumer on a busy key does (a broker that does
  not combine claims after the ack), against the same raw claim+ack.
* publish -> handler: one message at a time, the consumer in this process (a consumer in
  another process sees it within its ``poll_interval`` instead).
* drain: messages already queued on 16 keys, and on one key, consumed by 4 workers, messages
  per second (one key: its messages go one at a time, so this is the per-key chain's rate).
* duplicates: 10,000 publishes of 100 ids (4 publisher threads, consumers running, as
  polling ingest does), until the topic's backlog is empty: publishes per second and the
  messages the handler saw; next to the same publishes each with a fresh id.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator

from benchmarks.timing import Latency, measure, print_comparison
from stovepipe.messaging import Message
from stovepipe.messaging.brokered import Broker, BrokeredMessaging, Delivery
from stovepipe.messaging.contract import new_message_id
from stovepipe.messaging.registry import open_messaging


def raw_sqlite(url: str, topic: str) -> tuple[Callable[[int], object], Callable[[int], object]]:
    """Publish and claim+ack with bare sqlite3 statements on the queue's table."""
    connection = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    now = "((julianday('now') - 2440587.5) * 86400.0)"
    topic_bytes = b"raw-" + topic.encode()

    def publish(i: int) -> object:
        return connection.execute(
            "INSERT INTO stovepipe_queue_message"
            " (topic, partition_key, payload, attempt, available_at, published_at, message_id)"
            f" VALUES (?, ?, ?, 0, {now}, {now}, ?)",
            (topic_bytes, b"k", b"x" * 64, uuid.uuid4().hex.encode()),
        )

    def claim_ack(i: int) -> object:
        (row_id,) = connection.execute(
            "SELECT MIN(id) FROM stovepipe_queue_message WHERE topic = ?", (topic_bytes,)
        ).fetchone()
        connection.execute(
            f"UPDATE stovepipe_queue_message SET lease_until = {now} + 30, attempt = attempt + 1"
            " WHERE id = ?",
            (row_id,),
        )
        return connection.execute("DELETE FROM stovepipe_queue_message WHERE id = ?", (row_id,))

    return publish, claim_ack


def raw_mysql(url: str, topic: str) -> tuple[Callable[[int], object], Callable[[int], object]]:
    """Publish and claim+ack with bare PyMySQL statements on the queue's table."""
    import urllib.parse

    import pymysql

    parts = urllib.parse.urlsplit(url)
    connection = pymysql.connect(
        host=parts.hostname,
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
        database=parts.path.lstrip("/"),
        autocommit=True,
    )
    cursor = connection.cursor()
    now = "UNIX_TIMESTAMP(NOW(6))"
    topic_bytes = b"raw-" + topic.encode()

    def publish(i: int) -> object:
        return cursor.execute(
            "INSERT INTO stovepipe_queue_message"
            " (topic, partition_key, payload, attempt, available_at, published_at, message_id)"
            f" VALUES (%s, %s, %s, 0, {now}, {now}, %s)",
            (topic_bytes, b"k", b"x" * 64, uuid.uuid4().hex.encode()),
        )

    def claim_ack(i: int) -> object:
        cursor.execute(
            "SELECT MIN(id) FROM stovepipe_queue_message WHERE topic = %s", (topic_bytes,)
        )
        row = cursor.fetchone()
        assert row is not None
        row_id = row[0]
        cursor.execute(
            f"UPDATE stovepipe_queue_message SET lease_until = {now} + 30, attempt = attempt + 1"
            " WHERE id = %s",
            (row_id,),
        )
        return cursor.execute("DELETE FROM stovepipe_queue_message WHERE id = %s", (row_id,))

    return publish, claim_ack


def raw_redis(url: str, topic: str) -> tuple[Callable[[int], object], Callable[[int], object]]:
    """Publish and claim+ack with bare redis-py stream commands."""
    import redis

    client = redis.Redis.from_url(url.split("?", 1)[0])
    stream = f"bench:raw:{topic}"
    client.xgroup_create(stream, "g", id="0", mkstream=True)

    def publish(i: int) -> object:
        return client.xadd(stream, {"key": "k", "payload": b"x" * 64})

    def claim_ack(i: int) -> object:
        read: list[tuple[bytes, list[tuple[bytes, object]]]] = client.xreadgroup(  # type: ignore[assignment]
            "g", "c", {stream: ">"}, count=1
        )
        entry_id = read[0][1][0][0]
        with client.pipeline(transaction=True) as pipe:
            pipe.xack(stream, "g", entry_id)
            pipe.xdel(stream, entry_id)
            return pipe.execute()

    return publish, claim_ack


RAW = {"sqlite": raw_sqlite, "mysql": raw_mysql, "redis": raw_redis}


def publish_to_handler(url: str, count: int) -> Latency:
    """Latency from ``publish`` returning... to the handler running, one message at a time."""
    queue = open_messaging(url)
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    arrived = threading.Event()

    def handle(message: Message) -> None:
        arrived.set()

    queue.subscribe(topic, handle)
    queue.start()

    def round_trip(i: int) -> None:
        arrived.clear()
        queue.publish(topic, "k", b"x" * 64)
        if not arrived.wait(10):
            raise RuntimeError("a message was not delivered within 10 s")

    try:
        return measure(round_trip, count, warmup=20)
    finally:
        queue.stop(timeout=5)


def drain_rate(url: str, count: int, keys: int = 16) -> float:
    """Messages per second consumed by 4 workers from a backlog on ``keys`` keys."""
    queue = open_messaging(url + ("&" if "?" in url else "?") + "workers=4")
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    for n in range(count):
        queue.publish(topic, f"key-{n % keys}", b"x" * 64)
    done = threading.Event()
    handled = 0
    lock = threading.Lock()

    def handle(message: Message) -> None:
        nonlocal handled
        with lock:
            handled += 1
            if handled == count:
                done.set()

    queue.subscribe(topic, handle)
    start = time.perf_counter()
    queue.start()
    try:
        if not done.wait(300):
            raise RuntimeError(f"drained {handled} of {count} in 300 s")
        return count / (time.perf_counter() - start)
    finally:
        queue.stop(timeout=5)


def duplicate_drain(
    url: str, publishes: int = 10_000, ids: int = 100, *, fresh_ids: bool = False
) -> tuple[float, int]:
    """Publish ``publishes`` messages cycling over ``ids`` ids (or each with a fresh id) from 4
    threads while 4 workers consume; wait until the backlog is empty. Returns publishes per
    second over the whole run and how many deliveries the handler saw."""
    queue = open_messaging(url + ("&" if "?" in url else "?") + "workers=4")
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    handled = 0
    lock = threading.Lock()

    def handle(message: Message) -> None:
        nonlocal handled
        with lock:
            handled += 1

    def publish(first: int) -> None:
        for n in range(first, publishes, 4):
            message_id = None if fresh_ids else f"request/q/{n % ids}"
            queue.publish(topic, f"key-{n % ids % 16}", b"x" * 64, message_id=message_id)

    queue.subscribe(topic, handle)
    queue.start()
    start = time.perf_counter()
    try:
        threads = [threading.Thread(target=publish, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        deadline = time.monotonic() + 300
        while queue.backlog(topic):
            if time.monotonic() > deadline:
                raise RuntimeError(f"backlog {queue.backlog(topic)} left after 300 s")
            time.sleep(0.005)
        return publishes / (time.perf_counter() - start), handled
    finally:
        queue.stop(timeout=5)


def broker_operations(
    url: str, count: int
) -> tuple[
    Callable[[int], object], Callable[[int], object], Callable[[int], object], Callable[[], None]
]:
    """Publish, claim+ack, and ack+claim-next (one message of a key consumed by the
    acknowledgement of the one before, the consumer's path on a busy key) through the
    queue's own broker; and its close."""
    queue = open_messaging(url)
    assert isinstance(queue, BrokeredMessaging)
    broker: Broker = queue.broker
    topic = f"bench-{uuid.uuid4().hex[:8]}"

    def publish(i: int) -> object:
        broker.publish(topic, "k", b"x" * 64, new_message_id())
        return None

    def claim_ack(i: int) -> object:
        delivery = broker.claim([topic])
        if delivery is None:
            raise RuntimeError("nothing to claim")
        broker.ack(delivery)
        return None

    chain_topic = f"bench-{uuid.uuid4().hex[:8]}"
    held: list[Delivery] = []

    def ack_claim_next(i: int) -> object:
        if not held:  # the first (warm-up) call: a backlog on one key, its head claimed
            for _ in range(count + 100):
                broker.publish(chain_topic, "k", b"x" * 64, new_message_id())
            first = broker.claim([chain_topic])
            if first is None:
                raise RuntimeError("nothing to claim")
            held.append(first)
        following = broker.ack_and_claim_next(held.pop())
        if following is None:
            # A broker that does not combine: claim as the consumer then does.
            following = broker.claim([chain_topic])
        if following is None:
            raise RuntimeError("nothing to claim")
        held.append(following)
        return None

    def close() -> None:
        queue.stop(timeout=5)

    return publish, claim_ack, ack_claim_next, close


@contextlib.contextmanager
def targets(urls: list[str]) -> Iterator[list[str]]:
    with tempfile.TemporaryDirectory() as directory:
        if urls:
            yield urls
            return
        found = ["memory://", f"sqlite:///{directory}/bench-queue.db"]
        for scheme in ("mysql", "redis"):
            url = os.environ.get(f"STOVEPIPE_TEST_{scheme.upper()}_URL")
            if url:
                found.append(url)
            else:
                print(f"({scheme}: set STOVEPIPE_TEST_{scheme.upper()}_URL to include it)")
        yield found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500, help="calls per measurement")
    parser.add_argument("--url", action="append", default=[], help="queue URL (repeatable)")
    parser.add_argument(
        "--drain-only", action="store_true", help="only the drain rates (16 keys, one key)"
    )
    args = parser.parse_args()
    count: int = args.count
    drains: list[tuple[str, float, float]] = []
    summary: list[tuple[str, Latency, float]] = []
    duplicates: list[tuple[str, float, int, float, int]] = []
    with targets(args.url) as urls:
        for url in urls:
            scheme = url.split("://", 1)[0]
            drains.append(
                (scheme, drain_rate(url, max(count, 1000)), drain_rate(url, max(count, 1000), 1))
            )
            if args.drain_only:
                continue
            if scheme in RAW:
                publish, claim_ack, ack_claim_next, close = broker_operations(url, count)
                raw_publish, raw_claim_ack = RAW[scheme](url, f"{uuid.uuid4().hex[:8]}")
                rows = [
                    ("publish", measure(publish, count), measure(raw_publish, count)),
                    ("claim+ack", measure(claim_ack, count), measure(raw_claim_ack, count)),
                ]
                # The same message consumed, its claim folded into the ack before it.
                rows.append(("ack+claim next", measure(ack_claim_next, count), rows[1][2]))
                close()
                print_comparison(f"{scheme}: broker calls next to the raw driver", rows)
            summary.append((scheme, publish_to_handler(url, count), drains[-1][1]))
            same_rate, same_handled = duplicate_drain(url)
            fresh_rate, fresh_handled = duplicate_drain(url, fresh_ids=True)
            duplicates.append((scheme, same_rate, same_handled, fresh_rate, fresh_handled))
    print(f"\ndrain of {max(count, 1000)} queued messages (4 workers), messages per second")
    print(f"{'queue':<10}{'16 keys':>10}{'1 key':>10}")
    for scheme, several, one in drains:
        print(f"{scheme:<10}{several:>10.0f}{one:>10.0f}")
    if args.drain_only:
        return 0
    print("\npublish -> handler (consumer in this process), and drain rate (4 workers, 16 keys)")
    print(f"{'queue':<10}{'p50 us':>10}{'p99 us':>10}{'mean us':>10}{'msgs/s':>10}")
    for scheme, latency, rate in summary:
        print(
            f"{scheme:<10}{latency.p50_us:>10.1f}{latency.p99_us:>10.1f}"
            f"{latency.mean_us:>10.1f}{rate:>10.0f}"
        )
    print("\n10,000 publishes of 100 ids until drained (4 publishers, 4 workers)")
    print(f"{'queue':<10}{'ids/s':>10}{'handled':>10}{'fresh/s':>10}{'handled':>10}")
    for scheme, same_rate, same_handled, fresh_rate, fresh_handled in duplicates:
        print(
            f"{scheme:<10}{same_rate:>10.0f}{same_handled:>10}"
            f"{fresh_rate:>10.0f}{fresh_handled:>10}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
