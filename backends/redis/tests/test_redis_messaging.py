"""The redis:// messaging queue lives with the Redis backend: its URL options (TLS,
``prefix``), its pool construction and its error mapping. One test per fault it fixes."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.exceptions
from stovepipe_redis.backend import mapped_error
from stovepipe_redis.messaging import RedisStreamsBroker, redis_broker

from stovepipe.messaging import Message
from stovepipe.messaging.brokered import BrokeredMessaging
from stovepipe.messaging.registry import InspectableMessaging, default_messaging_url, open_messaging
from stovepipe.storage import Unavailable

TIMEOUT = 20.0


@pytest.fixture
def deployments(url_with: object, raw: redis.Redis, prefix: str) -> Iterator[list[str]]:
    """The storage URLs of two deployments sharing one database with different prefixes (both
    under the test's prefix, so the test's keys are deleted afterwards)."""
    build = url_with
    assert callable(build)
    yield [build(prefix=f"{prefix}{name}:") for name in ("one", "two")]


def test_deployments_with_different_prefixes_share_no_queue(deployments: list[str]) -> None:
    queues: list[InspectableMessaging] = [
        open_messaging(default_messaging_url(url) + "&shards=2") for url in deployments
    ]
    try:
        topic = f"prefix-{uuid.uuid4().hex[:8]}"
        taken = threading.Event()
        wrong: list[Message] = []
        first, second = queues
        second.subscribe(topic, wrong.append)
        second.start()
        first.subscribe(topic, lambda message: taken.set())
        first.publish(topic, "k", b"for deployment one")
        assert second.backlog(topic) == 0
        first.start()
        assert taken.wait(TIMEOUT)
        assert wrong == [], "one deployment's worker took the other's message"
    finally:
        for queue in queues:
            queue.stop(timeout=5)


def test_the_queue_prefix_follows_the_storage_prefix(url_with: object, prefix: str) -> None:
    assert callable(url_with)
    broker = redis_broker(
        default_messaging_url(url_with(prefix=f"{prefix}x:")), visibility_timeout=1
    )
    try:
        assert broker._prefix == f"{prefix}x:mq:".encode()
    finally:
        broker.close()


def test_a_rediss_queue_takes_the_storage_tls_options() -> None:
    broker = redis_broker(
        default_messaging_url("rediss://127.0.0.1:1/0?ssl_cert_reqs=none&timeout=0.5"),
        visibility_timeout=1,
    )
    try:
        pool = broker._client.connection_pool
        assert pool.connection_class is redis.SSLConnection
        assert pool.connection_kwargs["ssl_cert_reqs"] == "none"
    finally:
        broker.close()


@pytest.mark.parametrize("reply", ["READONLY You can't write", "LOADING Redis is loading"])
def test_storage_and_messaging_share_one_mapping(reply: str) -> None:
    error = redis.exceptions.ResponseError(reply)
    assert isinstance(mapped_error(error), Unavailable)


def test_an_unreachable_redis_is_messaging_unavailable_with_the_cause_chained() -> None:
    queue = open_messaging("redis://127.0.0.1:1/0?timeout=0.5")
    assert isinstance(queue, BrokeredMessaging)
    assert isinstance(queue.broker, RedisStreamsBroker)
    try:
        with pytest.raises(Exception) as raised:
            queue.publish("t", "k", b"x")
        assert raised.value.transient  # type: ignore[attr-defined]
        assert isinstance(raised.value.__cause__, redis.exceptions.RedisError)
    finally:
        queue.stop(timeout=0)


def consumers(raw: redis.Redis, stream: bytes) -> dict[bytes, int]:
    """The consumers of the stream's group: name -> pending entries."""
    listed: Any = raw.xinfo_consumers(stream, b"stovepipe")
    found: dict[bytes, int] = {}
    for entry in listed:
        name = entry["name"]
        found[name.encode() if isinstance(name, str) else bytes(name)] = int(entry["pending"])
    return found


def test_a_consumer_leaves_its_groups_when_it_stops(
    url_with: object, raw: redis.Redis, prefix: str
) -> None:
    assert callable(url_with)
    queue = open_messaging(url_with(prefix=f"{prefix}mq:", shards=2))
    assert isinstance(queue, BrokeredMessaging)
    broker = queue.broker
    assert isinstance(broker, RedisStreamsBroker)
    topic = f"leave-{uuid.uuid4().hex[:8]}"
    done = threading.Event()
    queue.subscribe(topic, lambda message: done.set())
    queue.start()
    queue.publish(topic, "k", b"x")
    assert done.wait(TIMEOUT)
    streams = [broker._stream(topic, index) for index in range(2)]
    assert any(broker._consumer in consumers(raw, stream) for stream in streams)
    queue.stop(timeout=5)
    for stream in streams:
        assert broker._consumer not in consumers(raw, stream), "left behind in the group"


def test_stale_consumers_without_pending_entries_are_removed(
    url_with: object, raw: redis.Redis, prefix: str
) -> None:
    assert callable(url_with)
    broker = redis_broker(url_with(prefix=f"{prefix}mq:", shards=1), visibility_timeout=0.2)
    try:
        topic = f"stale-{uuid.uuid4().hex[:8]}"
        broker.publish(topic, "k", b"x", "m-1")
        stream = broker._stream(topic, 0)
        # Two consumers of processes gone: one idle with nothing pending, one holding an entry.
        raw.xgroup_createconsumer(stream, "stovepipe", "gone-idle")
        raw.xreadgroup("stovepipe", "gone-holding", {stream: ">"}, count=1)
        time.sleep(0.3)  # longer than the visibility timeout
        assert broker.remove_stale_consumers() >= 1
        left = consumers(raw, stream)
        assert b"gone-idle" not in left
        assert left.get(b"gone-holding") == 1, "a consumer with a pending entry must stay"
    finally:
        broker.close()


def test_settling_a_delivery_gives_its_shard_to_whichever_consumer_claims_next(
    url_with: object, raw: redis.Redis, prefix: str
) -> None:
    assert callable(url_with)
    url = url_with(prefix=f"{prefix}mq:", shards=1)
    first, second = (redis_broker(url, visibility_timeout=30) for _ in range(2))
    try:
        topic = f"settle-{uuid.uuid4().hex[:8]}"
        for n in range(3):
            first.publish(topic, "k", f"{n}".encode(), f"m-{n}")
        delivery = first.claim([topic])
        assert delivery is not None and delivery.message.payload == b"0"
        assert second.claim([topic]) is None, "the shard is the first consumer's while it delivers"
        first.ack(delivery)
        # The first consumer delivers nothing now: were the shard still its own, the second,
        # idle with the key's work waiting, would never get it.
        taken = second.claim([topic])
        assert taken is not None and taken.message.payload == b"1"
        second.dead_letter(taken, "given up")
        taken = first.claim([topic])
        assert taken is not None and taken.message.payload == b"2"
    finally:
        first.close()
        second.close()


def commands_run(client: redis.Redis) -> int:
    """Commands the server ran, those run by scripts included, but for ``INFO`` itself."""
    stats: Any = client.info("commandstats")
    return sum(int(stat["calls"]) for name, stat in stats.items() if name != "cmdstat_info")


def test_an_idle_claim_runs_one_command_per_topic_not_two_per_shard(
    private_server: str, prefix: str
) -> None:
    counter = redis.Redis.from_url(private_server, socket_timeout=5)
    broker = RedisStreamsBroker(
        redis.Redis.from_url(private_server, socket_timeout=5),
        visibility_timeout=30,
        prefix=f"{prefix}mq:".encode(),
    )
    try:
        topics = [f"idle-{n}-{uuid.uuid4().hex[:8]}" for n in range(2)]
        broker.publish(topics[0], "k", b"x", "m-1")
        delivery = broker.claim(topics)
        assert delivery is not None
        broker.ack(delivery)
        claims = 10
        before = commands_run(counter)
        for _ in range(claims):
            assert broker.claim(topics) is None
        ran = commands_run(counter) - before
        # Each claim: EVALSHA, and EXISTS of each topic's ids set (GET and XLEN of each of
        # the 16 shards of each topic before: 65 a claim).
        assert ran <= claims * (1 + len(topics)), f"{ran} commands for {claims} idle claims"
    finally:
        broker.close()
        keys = list(counter.scan_iter(match=prefix.encode() + b"*", count=1000))
        if keys:
            counter.delete(*keys)
        counter.close()


def test_an_entry_its_topics_ids_set_does_not_show_is_claimed_at_the_next_full_scan(
    redis_url: str, raw: redis.Redis, prefix: str
) -> None:
    # Long enough that the claims between two full scans fall between them on any machine.
    full_scan_interval = 3.0
    broker = RedisStreamsBroker(
        redis.Redis.from_url(redis_url, socket_timeout=5),
        visibility_timeout=30,
        shards=2,
        prefix=f"{prefix}mq:".encode(),
        full_scan_interval=full_scan_interval,
    )
    try:
        topic = f"unmarked-{uuid.uuid4().hex[:8]}"
        assert broker.claim([topic]) is None  # the first claim scans every shard
        for n in range(3):
            broker.publish(topic, f"k{n}", f"{n}".encode(), f"m-{n}")
        raw.delete(broker._ids(topic))  # lost, as after a crash that lost the set alone
        started = time.monotonic()
        assert broker.claim([topic]) is None, "between full scans a claim trusts the ids set"
        claimed: list[bytes] = []
        while len(claimed) < 3 and time.monotonic() - started < TIMEOUT:
            delivery = broker.claim([topic])
            if delivery is None:
                time.sleep(0.05)
                continue
            claimed.append(delivery.message.payload)
            broker.ack(delivery)
        assert sorted(claimed) == [b"0", b"1", b"2"]
        # The first at the next full scan, the others right after it, not one a full scan.
        assert time.monotonic() - started < 3 * full_scan_interval
    finally:
        broker.close()


def claim_within(broker: RedisStreamsBroker, topic: str, timeout: float = TIMEOUT) -> Any:
    """The first delivery ``broker`` claims from ``topic`` within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (delivery := broker.claim([topic])) is None:
        assert time.monotonic() < deadline, "nothing claimed in time"
        time.sleep(0.02)
    return delivery


def test_a_key_parked_by_a_consumer_that_went_away_is_delivered_by_another_once_due(
    url_with: object, raw: redis.Redis, prefix: str
) -> None:
    assert callable(url_with)
    url = url_with(prefix=f"{prefix}mq:", shards=1)
    first, second = (redis_broker(url, visibility_timeout=30) for _ in range(2))
    try:
        topic = f"park-{uuid.uuid4().hex[:8]}"
        first.publish(topic, "k", b"0", "m-0")
        first.publish(topic, "k", b"1", "m-1")
        first.publish(topic, "other", b"x", "m-x")
        held = first.claim([topic])
        assert held is not None and held.message.payload == b"0"
        parked_at = time.monotonic()  # before the hold: its park begins inside it
        first.hold(held, 0.5)
        first.close()  # gone: nobody here moves the key back
        # The shard was given up with the park: its other key goes on at once.
        other = second.claim([topic])
        assert other is not None and other.message.payload == b"x"
        second.ack(other)
        assert second.backlog(topic) == 2, "the parked messages are pending"
        again = claim_within(second, topic)
        assert time.monotonic() - parked_at >= 0.45, "not before the hold is over"
        assert (again.message.payload, again.message.attempt) == (b"0", 1)
        second.ack(again)
        after = claim_within(second, topic)
        assert (after.message.payload, after.message.attempt) == (b"1", 1)
        second.ack(after)
        assert second.backlog(topic) == 0
        assert not raw.exists(second._park(topic, b"k"), second._parked(topic))
    finally:
        first.close()
        second.close()


def test_a_hold_after_the_lease_ran_out_leaves_the_entry_to_its_new_owner(
    url_with: object, raw: redis.Redis, prefix: str
) -> None:
    assert callable(url_with)
    url = url_with(prefix=f"{prefix}mq:", shards=1)
    first, second = (redis_broker(url, visibility_timeout=0.2) for _ in range(2))
    try:
        topic = f"stale-hold-{uuid.uuid4().hex[:8]}"
        first.publish(topic, "k", b"0", "m-0")
        stale = first.claim([topic])
        assert stale is not None
        time.sleep(0.3)  # the lease runs out: the first consumer stalled
        taken = claim_within(second, topic)
        assert (taken.message.payload, taken.message.attempt) == (b"0", 2)
        first.hold(stale, 30.0)
        assert not raw.exists(first._park(topic, b"k")), "parked from under its new owner"
        assert raw.zcard(first._parked(topic)) == 0
        second.ack(taken)
        assert second.backlog(topic) == 0
    finally:
        first.close()
        second.close()
