"""The mysql:// messaging queue lives with the MySQL backend: its options (TLS), its pool
(checked before use, replaced when dead), its error mapping and its schema files. One test per
fault it fixes."""

from __future__ import annotations

import contextlib
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any, TypeAlias

import pymysql
import pytest
from stovepipe_mysql.messaging import PooledConnections
from stovepipe_mysql.migrations import migrate
from stovepipe_mysql.options import parse_url

from stovepipe.messaging import Message, MessagingError, PermanentFailure
from stovepipe.messaging.brokered import BrokeredMessaging
from stovepipe.messaging.inprocess import DeadLetter
from stovepipe.messaging.registry import default_messaging_url, open_messaging

TIMEOUT = 20.0
Admin: TypeAlias = "pymysql.connections.Connection[pymysql.cursors.Cursor]"


def with_options(url: str, **options: object) -> str:
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    query.update({name: str(value) for name, value in options.items()})
    return parts._replace(query=urllib.parse.urlencode(query)).geturl()


@contextlib.contextmanager
def opened(url: str, **options: object) -> Iterator[BrokeredMessaging]:
    queue = open_messaging(with_options(url, timeout=2, **options))
    assert isinstance(queue, BrokeredMessaging)
    try:
        yield queue
    finally:
        queue.stop(timeout=5)


def pooled_thread_ids(queue: BrokeredMessaging) -> list[int]:
    connections = queue.broker._connections  # type: ignore[attr-defined]
    assert isinstance(connections, PooledConnections)
    return [
        pooled.connection.thread_id()  # type: ignore[no-untyped-call]
        for pooled in connections._pool._idle
    ]


def test_the_queue_uses_the_storage_options_tls_included() -> None:
    url = "mysql://u:p@db:3306/stovepipe?ssl_verify=false&timeout=3&pool_size=2"
    connections = PooledConnections(parse_url(default_messaging_url(url)))
    arguments = connections._arguments
    assert arguments["ssl"] is not None, "the queue would talk to the database in plaintext"
    assert arguments["read_timeout"] == 3
    assert connections._pool._size == 2


def test_an_idle_connection_the_server_closed_is_replaced_before_use(
    mysql_url: str, admin: Admin
) -> None:
    topic = f"idle-{uuid.uuid4().hex[:8]}"
    with opened(mysql_url, pool_size=1) as queue:
        queue.publish(topic, "k", b"first")
        (thread_id,) = pooled_thread_ids(queue)
        with admin.cursor() as cursor:
            cursor.execute(f"KILL {int(thread_id)}")  # as wait_timeout would
        queue.publish(topic, "k", b"second")  # not "server has gone away"
        assert queue.backlog(topic) == 2
        assert pooled_thread_ids(queue) != [thread_id]


def test_a_failure_reason_with_a_4_byte_character_is_stored_in_a_latin1_database(
    scratch_database: str, admin: Admin
) -> None:
    url = scratch_database
    name = urllib.parse.urlsplit(url).path.lstrip("/")
    with admin.cursor() as cursor:
        cursor.execute(f"ALTER DATABASE {name} CHARACTER SET latin1")
    topic = f"latin1-{uuid.uuid4().hex[:8]}"
    calls: list[Message] = []
    done = threading.Event()

    def refuse(message: Message) -> None:
        calls.append(message)
        done.set()
        raise PermanentFailure("cannot build \U0001f4a5 here")

    with opened(url, max_attempts=3, backoff=0.01) as queue:
        queue.subscribe(topic, refuse)
        queue.start()
        queue.publish(topic, "k", b"x")
        assert done.wait(TIMEOUT)
        letters = wait_for_dead_letters(queue, topic)
        assert "\U0001f4a5" in letters[0].reason
        assert len(calls) == 1, "handled more than once: the outcome write failed"


def wait_for_dead_letters(queue: BrokeredMessaging, topic: str) -> list[DeadLetter]:
    deadline = time.monotonic() + TIMEOUT
    while not (letters := queue.dead_letters(topic)):
        assert time.monotonic() < deadline, "no dead letter"
        time.sleep(0.02)
    return letters


@contextlib.contextmanager
def restricted_account(admin: Admin, url: str) -> Iterator[str]:
    """A new account that may read and write the rows of ``url``'s database but not create
    tables; the URL of that database as that account. Dropped afterwards."""
    options = parse_url(url)
    user = f"sp_rw_{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    try:
        with admin.cursor() as cursor:
            cursor.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'")
            cursor.execute(
                f"GRANT SELECT, INSERT, UPDATE, DELETE ON {options.database}.* TO '{user}'@'%'"
            )
        yield f"mysql://{user}:{password}@{options.host}:{options.port}/{options.database}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP USER IF EXISTS '{user}'@'%'")


def test_migrate_creates_the_queue_tables_for_an_account_without_create(
    scratch_database: str, admin: Admin
) -> None:
    url = scratch_database
    with restricted_account(admin, url) as restricted:
        with pytest.raises(MessagingError, match="stovepipe migrate") as refused:
            open_messaging(with_options(restricted, timeout=2))
        assert not refused.value.transient
        migrate(url)  # as `stovepipe migrate URL`, by an account that may
        topic = f"rw-{uuid.uuid4().hex[:8]}"
        seen = threading.Event()
        with opened(restricted) as queue:  # no CREATE attempted on complete tables
            queue.subscribe(topic, lambda message: seen.set())
            queue.start()
            queue.publish(topic, "k", b"x")
            assert seen.wait(TIMEOUT)


def test_migrate_creates_every_queue_table(scratch_database: str, admin: Admin) -> None:
    migrate(scratch_database)
    name = urllib.parse.urlsplit(scratch_database).path.lstrip("/")
    with admin.cursor() as cursor:
        cursor.execute(
            "SELECT TABLE_NAME FROM information_schema.TABLES"
            " WHERE TABLE_SCHEMA = %s AND TABLE_NAME LIKE 'stovepipe_queue_%%'",
            (name,),
        )
        tables = {row[0] for row in cursor.fetchall()}
        cursor.execute(
            "SELECT COLUMN_NAME, CHARACTER_SET_NAME FROM information_schema.COLUMNS"
            " WHERE TABLE_SCHEMA = %s AND COLUMN_NAME IN ('reason', 'last_error')",
            (name,),
        )
        charsets = dict(cursor.fetchall())
    assert tables == {
        "stovepipe_queue_message",
        "stovepipe_queue_dead_letter",
        "stovepipe_queue_key_lease",
    }
    assert charsets == {"reason": "utf8mb4", "last_error": "utf8mb4"}


def test_driver_errors_are_chained_not_leaked(mysql_url: str) -> None:
    with opened(mysql_url) as queue, pytest.raises(MessagingError) as raised:
        queue.publish("t", "k" * 1025, b"a key longer than its column")
    assert isinstance(raised.value.__cause__, pymysql.Error)


class _CountingCursor:
    def __init__(self, cursor: Any, statements: list[str]) -> None:
        self._cursor = cursor
        self._statements = statements

    def execute(self, statement: str, parameters: Any = None) -> Any:
        self._statements.append(statement)
        return self._cursor.execute(statement, parameters)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


class _CountingConnections:
    """A queue's connections, recording each statement (each one round trip to the server)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.statements: list[str] = []

    @contextlib.contextmanager
    def cursor(self) -> Iterator[_CountingCursor]:
        with self._inner.cursor() as cursor:
            yield _CountingCursor(cursor, self.statements)

    def close(self) -> None:
        self._inner.close()

    def taken(self) -> list[str]:
        taken, self.statements = self.statements, []
        return taken


def test_ack_and_claim_next_is_one_transaction_of_fewer_round_trips_than_ack_then_claim(
    mysql_url: str,
) -> None:
    topic = f"count-{uuid.uuid4().hex[:8]}"
    with opened(mysql_url) as queue:
        broker = queue.broker
        counting = _CountingConnections(broker._connections)  # type: ignore[attr-defined]
        broker._connections = counting  # type: ignore[attr-defined]
        for n in range(3):
            broker.publish(topic, "k", str(n).encode(), uuid.uuid4().hex)
        first = broker.claim([topic])
        assert first is not None and first.message.payload == b"0"
        counting.taken()

        broker.ack(first)
        second = broker.claim([topic])
        separate = counting.taken()
        assert second is not None and second.message.payload == b"1"
        third = broker.ack_and_claim_next(second)
        combined = counting.taken()
        assert third is not None and (third.message.payload, third.message.attempt) == (b"2", 1)
        broker.ack(third)

    def transactions(statements: list[str]) -> int:
        return sum(statement == "START TRANSACTION" for statement in statements)

    assert transactions(separate) == 2
    assert transactions(combined) == 1
    assert combined[0] == "START TRANSACTION" and combined[-1] == "COMMIT", combined
    assert len(combined) < len(separate), (combined, separate)
