"""What only the Redis Streams queue has to survive: its server losing its data."""

from __future__ import annotations

import pytest
from stovepipe_redis.messaging import RedisStreamsBroker

from stovepipe.messaging.registry import open_messaging

from .conftest import engine_url, url_with
from .recorder import Recorder, payloads


@pytest.fixture(scope="module")
def redis_url(request: pytest.FixtureRequest) -> str:
    return engine_url("redis", request)


def test_redis_a_consumer_group_lost_with_the_data_is_recreated_and_delivery_goes_on(
    redis_url: str, topic: str
) -> None:
    queue = open_messaging(url_with(redis_url, shards=1, poll_interval=0.05))
    broker = getattr(queue, "broker", None)
    assert isinstance(broker, RedisStreamsBroker)
    recorder = Recorder()
    queue.subscribe(topic, recorder)
    queue.start()
    try:
        queue.publish(topic, "k", b"before")
        recorder.wait_for(1)
        # What a restart without persistence or a FLUSHDB does to this topic: the next
        # publish recreates the stream, without the consumer group this process created.
        for name in broker._client.scan_iter(match=broker._base(topic) + b":*"):
            broker._client.delete(name)
        queue.publish(topic, "k", b"after")

        assert payloads(recorder.wait_for(2, timeout=10)) == [b"before", b"after"]
    finally:
        queue.stop(timeout=5)
