"""Messages a consumer cannot decode or handle to an outcome never strand their key."""

from __future__ import annotations

import time

from stovepipe.messaging import Message
from stovepipe.messaging.registry import InspectableMessaging
from stovepipe.messaging.sqlqueue import SQLBroker

from .conftest import MessagingFactory, backlog_when_drained
from .recorder import Recorder
from .test_delivery import dead_letters_of

NOT_UTF8 = b"\xff\xfe"


def store_raw(queue: InspectableMessaging, topic: str, fields: dict[bytes, bytes]) -> None:
    """Store a message as another program might have written it, bypassing ``publish``."""
    broker = getattr(queue, "broker", None)
    if isinstance(broker, SQLBroker):
        broker._execute(
            "INSERT INTO stovepipe_queue_message"
            " (topic, partition_key, payload, attempt, available_at, published_at)"
            " VALUES (?, ?, ?, 0, 0, 0)",
            (topic.encode(), fields[b"key"], fields.get(b"payload", b"")),
        )
    else:
        from stovepipe_redis.messaging import RedisStreamsBroker

        assert isinstance(broker, RedisStreamsBroker)
        stream = broker._stream(topic, 0)
        broker._ensure_group(stream)
        broker._client.xadd(stream, fields)  # type: ignore[arg-type]


def test_an_undecodable_message_is_dead_lettered_as_stored_and_does_not_strand_its_key(
    make_durable_messaging: MessagingFactory, durable_messaging_url: str, topic: str
) -> None:
    on_redis = durable_messaging_url.startswith("redis")
    # One shard: on Redis the undecodable entries share the shard with every key.
    queue = make_durable_messaging(visibility_timeout=1, **({"shards": 1} if on_redis else {}))
    store_raw(queue, topic, {b"key": NOT_UTF8, b"payload": b"garbled"})
    if on_redis:
        store_raw(queue, topic, {b"key": b"k", b"body": b"no payload field"})
    queue.publish(topic, "k", b"good")
    recorder = Recorder()
    queue.subscribe(topic, recorder)
    queue.start()

    letters = dead_letters_of(queue, topic, 2 if on_redis else 1)
    (seen,) = recorder.wait_for(1)
    assert seen.message.payload == b"good"
    assert (letters[0].message.key, letters[0].message.payload) == ("\\xff\\xfe", b"garbled")
    assert "undecodable message: key is not UTF-8" in letters[0].reason
    if on_redis:
        assert letters[1].reason == "undecodable message: no 'payload' field"
    assert backlog_when_drained(queue, topic) == 0


def test_a_handler_raising_a_base_exception_has_its_message_retried_and_the_worker_goes_on(
    make_messaging: MessagingFactory, topic: str
) -> None:
    def exit_once(message: Message) -> None:
        if message.payload == b"exits" and message.attempt == 1:
            raise SystemExit("handler called sys.exit")

    queue = make_messaging(workers=1, backoff=0.05)
    recorder = Recorder(exit_once)
    queue.subscribe(topic, recorder)
    queue.start()
    queue.publish(topic, "k", b"exits")
    queue.publish(topic, "k", b"next")

    seen = recorder.wait_for(3)
    assert [(s.message.payload, s.message.attempt) for s in seen] == [
        (b"exits", 1),
        (b"exits", 2),
        (b"next", 1),
    ]
    time.sleep(0.2)
    assert queue.dead_letters(topic) == []
