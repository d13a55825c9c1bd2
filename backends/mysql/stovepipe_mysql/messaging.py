"""The ``mysql://`` messaging queue: the SQL broker of :mod:`stovepipe.messaging.sqlqueue` on
this backend's options, connection pool and error mapping.

The URL is the storage's (:mod:`stovepipe_mysql.options`: TLS, ``timeout``, ``pool_size``,
``migrate``), so a messaging URL derived from the storage URL talks to the same database the
same way. Connections come from a :class:`~stovepipe_mysql.pool.ConnectionPool` of its own
(the storage's kind, ``pool_size`` connections at most, default 10): each is checked before
use and replaced when the server closed it (``wait_timeout``, ``KILL``, a restart). Driver
errors go through the storage's one mapping
(:func:`~stovepipe_mysql.backend.statement_failure`) and leave as the messaging contract's.

The tables are in ``schema/0003_messaging.sql``, applied by ``stovepipe migrate`` with the
storage's. Opening checks them: present, nothing is created (an account without ``CREATE``
works); missing, the queue applies that file itself, or says to run ``stovepipe migrate``
where the account may not.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Final

import pymysql

from stovepipe.messaging.contract import MessagingError, as_messaging_error
from stovepipe.messaging.sqlqueue import Deadlock, Dialect, SQLBroker
from stovepipe.storage.errors import StorageError
from stovepipe_mysql.backend import connect_failure, connection_lost, statement_failure
from stovepipe_mysql.options import MySQLOptions, parse_url
from stovepipe_mysql.pool import ConnectionPool, PooledConnection

_DEADLOCK: Final = 1213
# Denied: the account may not create the tables (CREATE, or the ALTER of an upgrade).
_DENIED: Final = frozenset({1142, 1044})

# Reads every table and the newest columns, no row: fails unless 0003 was applied in full.
CHECK_TABLES: Final = (
    "SELECT m.message_id, d.message_id, k.lease_token FROM stovepipe_queue_message m,"
    " stovepipe_queue_dead_letter d, stovepipe_queue_key_lease k LIMIT 0"
)

DIALECT: Final = Dialect(
    name="mysql",
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
    # Not INSERT IGNORE: that would also turn other errors (a key too long) into warnings.
    on_pending_id="ON DUPLICATE KEY UPDATE id = id",
)


class PooledConnections:
    """The :class:`~stovepipe.messaging.sqlqueue.Connections` of the MySQL queue: a pool of
    its own, of the storage's kind, on the storage's connection arguments."""

    def __init__(self, options: MySQLOptions) -> None:
        self._address = options.address
        self._arguments: dict[str, Any] = {
            **options.connect_arguments(),
            # UTC: UNIX_TIMESTAMP(NOW(6)) is then unambiguous across daylight-saving changes.
            "init_command": "SET time_zone = '+00:00'",
        }
        self._pool = ConnectionPool(self._connect, options.pool_size, options.timeout)

    def _connect(self) -> PooledConnection:
        try:
            return PooledConnection(pymysql.connect(**self._arguments))
        except Exception as error:  # not only pymysql.Error: see connect_failure
            raise as_messaging_error(connect_failure(error, self._address)) from error

    @contextlib.contextmanager
    def cursor(self) -> Iterator[Any]:
        """The pooled cursor of a live connection for this block; a connection the block
        lost is discarded, any other goes back to the pool."""
        try:
            pooled = self._pool.acquire()
        except StorageError as error:  # all busy, or closed
            raise as_messaging_error(error) from error
        try:
            yield pooled.cursor
        except pymysql.Error as error:
            if connection_lost(error):
                self._pool.discard(pooled)
            else:
                self._pool.release(pooled)
            if error.args and error.args[0] == _DEADLOCK:
                raise Deadlock(f"mysql {self._address}: {error.args[-1]}") from error
            raise as_messaging_error(statement_failure(error, self._address)) from error
        except BaseException:
            self._pool.discard(pooled)
            raise
        self._pool.release(pooled)

    def close(self) -> None:
        self._pool.close()


def mysql_broker(url: str, *, visibility_timeout: float) -> SQLBroker:
    """Entry point (``stovepipe.messaging``) for
    ``mysql://user:password@host:port/database?options``, the storage's options.

    Raises ``ValueError`` for a malformed URL, :class:`MessagingUnavailable` if the server
    cannot be reached and :class:`MessagingError` if it refuses (credentials, a database
    without the tables and an account that may not create them).
    """
    options = parse_url(url)
    connections = PooledConnections(options)
    broker = SQLBroker(DIALECT, connections, visibility_timeout=visibility_timeout)
    try:
        _ensure_tables(options, connections)
    except BaseException:
        broker.close()
        raise
    return broker


def _ensure_tables(options: MySQLOptions, connections: PooledConnections) -> None:
    """Check the tables; apply ``0003_messaging.sql`` if they are missing or ``migrate`` is
    on. Never runs DDL where the tables are complete."""
    from stovepipe_mysql.migrations import MESSAGING_SCHEMA, migrate_options

    if not options.migrate:
        try:
            with connections.cursor() as cursor:
                cursor.execute(CHECK_TABLES)
            return
        except MessagingError as error:
            if error.transient:
                raise
    try:
        migrate_options(options, only=MESSAGING_SCHEMA)
    except StorageError as error:
        cause = error.__cause__ or error.__context__
        if isinstance(cause, pymysql.Error) and cause.args and cause.args[0] in _DENIED:
            raise MessagingError(
                f"mysql {options.address}: the messaging tables are missing and this account "
                f"may not create them ({error}); apply the schema with `stovepipe migrate URL` "
                "as an account that may"
            ) from error
        raise as_messaging_error(error) from error
