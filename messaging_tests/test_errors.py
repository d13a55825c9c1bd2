"""Every failure of a durable queue's server is the contract's error, classified: transient
ones are ``MessagingUnavailable`` (retry later), permanent ones a plain ``MessagingError`` (an
operator has to act). Neither is a storage error. No driver exception leaks."""

from __future__ import annotations

import contextlib
import pathlib
import sqlite3
import urllib.parse

import pytest
from redis._parsers.base import BaseParser
from redis.exceptions import RedisError
from stovepipe_redis.backend import mapped_error
from stovepipe_redis.messaging import RedisStreamsBroker

from stovepipe.messaging.brokered import MessagingError, MessagingUnavailable
from stovepipe.messaging.contract import as_messaging_error
from stovepipe.messaging.registry import open_messaging
from stovepipe.storage import StorageError

from .conftest import engine_url, url_with


@pytest.fixture(scope="module")
def mysql_url(request: pytest.FixtureRequest) -> str:
    return engine_url("mysql", request)


@pytest.fixture(scope="module")
def redis_url(request: pytest.FixtureRequest) -> str:
    return engine_url("redis", request)


def assert_permanent(error: BaseException) -> None:
    assert isinstance(error, MessagingError) and not isinstance(error, StorageError)
    assert not error.transient, "retrying would not help"
    assert not isinstance(error, MessagingUnavailable)


def test_sqlite_a_lock_held_past_the_timeout_is_transient(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "queue.db"
    queue = open_messaging(f"sqlite:///{path}?timeout=0.2")
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as holder:
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(MessagingUnavailable):
            queue.publish("t", "k", b"waits for the lock")
        holder.execute("ROLLBACK")
    queue.publish("t", "k", b"goes through once the lock is gone")
    queue.stop()


def test_sqlite_a_missing_table_is_a_permanent_error(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "queue.db"
    queue = open_messaging(f"sqlite:///{path}?timeout=1")
    with contextlib.closing(sqlite3.connect(path)) as other:
        other.execute("DROP TABLE stovepipe_queue_message")
    with pytest.raises(MessagingError) as raised:
        queue.publish("t", "k", b"x")
    assert_permanent(raised.value)
    assert "no such table" in str(raised.value)
    queue.stop()


def test_sqlite_opening_a_file_that_is_not_a_database_is_a_permanent_error(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(MessagingError) as raised:
        open_messaging(f"sqlite:///{path}")
    assert_permanent(raised.value)


def test_sqlite_opening_a_file_in_a_missing_directory_is_a_permanent_error(
    tmp_path: pathlib.Path,
) -> None:
    with pytest.raises(MessagingError) as raised:
        open_messaging(f"sqlite:///{tmp_path}/missing/queue.db")
    assert_permanent(raised.value)


def test_mysql_access_denied_is_a_permanent_error(mysql_url: str) -> None:
    parts = urllib.parse.urlsplit(url_with(mysql_url, timeout=2))
    wrong = parts._replace(netloc=f"no_such_user:wrong@{parts.hostname}:{parts.port or 3306}")
    with pytest.raises(MessagingError) as raised:
        open_messaging(urllib.parse.urlunsplit(wrong))
    assert_permanent(raised.value)


def test_mysql_a_missing_database_is_a_permanent_error(mysql_url: str) -> None:
    parts = urllib.parse.urlsplit(url_with(mysql_url, timeout=2))
    with pytest.raises(MessagingError) as raised:
        open_messaging(urllib.parse.urlunsplit(parts._replace(path="/no_such_database_for_queues")))
    assert_permanent(raised.value)


def test_mysql_data_the_table_does_not_take_is_a_permanent_error(mysql_url: str) -> None:
    queue = open_messaging(url_with(mysql_url, timeout=2))
    try:
        with pytest.raises(MessagingError) as raised:
            queue.publish("t", "k" * 1025, b"a key longer than its column")
        assert_permanent(raised.value)
        queue.publish("t" * 10, "k", b"the connection is still good")
    finally:
        queue.stop()


def test_redis_a_reply_error_is_a_permanent_error(redis_url: str, topic: str) -> None:
    queue = open_messaging(url_with(redis_url, shards=1))
    broker = getattr(queue, "broker", None)
    assert isinstance(broker, RedisStreamsBroker)
    try:
        broker._client.set(broker._stream(topic, 0), b"a string where a stream belongs")
        with pytest.raises(MessagingError) as raised:
            queue.publish(topic, "k", b"x")
        assert_permanent(raised.value)
        assert "WRONGTYPE" in str(raised.value)
    finally:
        broker._client.delete(broker._stream(topic, 0))
        queue.stop()


def test_redis_a_wrong_password_is_a_permanent_error(redis_url: str, topic: str) -> None:
    parts = urllib.parse.urlsplit(redis_url)
    wrong = parts._replace(netloc=f"no-such-user:wrong@{parts.hostname}:{parts.port or 6379}")
    queue = open_messaging(urllib.parse.urlunsplit(wrong))
    try:
        with pytest.raises(MessagingError) as raised:
            queue.publish(topic, "k", b"x")
        assert_permanent(raised.value)
    finally:
        queue.stop()


def reply_error(reply: str) -> RedisError:
    """The exception redis-py raises for the error ``reply`` of a server."""
    error: RedisError = BaseParser.parse_error(reply)  # type: ignore[no-untyped-call]
    return error


@pytest.mark.parametrize(
    "reply",
    [
        "READONLY You can't write against a read only replica.",
        "OOM command not allowed when used memory > 'maxmemory'.",
        "MISCONF Redis is configured to save RDB snapshots, but it's unable to persist to disk.",
        "LOADING Redis is loading the dataset in memory",
        "BUSY Redis is busy running a script.",
    ],
)
def test_redis_a_server_that_cannot_write_for_now_is_transient(reply: str) -> None:
    mapped = as_messaging_error(mapped_error(reply_error(reply)))
    assert isinstance(mapped, MessagingUnavailable)
    assert reply.split()[0] in str(mapped)


def test_redis_other_reply_errors_are_permanent() -> None:
    for reply in ("NOPERM this user has no permissions", "ERR unknown command 'XADD'"):
        assert_permanent(as_messaging_error(mapped_error(reply_error(reply))))
