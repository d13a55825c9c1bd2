"""What only the MySQL queue has to survive: auto-increment ids are assigned when a row is
inserted, not when it is committed, so a key's head can change under a running delivery."""

from __future__ import annotations

import urllib.parse

import pytest

from stovepipe.messaging.registry import open_messaging
from stovepipe.messaging.sqlqueue import SQLBroker

from .conftest import backlog_when_drained, engine_url, url_with


@pytest.fixture(scope="module")
def mysql_url(request: pytest.FixtureRequest) -> str:
    return engine_url("mysql", request)


def test_mysql_a_publish_committed_after_a_later_one_never_gives_its_key_two_deliveries(
    mysql_url: str, topic: str
) -> None:
    import pymysql

    queue = open_messaging(url_with(mysql_url, visibility_timeout=30))
    broker = getattr(queue, "broker", None)
    assert isinstance(broker, SQLBroker)
    parts = urllib.parse.urlsplit(mysql_url)
    slow = pymysql.connect(
        host=parts.hostname,
        port=parts.port or 3306,
        user=urllib.parse.unquote(parts.username or "root"),
        password=urllib.parse.unquote(parts.password or ""),
        database=parts.path.lstrip("/"),
        autocommit=True,
    )
    try:
        with slow.cursor() as cursor:
            # A publisher whose commit comes late (a slow disk, a group commit): its row has
            # the smaller id but becomes visible after a later publish of the same key.
            cursor.execute("START TRANSACTION")
            cursor.execute(
                "INSERT INTO stovepipe_queue_message"
                " (topic, partition_key, payload, attempt, available_at, published_at)"
                " VALUES (%s, 'k', 'committed late', 0, UNIX_TIMESTAMP(NOW(6)),"
                " UNIX_TIMESTAMP(NOW(6)))",
                (topic.encode(),),
            )
            queue.publish(topic, "k", b"committed first")
            running = broker.claim([topic])
            assert running is not None
            assert running.message.payload == b"committed first"
            cursor.execute("COMMIT")

        assert broker.claim([topic]) is None, "the key got a second delivery at once"
        broker.ack(running)
        after = broker.claim([topic])
        assert after is not None and after.message.payload == b"committed late"
        broker.ack(after)
        assert backlog_when_drained(queue, topic, timeout=0) == 0
    finally:
        slow.close()
        queue.stop()
