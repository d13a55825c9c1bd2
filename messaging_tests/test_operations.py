"""What operators rely on: metrics of the durable queues, prompt failure when the server is
gone, and choosing a queue by URL."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from stovepipe.messaging import Message, PermanentFailure
from stovepipe.messaging.brokered import BrokeredMessaging, MessagingUnavailable
from stovepipe.messaging.inprocess import InProcessMessaging
from stovepipe.messaging.registry import default_messaging_url, open_messaging
from stovepipe.redaction import redact

from .conftest import url_with
from .recorder import Recorder
from .test_delivery import dead_letters_of


def sample(registry: CollectorRegistry, name: str, topic: str) -> float:
    return registry.get_sample_value(name, {"topic": topic}) or 0.0


def test_metrics_count_deliveries_retries_dead_letters_and_lag(
    durable_messaging_url: str, topic: str
) -> None:
    registry = CollectorRegistry()
    queue = open_messaging(
        # A visibility timeout a stalled worker on a loaded machine cannot outlast (a message
        # delivered again would count twice); the heartbeat refreshes the lag every third of it.
        url_with(durable_messaging_url, max_attempts=2, backoff=0.05, visibility_timeout=1.5),
        registry=registry,
    )

    def handle(message: Message) -> None:
        if message.payload == b"fails":
            raise RuntimeError("boom")
        if message.payload == b"refused":
            raise PermanentFailure("never")

    try:
        for payload in (b"fails", b"refused", b"fine"):
            queue.publish(topic, payload.decode(), payload)
        queue.subscribe(topic, Recorder(handle))
        queue.start()
        dead_letters_of(queue, topic, count=2)
        deadline = time.monotonic() + 10
        while sample(registry, "stovepipe_messaging_deliveries_total", topic) < 4:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        while sample(registry, "stovepipe_messaging_lag", topic) != 0:  # a heartbeat refreshes it
            assert time.monotonic() < deadline, "the lag was never refreshed"
            time.sleep(0.02)
    finally:
        queue.stop(timeout=5)

    assert sample(registry, "stovepipe_messaging_published_total", topic) == 3
    assert sample(registry, "stovepipe_messaging_deliveries_total", topic) == 4
    assert sample(registry, "stovepipe_messaging_retries_total", topic) == 1
    assert sample(registry, "stovepipe_messaging_dead_letters_total", topic) == 2
    assert sample(registry, "stovepipe_messaging_lag", topic) == 0
    assert sample(registry, "stovepipe_messaging_handling_seconds_count", topic) == 4


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as server:
        return int(server.getsockname()[1])


@pytest.mark.parametrize("scheme", ["redis", "mysql"])
@pytest.mark.parametrize("kind", ["closed port", "silent listener"])
def test_an_unreachable_server_is_unavailable_within_the_timeout(
    scheme: str, topic: str, kind: str, silent_listener: int
) -> None:
    # An installed suite may lack a driver this test names itself: not the backend's fault.
    pytest.importorskip({"redis": "redis", "mysql": "pymysql"}[scheme])
    port = closed_port() if kind == "closed port" else silent_listener
    url = {
        "redis": f"redis://127.0.0.1:{port}/0?timeout=1",
        "mysql": f"mysql://root@127.0.0.1:{port}/stovepipe_test?timeout=1",
    }[scheme]
    start = time.monotonic()
    with pytest.raises(MessagingUnavailable) as raised:
        queue = open_messaging(url)  # MySQL connects at once, to create its tables
        queue.publish(topic, "k", b"lost")  # Redis connects on first use
    assert time.monotonic() - start < 5
    assert raised.value.transient, "the ingest RPC maps it to UNAVAILABLE"


def test_the_url_scheme_picks_the_queue(tmp_path: object) -> None:
    assert isinstance(open_messaging(None), InProcessMessaging)
    assert isinstance(open_messaging("memory://?max_attempts=2"), InProcessMessaging)
    sqlite = open_messaging(f"sqlite:///{tmp_path}/q.db?visibility_timeout=5&timeout=2")
    assert isinstance(sqlite, BrokeredMessaging)
    sqlite.stop()
    for bad in ("kafka://host", "memory://?shards=2", "sqlite:///x.db?bogus=1"):
        with pytest.raises(ValueError):
            open_messaging(bad)


def test_the_default_queue_follows_the_storage_backend() -> None:
    assert default_messaging_url("mysql://u:p@db:3306/stovepipe") == "mysql://u:p@db:3306/stovepipe"
    assert default_messaging_url("redis://cache:6379/2") == "redis://cache:6379/2"
    assert default_messaging_url("etcd://127.0.0.1:2379") == "memory://"
    assert default_messaging_url("memory://") == "memory://"


def test_the_default_messaging_url_keeps_every_storage_option() -> None:
    assert default_messaging_url("sqlite:////var/lib/s.db?synchronous=normal&timeout=3") == (
        "sqlite:////var/lib/s.db?synchronous=normal&timeout=3"
    )
    tls = "ssl_ca=%2Fetc%2Fca.pem&ssl_cert=c.pem&ssl_key=k.pem&ssl_verify=true"
    mysql = f"mysql://u:p@db:3306/stovepipe?{tls}&timeout=2&pool_size=4&migrate=true"
    assert default_messaging_url(mysql) == mysql
    assert default_messaging_url("rediss://:pw@cache:6380/2?ssl_ca_certs=ca.pem&timeout=3") == (
        "rediss://:pw@cache:6380/2?ssl_ca_certs=ca.pem&timeout=3"
    )


def test_the_default_redis_queue_carries_the_storage_prefix() -> None:
    # Two deployments sharing a database with different prefixes share no queue.
    assert default_messaging_url("rediss://cache:6380/0?prefix=a%3A") == (
        "rediss://cache:6380/0?prefix=a%3Amq%3A"
    )
    assert (
        default_messaging_url("redis://cache/0?prefix=b%3A") == "redis://cache/0?prefix=b%3Amq%3A"
    )


def test_a_rediss_url_opens_the_redis_streams_queue_over_tls() -> None:
    """No TLS server is needed: opening connects lazily, so the client's connection class
    shows what redis-py will speak."""
    pytest.importorskip("redis")
    import redis

    queue = open_messaging("rediss://127.0.0.1:1/0?ssl_cert_reqs=none&timeout=0.5")
    try:
        assert isinstance(queue, BrokeredMessaging)
        client = queue.broker._client  # type: ignore[attr-defined]
        pool = client.connection_pool
        assert pool.connection_class is redis.SSLConnection
        assert pool.connection_kwargs["ssl_cert_reqs"] == "none"
    finally:
        queue.stop(timeout=0)
    with pytest.raises(ValueError, match="ssl_ca_certs"):
        open_messaging("redis://127.0.0.1:1/0?ssl_ca_certs=ca.pem")  # TLS options need rediss://


def test_log_lines_carry_no_password() -> None:
    assert redact("mysql://app:s3cret@db/stovepipe") == "mysql://app:***@db/stovepipe"
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
