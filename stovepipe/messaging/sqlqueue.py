"""A messaging queue in three SQL tables, on SQLite (stdlib) or MySQL/MariaDB (PyMySQL).

Layout::

    stovepipe_queue_message      one row per message not yet acknowledged or dead-lettered
      id             auto-increment: the publish order
      topic, partition_key       UTF-8 bytes, compared byte for byte
      payload
      attempt        deliveries so far (each claim adds one)
      available_at   not deliverable before (server clock, seconds): the retry backoff
      lease_token, lease_until   the consumer holding the delivery, and until when
      last_error     why the last delivery failed
    stovepipe_queue_key_lease    one row per key with a delivery running (or its consumer
                                 died): topic, partition_key, lease_token, lease_until
    stovepipe_queue_dead_letter  the messages given up on, with the reason

Per-key order, one delivery at a time: a claim leases the *key* first (inserting its
``stovepipe_queue_key_lease`` row, or taking over one whose lease ran out: of racing
consumers exactly one gets it), then, in the same transaction, the key's *head* (its row
with the smallest id) if it is not backing off. Leasing the key, not only the head row,
matters on MySQL: InnoDB assigns an auto-increment id when a row is inserted, not when it is
committed, so a publish committed late can become the head of a key whose later message is
being delivered. A key's next message thus waits until its head is acknowledged or
dead-lettered; while the head backs off the key is free, but its head still goes first. A
consumer that dies stops renewing its leases; once they pass, the head is claimable again
and its next delivery has the next ``attempt``. Acknowledging deletes the row and the key's
lease; dead-lettering moves the row, in one transaction. Every time is the database server's
clock, so consumers on several hosts need no synchronized clocks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import secrets
import sqlite3
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final, Protocol

from stovepipe.messaging.brokered import Delivery, MessagingError, MessagingUnavailable
from stovepipe.messaging.contract import Message
from stovepipe.messaging.inprocess import DeadLetter
from stovepipe.redaction import redact
from stovepipe.storage.sqlite import create_tables, use_wal, writer_lock

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT: Final = 5.0
# Heads examined per claim: enough to get past heads that racing consumers just took.
_CANDIDATES: Final = 8

_SQLITE_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS stovepipe_queue_message (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    topic         BLOB NOT NULL,
    partition_key BLOB NOT NULL,
    payload       BLOB NOT NULL,
    attempt       INTEGER NOT NULL DEFAULT 0,
    available_at  REAL NOT NULL,
    lease_token   BLOB,
    lease_until   REAL,
    last_error    TEXT,
    published_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS stovepipe_queue_message_partition
    ON stovepipe_queue_message (topic, partition_key, id);
CREATE TABLE IF NOT EXISTS stovepipe_queue_dead_letter (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    topic         BLOB NOT NULL,
    partition_key BLOB NOT NULL,
    payload       BLOB NOT NULL,
    attempt       INTEGER NOT NULL,
    reason        TEXT NOT NULL,
    published_at  REAL NOT NULL,
    dead_at       REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS stovepipe_queue_dead_letter_topic
    ON stovepipe_queue_dead_letter (topic, id);
CREATE TABLE IF NOT EXISTS stovepipe_queue_key_lease (
    topic         BLOB NOT NULL,
    partition_key BLOB NOT NULL,
    lease_token   BLOB NOT NULL,
    lease_until   REAL NOT NULL,
    PRIMARY KEY (topic, partition_key)
);
"""

# Binary columns: no PAD SPACE, no case folding; a key is its exact UTF-8 bytes.
_MYSQL_SCHEMA: Final = (
    """
CREATE TABLE IF NOT EXISTS stovepipe_queue_message (
    id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    topic         VARBINARY(255) NOT NULL,
    partition_key VARBINARY(1024) NOT NULL,
    payload       LONGBLOB NOT NULL,
    attempt       INT NOT NULL DEFAULT 0,
    available_at  DOUBLE NOT NULL,
    lease_token   VARBINARY(32) NULL,
    lease_until   DOUBLE NULL,
    last_error    TEXT NULL,
    published_at  DOUBLE NOT NULL,
    KEY stovepipe_queue_message_partition (topic, partition_key, id)
) ENGINE=InnoDB
""",
    """
CREATE TABLE IF NOT EXISTS stovepipe_queue_dead_letter (
    id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    topic         VARBINARY(255) NOT NULL,
    partition_key VARBINARY(1024) NOT NULL,
    payload       LONGBLOB NOT NULL,
    attempt       INT NOT NULL,
    reason        TEXT NOT NULL,
    published_at  DOUBLE NOT NULL,
    dead_at       DOUBLE NOT NULL,
    KEY stovepipe_queue_dead_letter_topic (topic, id)
) ENGINE=InnoDB
""",
    """
CREATE TABLE IF NOT EXISTS stovepipe_queue_key_lease (
    topic         VARBINARY(255) NOT NULL,
    partition_key VARBINARY(1024) NOT NULL,
    lease_token   VARBINARY(32) NOT NULL,
    lease_until   DOUBLE NOT NULL,
    PRIMARY KEY (topic, partition_key)
) ENGINE=InnoDB
""",
)


class _Connection(Protocol):
    def cursor(self) -> Any: ...

    def close(self) -> None: ...


@dataclasses.dataclass(frozen=True)
class _Dialect:
    """What differs between the engines: connecting, placeholders, the clock, errors."""

    name: str
    connect: Callable[[], _Connection]
    placeholder: str
    # The server's clock in seconds since the epoch, as an SQL expression.
    now: str
    begin: str
    # Leases a key (parameters: token, lease seconds, topic, key): inserts its lease, or takes
    # over one that ran out, and locks the row exclusively at once (a shared lock first, then
    # an exclusive one, would deadlock racing claims).
    lease_key: str
    # Every exception the driver raises, and which of them are transient (worth a retry).
    errors: tuple[type[BaseException], ...]
    is_transient: Callable[[BaseException], bool]
    # Run every write in an explicit ``begin`` transaction: SQLite in WAL mode fails a lone
    # statement that reads, then writes after another writer, without waiting (BUSY_SNAPSHOT);
    # BEGIN IMMEDIATE takes the write lock first, waiting up to the busy timeout.
    explicit_writes: bool = False
    # Held around every write transaction: SQLite's writers of one file in this process
    # queue on the lock the storage backend shares, instead of sleeping in the busy handler.
    writer: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext


@dataclasses.dataclass(frozen=True, slots=True)
class _Receipt:
    row_id: int
    token: bytes  # of the row's lease and of its key's lease
    topic: bytes
    key: bytes


class SQLBroker:
    """The :class:`~stovepipe.messaging.brokered.Broker` over the two tables.

    One connection per thread, opened on first use. ``visibility_timeout`` is how long a
    delivery stays leased without a renewal.
    """

    def __init__(self, dialect: _Dialect, *, visibility_timeout: float) -> None:
        self._dialect = dialect
        self._visibility_timeout = visibility_timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[_Connection] = []
        self._held: dict[int, _Receipt] = {}  # row id -> receipt, for renewals
        self._closed = False

    def create_schema(self, statements: Sequence[str]) -> None:
        """Create the tables if missing (idempotent, safe to race)."""
        for statement in statements:
            self._execute(statement)

    def publish(self, topic: str, key: str, payload: bytes) -> None:
        """Insert the message; its id orders it after every message committed before."""
        self._execute(
            "INSERT INTO stovepipe_queue_message"
            " (topic, partition_key, payload, attempt, available_at, published_at)"
            f" VALUES (?, ?, ?, 0, {self._dialect.now}, {self._dialect.now})",
            (_encode(topic), _encode(key), payload),
        )

    def claim(self, topics: Sequence[str]) -> Delivery | None:
        """Lease the oldest deliverable head among ``topics``' keys, if any."""
        now = self._dialect.now
        marks = ", ".join("?" * len(topics))
        heads = self._query(
            "SELECT m.topic, m.partition_key, m.id"
            " FROM stovepipe_queue_message m JOIN ("
            "   SELECT MIN(id) AS id FROM stovepipe_queue_message"
            f"  WHERE topic IN ({marks}) GROUP BY topic, partition_key"
            " ) head ON m.id = head.id"
            f" WHERE m.available_at <= {now} AND (m.lease_until IS NULL OR m.lease_until <= {now})"
            " AND NOT EXISTS (SELECT 1 FROM stovepipe_queue_key_lease k"
            "   WHERE k.topic = m.topic AND k.partition_key = m.partition_key"
            f"  AND k.lease_until > {now})"
            f" ORDER BY m.id LIMIT {_CANDIDATES}",
            tuple(_encode(topic) for topic in topics),
        )
        for topic, key, _ in heads:
            receipt = _Receipt(0, secrets.token_bytes(16), bytes(topic), bytes(key))
            leased = self._lease_key_head(receipt)
            if leased is None:
                continue
            receipt, payload, attempt = leased
            try:
                message = Message(_decode(topic), _decode(key), payload, attempt)
            except UnicodeDecodeError as error:
                # Written by something else than this module: no delivery can ever succeed,
                # and holding the lease would strand the key.
                reason = f"undecodable message: key is not UTF-8: {error}"
                logger.error(
                    "dead-lettering an undecodable %r message: %s", _decode_lax(topic), reason
                )
                self._move_to_dead_letters(receipt, reason)
                continue
            with self._lock:
                self._held[receipt.row_id] = receipt
            return Delivery(message, receipt)
        return None

    def _lease_key_head(self, receipt: _Receipt) -> tuple[_Receipt, bytes, int] | None:
        """Lease the key of ``receipt``, then its head if deliverable, in one transaction: the
        receipt with the head's id, its payload and its ``attempt``; ``None`` if either lease
        was not to be had.

        The key is leased, not only its head row: MySQL assigns an auto-increment id when a
        row is inserted, not when it is committed, so a publish committed late can become
        the head of a key whose later message is being delivered.
        """
        now = self._dialect.now
        lease = (receipt.token, self._visibility_timeout, receipt.topic, receipt.key)
        with self._transaction() as cursor:
            cursor.execute(self._dialect.lease_key.format(now=now), lease)
            cursor.execute(
                self._sql(
                    "SELECT lease_token FROM stovepipe_queue_key_lease"
                    " WHERE topic = ? AND partition_key = ?"
                ),
                (receipt.topic, receipt.key),
            )
            if bytes(cursor.fetchone()[0]) != receipt.token:  # another consumer's live lease
                return None
            cursor.execute(
                self._sql(
                    f"SELECT id, payload, attempt, available_at <= {now}"
                    " FROM stovepipe_queue_message WHERE topic = ? AND partition_key = ?"
                    " ORDER BY id LIMIT 1"
                ),
                (receipt.topic, receipt.key),
            )
            head = cursor.fetchone()
            claimed = 0
            if head is not None and head[3]:
                claimed = self._run(
                    cursor,
                    "UPDATE stovepipe_queue_message"
                    f" SET lease_token = ?, lease_until = {now} + ?, attempt = attempt + 1"
                    " WHERE id = ? AND attempt = ?"
                    f" AND (lease_until IS NULL OR lease_until <= {now})",
                    (receipt.token, self._visibility_timeout, head[0], head[2]),
                )
            if claimed != 1:  # no message, backing off, or leased before the key leases
                self._release_key(cursor, receipt)
                return None
        return dataclasses.replace(receipt, row_id=int(head[0])), bytes(head[1]), head[2] + 1

    def _release_key(self, cursor: Any, receipt: _Receipt) -> None:
        self._run(
            cursor,
            "DELETE FROM stovepipe_queue_key_lease"
            " WHERE topic = ? AND partition_key = ? AND lease_token = ?",
            (receipt.topic, receipt.key, receipt.token),
        )

    def ack(self, delivery: Delivery) -> None:
        """Delete the row and free its key, if this delivery still holds its lease."""
        receipt = self._release(delivery)
        with self._transaction() as cursor:
            self._release_key(cursor, receipt)  # the key's lease first, as a claim locks it
            deleted = self._run(
                cursor,
                "DELETE FROM stovepipe_queue_message WHERE id = ? AND lease_token = ?",
                (receipt.row_id, receipt.token),
            )
        if deleted != 1:
            logger.warning("acknowledged a %r message after its lease ran out", _topic(delivery))

    def retry(self, delivery: Delivery, delay: float, reason: str) -> None:
        """Drop the leases and make the row claimable after ``delay`` seconds."""
        self._give_back(delivery, delay, reason, counted=True)

    def hold(self, delivery: Delivery, delay: float) -> None:
        """Like :meth:`retry`, taking back the attempt the claim counted."""
        self._give_back(delivery, delay, None, counted=False)

    def _give_back(
        self, delivery: Delivery, delay: float, reason: str | None, counted: bool
    ) -> None:
        receipt = self._release(delivery)
        with self._transaction() as cursor:
            self._release_key(cursor, receipt)
            self._run(
                cursor,
                "UPDATE stovepipe_queue_message"
                " SET lease_token = NULL, lease_until = NULL,"
                " last_error = COALESCE(?, last_error),"
                f" attempt = attempt - {0 if counted else 1},"
                f" available_at = {self._dialect.now} + ?"
                " WHERE id = ? AND lease_token = ?",
                (reason, delay, receipt.row_id, receipt.token),
            )

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Copy the row to the dead letters and delete it, in one transaction."""
        moved = self._move_to_dead_letters(self._release(delivery), reason)
        if moved != 1:
            logger.warning("dead-lettered a %r message after its lease ran out", _topic(delivery))

    def _move_to_dead_letters(self, receipt: _Receipt, reason: str) -> int:
        with self._transaction() as cursor:
            self._release_key(cursor, receipt)
            moved = self._run(
                cursor,
                "INSERT INTO stovepipe_queue_dead_letter"
                " (topic, partition_key, payload, attempt, reason, published_at, dead_at)"
                f" SELECT topic, partition_key, payload, attempt, ?, published_at,"
                f" {self._dialect.now}"
                " FROM stovepipe_queue_message WHERE id = ? AND lease_token = ?",
                (reason, receipt.row_id, receipt.token),
            )
            self._run(
                cursor,
                "DELETE FROM stovepipe_queue_message WHERE id = ? AND lease_token = ?",
                (receipt.row_id, receipt.token),
            )
        return moved

    def renew(self) -> None:
        """Push back the deadline of every lease this broker holds, row and key."""
        with self._lock:
            held = list(self._held.values())
        now = self._dialect.now
        for receipt in held:
            with self._transaction() as cursor:
                self._run(
                    cursor,
                    f"UPDATE stovepipe_queue_key_lease SET lease_until = {now} + ?"
                    " WHERE topic = ? AND partition_key = ? AND lease_token = ?",
                    (self._visibility_timeout, receipt.topic, receipt.key, receipt.token),
                )
                self._run(
                    cursor,
                    f"UPDATE stovepipe_queue_message SET lease_until = {now} + ?"
                    " WHERE id = ? AND lease_token = ?",
                    (self._visibility_timeout, receipt.row_id, receipt.token),
                )

    def backlog(self, topic: str) -> int:
        """Rows of ``topic`` still in the message table."""
        rows = self._query(
            "SELECT COUNT(*) FROM stovepipe_queue_message WHERE topic = ?", (_encode(topic),)
        )
        return int(rows[0][0])

    def dead_letters(self, topic: str) -> list[DeadLetter]:
        """The dead letters of ``topic``, oldest first."""
        rows = self._query(
            "SELECT partition_key, payload, attempt, reason FROM stovepipe_queue_dead_letter"
            " WHERE topic = ? ORDER BY id",
            (_encode(topic),),
        )
        return [
            DeadLetter(Message(topic, _decode_lax(key), bytes(payload), int(attempt)), str(reason))
            for key, payload, attempt, reason in rows
        ]

    def close(self) -> None:
        """Close the connections. Leases of deliveries still running are left to run out:
        handing them back would let another consumer start the same key alongside."""
        with self._lock:
            self._closed = True
            self._held = {}
            connections, self._connections = self._connections, []
        for connection in connections:
            with contextlib.suppress(Exception):
                connection.close()

    def _release(self, delivery: Delivery) -> _Receipt:
        receipt = delivery.receipt
        assert isinstance(receipt, _Receipt)
        with self._lock:
            self._held.pop(receipt.row_id, None)
        return receipt

    def _connection(self) -> _Connection:
        connection: _Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            with self._lock:
                if self._closed:
                    raise MessagingUnavailable("the messaging queue is closed")
            try:
                connection = self._dialect.connect()
            except self._dialect.errors as error:
                raise self._mapped(error) from None
            with self._lock:
                self._connections.append(connection)
            self._local.connection = connection
        return connection

    def _discard_connection(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            with self._lock, contextlib.suppress(ValueError):
                self._connections.remove(connection)
            with contextlib.suppress(Exception):
                connection.close()

    def _mapped(self, error: BaseException) -> MessagingError | MessagingUnavailable:
        """The contract's error for a driver's ``error``."""
        return _mapped_error(self._dialect, error)

    def _sql(self, statement: str) -> str:
        return statement.replace("?", self._dialect.placeholder)

    def _run(self, cursor: Any, statement: str, parameters: tuple[object, ...] = ()) -> int:
        cursor.execute(self._sql(statement), parameters)
        return int(cursor.rowcount)

    def _execute(self, statement: str, parameters: tuple[object, ...] = ()) -> int:
        """Run one write statement on its own; the number of rows it changed."""
        if self._dialect.explicit_writes:
            with self._transaction() as cursor:
                return self._run(cursor, statement, parameters)
        with self._cursor() as cursor:
            return self._run(cursor, statement, parameters)

    def _query(self, statement: str, parameters: tuple[object, ...] = ()) -> list[Any]:
        with self._cursor() as cursor:
            cursor.execute(self._sql(statement), parameters)
            return list(cursor.fetchall())

    @contextlib.contextmanager
    def _cursor(self) -> Iterator[Any]:
        cursor = self._connection().cursor()
        try:
            yield cursor
        except self._dialect.errors as error:
            mapped = self._mapped(error)
            if isinstance(mapped, MessagingUnavailable):
                self._discard_connection()  # it may be broken; the next call reconnects
            raise mapped from None
        finally:
            with contextlib.suppress(Exception):
                cursor.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        with self._dialect.writer(), self._cursor() as cursor:
            cursor.execute(self._dialect.begin)
            try:
                yield cursor
            except BaseException:
                with contextlib.suppress(Exception):
                    cursor.execute("ROLLBACK")
                raise
            cursor.execute("COMMIT")


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _decode(data: bytes) -> str:
    return bytes(data).decode("utf-8", "surrogatepass")


def _mapped_error(dialect: _Dialect, error: BaseException) -> MessagingError | MessagingUnavailable:
    if dialect.is_transient(error):
        return MessagingUnavailable(f"{dialect.name} queue: {error}")
    return MessagingError(f"{dialect.name} queue: {type(error).__name__}: {error}")


def _sqlite_is_transient(error: BaseException) -> bool:
    """Only a lock held by another connection past the busy timeout passes on its own."""
    code = getattr(error, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


# Connection refused, lost or timed out; server gone away or shutting down; too many
# connections; lock wait timeout and deadlock (the transaction was rolled back).
_MYSQL_TRANSIENT_CODES: Final = frozenset(
    {1040, 1053, 1205, 1213, 1927, 2002, 2003, 2006, 2013, 2055}
)


def _mysql_is_transient(error: BaseException) -> bool:
    import pymysql

    if isinstance(error, pymysql.err.InterfaceError):  # the connection is closed or broken
        return True
    code = error.args[0] if error.args else None
    return isinstance(error, pymysql.err.OperationalError) and code in _MYSQL_TRANSIENT_CODES


def _decode_lax(data: bytes) -> str:
    """``data`` as text for a dead letter: invalid UTF-8 shown as ``\\xNN`` escapes."""
    try:
        return _decode(data)
    except UnicodeDecodeError:
        return bytes(data).decode("utf-8", "backslashreplace")


def _topic(delivery: Delivery) -> str:
    return delivery.message.topic


def sqlite_broker(url: str, *, visibility_timeout: float) -> SQLBroker:
    """A broker in the SQLite file of ``sqlite:///path[?timeout=S]``.

    The tables may share the file with the SQLite storage backend. WAL mode lets consumers in
    several processes on this host share the file; ``timeout`` bounds the wait for its lock.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.netloc:
        raise ValueError(f"sqlite URLs name a file, not a host: {redact(url)}")
    path = urllib.parse.unquote(parts.path[1:])
    if not path:
        raise ValueError("sqlite URL needs a file path: sqlite:///path/to/file.db")
    options = _options(parts.query, {"timeout"}, "sqlite")
    timeout = float(options.get("timeout", DEFAULT_TIMEOUT))

    def connect() -> _Connection:
        connection = sqlite3.connect(
            path, timeout=timeout, isolation_level=None, check_same_thread=False
        )
        use_wal(connection, timeout)
        connection.execute("PRAGMA synchronous=FULL")
        return connection

    dialect = _Dialect(
        name="sqlite",
        connect=connect,
        placeholder="?",
        now="((julianday('now') - 2440587.5) * 86400.0)",
        # IMMEDIATE takes the write lock up front: no deadlock upgrading a read lock.
        begin="BEGIN IMMEDIATE",
        lease_key=(
            "INSERT INTO stovepipe_queue_key_lease"
            " (lease_token, lease_until, topic, partition_key) VALUES (?, {now} + ?, ?, ?)"
            " ON CONFLICT (topic, partition_key) DO UPDATE"
            " SET lease_token = excluded.lease_token, lease_until = excluded.lease_until"
            " WHERE stovepipe_queue_key_lease.lease_until <= {now}"
        ),
        errors=(sqlite3.Error,),
        is_transient=_sqlite_is_transient,
        explicit_writes=True,
        writer=functools.partial(writer_lock(path).held, timeout),
    )
    broker = SQLBroker(dialect, visibility_timeout=visibility_timeout)
    try:
        with contextlib.closing(
            sqlite3.connect(path, timeout=timeout, isolation_level=None)
        ) as connection:
            use_wal(connection, timeout)
            create_tables(connection, _SQLITE_SCHEMA)
    except sqlite3.Error as error:
        raise _mapped_error(dialect, error) from None
    return broker


def mysql_broker(url: str, *, visibility_timeout: float) -> SQLBroker:
    """A broker in the MySQL/MariaDB database of ``mysql://user:password@host:port/db``.

    ``timeout`` (seconds, default 5) bounds connecting, every read and every write. Needs
    PyMySQL (installed with the MySQL backend, ``stovepipe-mysql``).
    """
    try:
        import pymysql
    except ImportError:
        raise ValueError(
            "mysql:// queues need PyMySQL: pip install 'stovepipe[mysql]' (or stovepipe-mysql)"
        ) from None
    parts = urllib.parse.urlsplit(url)
    database = urllib.parse.unquote(parts.path.lstrip("/"))
    if not parts.hostname or not database:
        raise ValueError("mysql queue URL needs a host and a database: mysql://host/db")
    options = _options(parts.query, {"timeout"}, "mysql")
    timeout = float(options.get("timeout", DEFAULT_TIMEOUT))

    def connect() -> _Connection:
        return pymysql.connect(
            host=parts.hostname,
            port=parts.port or 3306,
            user=urllib.parse.unquote(parts.username or "root"),
            password=urllib.parse.unquote(parts.password or ""),
            database=database,
            autocommit=True,
            connect_timeout=max(1, round(timeout)),
            read_timeout=timeout,
            write_timeout=timeout,
            # UTC: UNIX_TIMESTAMP(NOW(6)) is then unambiguous across daylight-saving changes.
            init_command="SET time_zone = '+00:00'",
        )

    dialect = _Dialect(
        name="mysql",
        connect=connect,
        placeholder="%s",
        now="UNIX_TIMESTAMP(NOW(6))",
        begin="START TRANSACTION",
        # The token is assigned first, while lease_until still holds the old deadline.
        lease_key=(
            "INSERT INTO stovepipe_queue_key_lease"
            " (lease_token, lease_until, topic, partition_key) VALUES (%s, {now} + %s, %s, %s)"
            " ON DUPLICATE KEY UPDATE"
            " lease_token = IF(lease_until <= {now}, VALUES(lease_token), lease_token),"
            " lease_until = IF(lease_until <= {now}, VALUES(lease_until), lease_until)"
        ),
        errors=(pymysql.err.MySQLError,),
        is_transient=_mysql_is_transient,
    )
    broker = SQLBroker(dialect, visibility_timeout=visibility_timeout)
    try:
        broker.create_schema(_MYSQL_SCHEMA)
    except BaseException:
        broker.close()
        raise
    return broker


def _options(query: str, allowed: set[str], scheme: str) -> dict[str, str]:
    options = dict(urllib.parse.parse_qsl(query, strict_parsing=bool(query)))
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(f"unknown {scheme} queue URL options: {', '.join(sorted(unknown))}")
    return options
