"""A messaging queue in three SQL tables: the engine-neutral broker, and SQLite (stdlib).

Another SQL engine plugs in with a :class:`Dialect` and its :class:`Connections` (MySQL and
MariaDB: ``stovepipe_mysql.messaging``, in the MySQL backend's distribution, which brings its
connection pool, options and error mapping; its tables are in that backend's schema files).

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
lease, or (:meth:`SQLBroker.ack_and_claim_next`) deletes the row and leases the key's next
message under the kept key lease; dead-lettering moves the row, in one transaction. Every
time is the database server's clock, so consumers on several hosts need no synchronized
clocks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final, Protocol

import tenacity

from stovepipe.messaging.brokered import Delivery, MessagingError, MessagingUnavailable
from stovepipe.messaging.codec import decode_text, decode_text_lax, encode_text
from stovepipe.messaging.contract import Message
from stovepipe.messaging.inprocess import DeadLetter
from stovepipe.storage import sqlite as sqlite_url
from stovepipe.storage.sqlite import create_tables, is_transient, use_wal, writer_lock

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT: Final = 5.0
# Runs of a publish that InnoDB chose as a deadlock victim (see SQLBroker.publish).
_PUBLISH_ATTEMPTS: Final = 5
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
    published_at  REAL NOT NULL,
    message_id    BLOB
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
    dead_at       REAL NOT NULL,
    message_id    BLOB
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
# Tables made before messages had ids get the column (NULL in their rows: no id to repeat):
# the query counting it (parameter: the table), and the statement adding it, per table.
_SQLITE_HAS_MESSAGE_ID: Final = (
    "SELECT COUNT(*) FROM pragma_table_info(?) WHERE name = 'message_id'"
)
_SQLITE_UPGRADES: Final = (
    (
        "stovepipe_queue_message",
        "ALTER TABLE stovepipe_queue_message ADD COLUMN message_id BLOB",
    ),
    (
        "stovepipe_queue_dead_letter",
        "ALTER TABLE stovepipe_queue_dead_letter ADD COLUMN message_id BLOB",
    ),
)
# A message id is pending on its topic at most once (NULLs never collide).
_SQLITE_MESSAGE_ID_INDEX: Final = (
    "CREATE UNIQUE INDEX IF NOT EXISTS stovepipe_queue_message_id"
    " ON stovepipe_queue_message (topic, message_id)"
)


class Deadlock(MessagingUnavailable):
    """The engine rolled the statement back to break a deadlock: running it again is right.
    An engine's error mapping raises it; :meth:`SQLBroker.publish` runs the INSERT again."""


class Connections(Protocol):
    """Where an :class:`SQLBroker` gets its connections: an engine's pool or per-thread
    connections, with that engine's error mapping."""

    def cursor(self) -> contextlib.AbstractContextManager[Any]:
        """A DB-API cursor for one block, on a connection no other thread uses meanwhile
        (autocommit on). A driver error raised in the block leaves it as the messaging
        contract's error (:class:`MessagingUnavailable`, :class:`Deadlock` or
        :class:`MessagingError`), chained; a connection that failed is not reused."""
        ...

    def close(self) -> None:
        """Close every connection; a cursor asked for afterwards raises
        :class:`MessagingUnavailable`. Idempotent."""
        ...


class _Connection(Protocol):
    def cursor(self) -> Any: ...

    def close(self) -> None: ...


@dataclasses.dataclass(frozen=True)
class Dialect:
    """What differs between the engines' SQL: placeholders, the clock, transactions."""

    name: str
    placeholder: str
    # The server's clock in seconds since the epoch, as an SQL expression.
    now: str
    begin: str
    # Leases a key (parameters: token, lease seconds, topic, key): inserts its lease, or takes
    # over one that ran out, and locks the row exclusively at once (a shared lock first, then
    # an exclusive one, would deadlock racing claims).
    lease_key: str
    # Ends a publish's INSERT: store nothing if the (topic, message_id) pair is pending.
    on_pending_id: str
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

    ``connections`` hands out the engine's connections (see :class:`Connections`);
    ``visibility_timeout`` is how long a delivery stays leased without a renewal.
    """

    def __init__(
        self, dialect: Dialect, connections: Connections, *, visibility_timeout: float
    ) -> None:
        self._dialect = dialect
        self._connections = connections
        self._visibility_timeout = visibility_timeout
        self._lock = threading.Lock()
        self._held: dict[int, _Receipt] = {}  # row id -> receipt, for renewals

    @tenacity.retry(
        retry=tenacity.retry_if_exception_type(Deadlock),
        stop=tenacity.stop_after_attempt(_PUBLISH_ATTEMPTS),
        wait=tenacity.wait_random_exponential(multiplier=0.01, max=0.2),
        reraise=True,
    )
    def publish(self, topic: str, key: str, payload: bytes, message_id: str) -> None:
        """Insert the message unless its id is pending on ``topic`` (the unique index on
        ``(topic, message_id)`` decides between racers); its row id orders it after every
        message committed before.

        On MySQL a duplicate's check locks the unique index entry, an acknowledgement of the
        pending message its row first: InnoDB may pick the publish as a deadlock victim. The
        statement is then run again (a few times, after a short random wait): it is one
        autocommitted statement, and idempotent by its id.
        """
        self._execute(
            "INSERT INTO stovepipe_queue_message"
            " (topic, partition_key, payload, attempt, available_at, published_at, message_id)"
            f" VALUES (?, ?, ?, 0, {self._dialect.now}, {self._dialect.now}, ?)"
            f" {self._dialect.on_pending_id}",
            (encode_text(topic), encode_text(key), payload, encode_text(message_id)),
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
            tuple(encode_text(topic) for topic in topics),
        )
        for topic, key, _ in heads:
            receipt = _Receipt(0, secrets.token_bytes(16), bytes(topic), bytes(key))
            leased = self._lease_key_head(receipt)
            if leased is None:
                continue
            delivery = self._hand_out(*leased)
            if delivery is not None:
                return delivery
        return None

    def _hand_out(
        self, receipt: _Receipt, payload: bytes, attempt: int, message_id: bytes | None
    ) -> Delivery | None:
        """The delivery of the message ``receipt`` leased, kept among those held here; or,
        for a message whose key or id is not UTF-8, ``None`` after dead-lettering it."""
        try:
            message = Message(
                decode_text(receipt.topic),
                decode_text(receipt.key),
                payload,
                attempt,
                decode_text(message_id or b""),
            )
        except UnicodeDecodeError as error:
            # Written by something else than this module: no delivery can ever succeed,
            # and holding the lease would strand the key.
            which = "key" if _undecodable(receipt.key) else "message id"
            reason = f"undecodable message: {which} is not UTF-8: {error}"
            logger.error(
                "dead-lettering an undecodable %r message: %s",
                decode_text_lax(receipt.topic),
                reason,
            )
            self._move_to_dead_letters(receipt, reason)
            return None
        with self._lock:
            self._held[receipt.row_id] = receipt
        return Delivery(message, receipt)

    def _lease_key_head(
        self, receipt: _Receipt
    ) -> tuple[_Receipt, bytes, int, bytes | None] | None:
        """Lease the key of ``receipt``, then its head if deliverable, in one transaction: the
        receipt with the head's id, its payload, its ``attempt`` and its message id;
        ``None`` if either lease was not to be had.

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
            return self._lease_head(cursor, receipt)

    def _lease_head(
        self, cursor: Any, receipt: _Receipt
    ) -> tuple[_Receipt, bytes, int, bytes | None] | None:
        """In the transaction of ``cursor``, whose key lease ``receipt`` holds: lease the
        key's head if deliverable (as :meth:`_lease_key_head` returns it), else release the
        key and return ``None``."""
        now = self._dialect.now
        cursor.execute(
            self._sql(
                f"SELECT id, payload, attempt, available_at <= {now}, message_id"
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
        leased = dataclasses.replace(receipt, row_id=int(head[0]))
        message_id = None if head[4] is None else bytes(head[4])
        return leased, bytes(head[1]), head[2] + 1, message_id

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

    def ack_and_claim_next(self, delivery: Delivery) -> Delivery | None:
        """Acknowledge ``delivery`` and lease its key's next message, in one transaction.

        The key stays leased, under a fresh token (the old receipt then matches nothing, so a
        repeated acknowledgement of it changes nothing), if its next message is deliverable
        now: the oldest of the key, not backing off; that message counts one more delivery,
        as a claim's does. Otherwise the key is freed, exactly as :meth:`ack` does, and the
        result is ``None``. If this delivery's key lease was taken over (it ran out), this is
        a plain :meth:`ack`.
        """
        receipt = self._release(delivery)
        following = dataclasses.replace(receipt, token=secrets.token_bytes(16))
        now = self._dialect.now
        with self._transaction() as cursor:
            # The key's lease first, as a claim and an acknowledgement lock it: its new token
            # and deadline; none changed if the lease is no longer this delivery's.
            kept = self._run(
                cursor,
                f"UPDATE stovepipe_queue_key_lease SET lease_token = ?, lease_until = {now} + ?"
                " WHERE topic = ? AND partition_key = ? AND lease_token = ?",
                (
                    following.token,
                    self._visibility_timeout,
                    receipt.topic,
                    receipt.key,
                    receipt.token,
                ),
            )
            deleted = self._run(
                cursor,
                "DELETE FROM stovepipe_queue_message WHERE id = ? AND lease_token = ?",
                (receipt.row_id, receipt.token),
            )
            leased = self._lease_head(cursor, following) if kept == 1 else None
        if deleted != 1:
            logger.warning("acknowledged a %r message after its lease ran out", _topic(delivery))
        return None if leased is None else self._hand_out(*leased)

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
                "INSERT INTO stovepipe_queue_dead_letter (topic, partition_key, payload,"
                " attempt, reason, published_at, dead_at, message_id)"
                " SELECT topic, partition_key, payload, attempt, ?, published_at,"
                f" {self._dialect.now}, message_id"
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
            "SELECT COUNT(*) FROM stovepipe_queue_message WHERE topic = ?", (encode_text(topic),)
        )
        return int(rows[0][0])

    def dead_letters(self, topic: str) -> list[DeadLetter]:
        """The dead letters of ``topic``, oldest first."""
        rows = self._query(
            "SELECT partition_key, payload, attempt, reason, message_id"
            " FROM stovepipe_queue_dead_letter WHERE topic = ? ORDER BY id",
            (encode_text(topic),),
        )
        return [
            DeadLetter(
                Message(
                    topic,
                    decode_text_lax(key),
                    bytes(payload),
                    int(attempt),
                    decode_text_lax(message_id or b""),
                ),
                str(reason),
            )
            for key, payload, attempt, reason, message_id in rows
        ]

    def close(self) -> None:
        """Close the connections. Leases of deliveries still running are left to run out:
        handing them back would let another consumer start the same key alongside."""
        with self._lock:
            self._held = {}
        self._connections.close()

    def _release(self, delivery: Delivery) -> _Receipt:
        receipt = delivery.receipt
        assert isinstance(receipt, _Receipt)
        with self._lock:
            self._held.pop(receipt.row_id, None)
        return receipt

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

    def _cursor(self) -> contextlib.AbstractContextManager[Any]:
        return self._connections.cursor()

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


def _sqlite_error(error: sqlite3.Error) -> MessagingError:
    """The messaging contract's error for a ``sqlite3`` error: only a lock held by another
    connection past the busy timeout passes on its own."""
    if is_transient(error):
        return MessagingUnavailable(f"sqlite queue: {error}")
    return MessagingError(f"sqlite queue: {type(error).__name__}: {error}")


def _topic(delivery: Delivery) -> str:
    return delivery.message.topic


class _ThreadConnections:
    """One SQLite connection per thread, opened on first use (a SQLite connection is cheap,
    and a thread's own stays warm)."""

    def __init__(self, connect: Callable[[], _Connection]) -> None:
        self._connect = connect
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: list[_Connection] = []
        self._closed = False

    @contextlib.contextmanager
    def cursor(self) -> Iterator[Any]:
        """A cursor on this thread's connection; a transient failure closes the connection
        (it may be broken: the next call reconnects)."""
        cursor = self._connection().cursor()
        try:
            yield cursor
        except sqlite3.Error as error:
            mapped = _sqlite_error(error)
            if mapped.transient:
                self._discard()
            raise mapped from error
        finally:
            with contextlib.suppress(Exception):
                cursor.close()

    def _connection(self) -> _Connection:
        connection: _Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            with self._lock:
                if self._closed:
                    raise MessagingUnavailable("the messaging queue is closed")
            try:
                connection = self._connect()
            except sqlite3.Error as error:
                raise _sqlite_error(error) from error
            with self._lock:
                self._open.append(connection)
            self._local.connection = connection
        return connection

    def _discard(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            with self._lock, contextlib.suppress(ValueError):
                self._open.remove(connection)
            with contextlib.suppress(Exception):
                connection.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections, self._open = self._open, []
        for connection in connections:
            with contextlib.suppress(Exception):
                connection.close()


SQLITE_DIALECT: Final = Dialect(
    name="sqlite",
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
    on_pending_id="ON CONFLICT (topic, message_id) DO NOTHING",
    explicit_writes=True,
)


def sqlite_broker(url: str, *, visibility_timeout: float) -> SQLBroker:
    """A broker in the SQLite file of ``sqlite:///path[?timeout=S&synchronous=MODE]``.

    The tables may share the file with the SQLite storage backend, and the URL takes the
    storage's options. WAL mode lets consumers in several processes on this host share the
    file; ``timeout`` bounds the wait for its lock; ``synchronous`` is ``full`` (the default:
    every acknowledged publish survives power loss) or ``normal``.
    """
    # The storage's parser: one form of sqlite: URL, one set of option rules.
    options = sqlite_url.parse_url(url)
    path, timeout = options.path, options.timeout
    synchronous = options.synchronous.upper()

    def connect() -> _Connection:
        connection = sqlite3.connect(
            path, timeout=timeout, isolation_level=None, check_same_thread=False
        )
        use_wal(connection, timeout)
        connection.execute(f"PRAGMA synchronous={synchronous}")
        return connection

    try:
        with contextlib.closing(
            sqlite3.connect(path, timeout=timeout, isolation_level=None)
        ) as connection:
            use_wal(connection, timeout)
            create_tables(connection, _SQLITE_SCHEMA)
            for table, add_column in _SQLITE_UPGRADES:
                if connection.execute(_SQLITE_HAS_MESSAGE_ID, (table,)).fetchone()[0]:
                    continue
                with connection:  # another process may be adding the column too: look again
                    connection.execute("BEGIN IMMEDIATE")
                    if not connection.execute(_SQLITE_HAS_MESSAGE_ID, (table,)).fetchone()[0]:
                        connection.execute(add_column)
            create_tables(connection, _SQLITE_MESSAGE_ID_INDEX + ";")
    except sqlite3.Error as error:
        raise _sqlite_error(error) from error
    # Writers of this file in this process queue on the lock the storage backend shares.
    dialect = dataclasses.replace(
        SQLITE_DIALECT, writer=functools.partial(writer_lock(path).held, timeout)
    )
    return SQLBroker(dialect, _ThreadConnections(connect), visibility_timeout=visibility_timeout)


def _undecodable(text: bytes) -> bool:
    try:
        decode_text(text)
    except UnicodeDecodeError:
        return True
    return False
