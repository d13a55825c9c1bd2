"""``mysql://``: the storage contract on MySQL 8.0+ and MariaDB 10.3+, through PyMySQL.

Every operation is one statement in autocommit mode on a pooled connection:

=====================  ============================================================
``*.create``           ``INSERT``; duplicate key (1062) -> ``AlreadyExists``
``*.get``              ``SELECT`` by primary key
``*.update``           ``UPDATE ... WHERE key = ? AND version = ?``; the connection reports
                       matched rows (CLIENT.FOUND_ROWS), so 0 means ``VersionMismatch``
``request_uris.*``     ``INSERT`` / ``SELECT`` on the (queue, uri) primary key
``facts.*``            ``INSERT`` / ``SELECT`` on the (queue, uri, project) primary key
``counter.next``       ``INSERT ... ON DUPLICATE KEY UPDATE value = LAST_INSERT_ID(value + 1)``:
                       the row lock orders racers and the new value comes back in the
                       statement's own result, so there is no read-modify-write
=====================  ============================================================

(``*`` is ``requests``, ``queues`` and ``builds``; facts are written once and have no update.)

Keys travel as UTF-8 bytes into VARBINARY columns: compared byte for byte (see schema/).

Retries. A connection the server closed while idle is noticed before use and replaced, so
no statement is sent on it. When a connection fails *during* a statement, the statement
may or may not have committed, so only what is safe is retried, once, on a new connection:

* reads (every ``get``, ``get_id_by_uri``) are retried;
* creates are retried. If the lost attempt was never sent, a duplicate key on the retry is
  ``AlreadyExists`` (first writer wins). If it may have been sent, the stored row is read back
  and an identical row is treated as the caller's own first attempt (no false
  ``AlreadyExists``); a racer that stored the identical row first is then indistinguishable
  from that attempt;
* ``counter.next`` is retried: a lost first increment leaves a gap, never a repeat;
* an ``update`` is retried only if the statement was never sent; otherwise it raises
  ``Unavailable``: re-running a compare-and-set whose first attempt may have won would
  report a false ``VersionMismatch``, and treating an identical stored row as a win could
  let two racers both believe they won;
* nothing is retried after a timeout, so a call never takes much more than ``timeout``
  per step.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any, Final, TypeVar

import pymysql
from pymysql.cursors import Cursor

from stovepipe.entity import Build, BuildStatus, BuildStrategy, Fact, Queue, Request, RequestState
from stovepipe.storage import limits
from stovepipe.storage.errors import (
    AlreadyExists,
    NotFound,
    StorageError,
    Unavailable,
    VersionMismatch,
)
from stovepipe_mysql.options import MySQLOptions, parse_url
from stovepipe_mysql.pool import ConnectionPool, PooledConnection

T = TypeVar("T")

# The statements, exactly; the benchmark runs these same strings through raw PyMySQL.
INSERT_REQUEST: Final = (
    "INSERT INTO request (id, queue, uri, state, version, build_strategy, base_uri)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s)"
)
SELECT_REQUEST: Final = (
    "SELECT queue, uri, state, version, build_strategy, base_uri FROM request WHERE id = %s"
)
UPDATE_REQUEST: Final = (
    "UPDATE request SET uri = %s, state = %s, build_strategy = %s, base_uri = %s, version = %s"
    " WHERE id = %s AND version = %s"
)
INSERT_REQUEST_URI: Final = "INSERT INTO request_uri (queue, uri, request_id) VALUES (%s, %s, %s)"
SELECT_REQUEST_URI: Final = "SELECT request_id FROM request_uri WHERE queue = %s AND uri = %s"
NEXT_COUNTER: Final = (
    "INSERT INTO counter (domain, `value`) VALUES (%s, LAST_INSERT_ID(1))"
    " ON DUPLICATE KEY UPDATE `value` = LAST_INSERT_ID(`value` + 1)"
)
INSERT_QUEUE: Final = (
    "INSERT INTO queue (name, latest_request_id, last_green_uri, last_green_request_id,"
    " in_flight, version) VALUES (%s, %s, %s, %s, %s, %s)"
)
SELECT_QUEUE: Final = (
    "SELECT latest_request_id, last_green_uri, last_green_request_id, in_flight, version"
    " FROM queue WHERE name = %s"
)
UPDATE_QUEUE: Final = (
    "UPDATE queue SET latest_request_id = %s, last_green_uri = %s, last_green_request_id = %s,"
    " in_flight = %s, version = %s WHERE name = %s AND version = %s"
)
INSERT_BUILD: Final = (
    "INSERT INTO build (id, request_id, status, log, version) VALUES (%s, %s, %s, %s, %s)"
)
SELECT_BUILD: Final = "SELECT request_id, status, log, version FROM build WHERE id = %s"
UPDATE_BUILD: Final = (
    "UPDATE build SET status = %s, log = %s, version = %s WHERE id = %s AND version = %s"
)
INSERT_FACT: Final = (
    "INSERT INTO fact (queue, uri, project, degree, request_id, created_at)"
    " VALUES (%s, %s, %s, %s, %s, %s)"
)
SELECT_FACT: Final = (
    "SELECT degree, request_id, created_at FROM fact WHERE queue = %s AND uri = %s AND project = %s"
)
# Fails with "no such table" or "unknown column" unless every table and column of the schema
# exists, so a database that missed a migration is caught at open; LIMIT 0 reads no row.
CHECK_SCHEMA: Final = (
    "SELECT request.build_strategy, request.base_uri"
    " FROM request, request_uri, counter, queue, build, fact LIMIT 0"
)

_DUPLICATE_KEY: Final = 1062
# The schema lacks a table (1146) or a column (1054): a migration was not applied.
_SCHEMA_MISSING: Final = frozenset({1146, 1054})
# The connection is gone: client-side losses, and the server's "killed", "shutting down"
# and "disconnected for inactivity" (MySQL 8.0.24+).
_CONNECTION_LOST: Final = frozenset({2006, 2013, 2055, 1053, 1927, 4031})
# The server is there but could not serve the statement now; the connection stays usable.
_TRANSIENT: Final = frozenset({1040, 1205, 1213, 1317, 1969, 3024})
# Refused for good: wrong credentials or database, a host the account may not connect from,
# an authentication method the server or the driver cannot use, or TLS required and failed.
_REFUSED: Final = frozenset({1044, 1045, 1049, 1130, 1251, 1698, 2026, 2059})


class _AlreadyExistsOnRetry(AlreadyExists):
    """A duplicate key met by a retry after an attempt that may have run: maybe the caller's own."""


def _reason(error: BaseException) -> str:
    args: tuple[Any, ...] = error.args
    if len(args) == 2:
        return f"{args[1]} (error {args[0]})"
    return str(error) or type(error).__name__


def connect_failure(error: Exception, address: str) -> StorageError:
    """The contract's error for a failed connection attempt: refused for good, or Unavailable.

    Anything but a PyMySQL error is the driver unable to connect by design (an authentication
    plugin that needs a package not installed raises RuntimeError), so it is refused for good.
    """
    if not isinstance(error, pymysql.Error):
        return StorageError(f"mysql {address} refused: {type(error).__name__}: {error}")
    code = error.args[0] if error.args else 0
    if code in _REFUSED:
        return StorageError(f"mysql {address} refused: {_reason(error)}")
    rejected = _certificate_rejection(error)
    if rejected is not None:
        return StorageError(
            f"mysql {address} refused: the server's TLS certificate failed verification: "
            f"{rejected.verify_message or rejected}"
        )
    return Unavailable(f"mysql {address} unreachable: {_reason(error)}")


def connection_lost(error: BaseException) -> bool:
    """True if ``error`` (a PyMySQL error) means the connection is gone: discard it."""
    code = error.args[0] if error.args else 0
    return code in _CONNECTION_LOST or isinstance(error, pymysql.InterfaceError)


def statement_failure(error: BaseException, address: str) -> StorageError:
    """The contract's error for a statement that failed with PyMySQL's ``error`` on the
    database at ``address``: ``Unavailable`` for a lost connection or a transient refusal (a
    deadlock, a lock wait timeout, too many connections), else ``StorageError``, naming
    ``stovepipe migrate`` when the schema lacks a table or column.

    The one mapping of this engine: the storage and the MySQL messaging queue both use it.
    """
    code = error.args[0] if error.args else 0
    if connection_lost(error):
        what = "timed out" if _timed_out(error) else "lost the connection"
        return Unavailable(f"mysql {address} {what}: {_reason(error)}")
    if code in _TRANSIENT:
        return Unavailable(f"mysql {address}: {_reason(error)}")
    if code in _SCHEMA_MISSING:
        return StorageError(
            f"mysql {address}: {_reason(error)}; apply the schema with "
            "`stovepipe migrate URL` (or open the URL with ?migrate=true)"
        )
    return StorageError(f"mysql {address}: {_reason(error)}")


def _certificate_rejection(error: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification failure behind ``error``, if there is one.

    PyMySQL reports a failed TLS handshake as error 2003, "can't connect", with the ssl
    error as the cause; a certificate that does not verify will not verify on a retry.
    """
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def _timed_out(error: BaseException) -> bool:
    """True if PyMySQL raised this error because a socket call timed out."""
    return isinstance(error.__context__, TimeoutError)


class _Database:
    """The pool, and one place that runs a statement and maps what can go wrong."""

    def __init__(self, options: MySQLOptions) -> None:
        self._options = options
        self._connect_arguments = options.connect_arguments()
        self._address = options.address
        self._pool = ConnectionPool(self._connect, options.pool_size, options.timeout)

    def _connect(self) -> PooledConnection:
        try:
            return PooledConnection(pymysql.connect(**self._connect_arguments))
        except Exception as error:  # not only pymysql.Error: see connect_failure
            raise connect_failure(error, self._address) from None

    def check(self) -> None:
        """Connect and read the schema's tables and new columns now, so a wrong URL or a
        database never (or not fully) migrated fails at open, naming ``stovepipe migrate``,
        rather than at every call."""
        self.run(CHECK_SCHEMA, (), _no_result, retry_if_sent=True)

    def run(
        self,
        statement: str,
        args: tuple[Any, ...],
        read: Callable[[Cursor], T],
        *,
        retry_if_sent: bool,
    ) -> T:
        """Run one statement and return ``read(cursor)``; retry a lost connection per the policy."""
        pooled = self._pool.acquire()
        retried = False
        lost_attempt_may_have_run = False
        while True:
            try:
                pooled.cursor.execute(statement, args)
                result = read(pooled.cursor)
            except pymysql.Error as error:
                code = error.args[0] if error.args else 0
                if code in _CONNECTION_LOST or isinstance(error, pymysql.InterfaceError):
                    # 2006 and InterfaceError: the statement could not be sent at all.
                    unsent = code == 2006 or isinstance(error, pymysql.InterfaceError)
                    if retried or _timed_out(error) or not (unsent or retry_if_sent):
                        self._pool.discard(pooled)
                        raise self._lost(error, unsent) from None
                    retried = True
                    lost_attempt_may_have_run = not unsent
                    pooled = self._pool.replace(pooled)
                    continue
                self._pool.release(pooled)
                if code == _DUPLICATE_KEY:
                    # Only a lost attempt that may have run can own the duplicate; after one
                    # that was never sent, the row is another writer's: first writer wins.
                    raise (_AlreadyExistsOnRetry if lost_attempt_may_have_run else AlreadyExists)(
                        _reason(error)
                    ) from None
                raise self._failed(error, code) from None
            except BaseException:
                self._pool.discard(pooled)
                raise
            self._pool.release(pooled)
            return result

    def insert(
        self,
        statement: str,
        args: tuple[Any, ...],
        *,
        taken: str,
        is_ours: Callable[[], bool],
    ) -> None:
        """Run a create's ``INSERT``; raise ``AlreadyExists(taken)`` if its key is stored.

        Retried per the policy. When the retry meets a duplicate key after an attempt that may
        have run, ``is_ours()`` reads the stored row back: if it is the row being created, that
        lost attempt committed it and the create succeeded.
        """
        try:
            self.run(statement, args, _no_result, retry_if_sent=True)
        except _AlreadyExistsOnRetry:
            if not is_ours():
                raise AlreadyExists(taken) from None
        except AlreadyExists:
            raise AlreadyExists(taken) from None

    def compare_and_set(self, statement: str, args: tuple[Any, ...], *, mismatch: str) -> None:
        """Run a conditional ``UPDATE ... AND version = ?``; ``VersionMismatch(mismatch)`` unless
        it matched exactly one row. Never retried once sent (see the policy)."""
        if self.run(statement, args, _matched_rows, retry_if_sent=False) != 1:
            raise VersionMismatch(mismatch)

    def _lost(self, error: BaseException, unsent: bool) -> Unavailable:
        what = "timed out" if _timed_out(error) else "lost the connection"
        outcome = "" if unsent else "; the statement may or may not have been applied"
        return Unavailable(f"mysql {self._address} {what}: {_reason(error)}{outcome}")

    def _failed(self, error: BaseException, code: int) -> StorageError:
        return statement_failure(error, self._address)

    def close(self) -> None:
        self._pool.close()


def _no_result(cursor: Cursor) -> None:
    return None


def _fetch_one(cursor: Cursor) -> tuple[Any, ...] | None:
    return cursor.fetchone()


def _matched_rows(cursor: Cursor) -> int:
    return cursor.rowcount


def _last_insert_id(cursor: Cursor) -> int:
    value: int = cursor.lastrowid
    return value


def _text(stored: bytes, where: str, column: str) -> str:
    """A stored column's UTF-8 bytes as text, or a StorageError naming the key and column."""
    try:
        return stored.decode()
    except UnicodeDecodeError as error:
        raise StorageError(
            f"{where}: stored {column} is not valid UTF-8 ({error.reason} at byte "
            f"{error.start}); it was not written by this backend"
        ) from None


_Enum = TypeVar("_Enum", RequestState, BuildStrategy, BuildStatus)


def _member(kind: type[_Enum], stored: bytes, where: str, column: str) -> _Enum:
    """A stored enumerated column as a member of ``kind`` (see ``limits.read_member``)."""
    return limits.read_member(kind, _text(stored, where, column), column, where)


class MySQLRequestStore:
    """Requests in table ``request``, keyed by id."""

    def __init__(self, database: _Database) -> None:
        self._database = database

    def create(self, request: Request) -> None:
        self._database.insert(
            INSERT_REQUEST,
            (
                request.id.encode(),
                request.queue.encode(),
                request.uri.encode(),
                request.state.encode(),
                request.version,
                request.build_strategy.encode(),
                request.base_uri.encode(),
            ),
            taken=f"request {request.id!r} exists",
            is_ours=lambda: self._find(request.id) == request,
        )

    def get(self, request_id: str) -> Request:
        request = self._find(request_id)
        if request is None:
            raise NotFound(f"request {request_id!r}")
        return request

    def _find(self, request_id: str) -> Request | None:
        row = self._database.run(
            SELECT_REQUEST, (request_id.encode(),), _fetch_one, retry_if_sent=True
        )
        if row is None:
            return None
        queue, uri, state, version, build_strategy, base_uri = row
        where = f"request {request_id!r}"
        return Request(
            id=request_id,
            queue=_text(queue, where, "queue"),
            uri=_text(uri, where, "uri"),
            state=_member(RequestState, state, where, "state"),
            version=version,
            build_strategy=_member(BuildStrategy, build_strategy, where, "build_strategy"),
            base_uri=_text(base_uri, where, "base_uri"),
        )

    def update(self, request: Request, *, old_version: int, new_version: int) -> None:
        self._database.compare_and_set(
            UPDATE_REQUEST,
            (
                request.uri.encode(),
                request.state.encode(),
                request.build_strategy.encode(),
                request.base_uri.encode(),
                new_version,
                request.id.encode(),
                old_version,
            ),
            mismatch=f"request {request.id!r} is not at version {old_version}",
        )


class MySQLRequestURIStore:
    """``(queue, uri) -> request id`` in table ``request_uri``: two key columns, no separator."""

    def __init__(self, database: _Database) -> None:
        self._database = database

    def create(self, queue: str, uri: str, request_id: str) -> None:
        self._database.insert(
            INSERT_REQUEST_URI,
            (queue.encode(), uri.encode(), request_id.encode()),
            taken=f"uri {uri!r} of queue {queue!r} is mapped",
            is_ours=lambda: self._find(queue, uri) == request_id,
        )

    def get_id_by_uri(self, queue: str, uri: str) -> str:
        request_id = self._find(queue, uri)
        if request_id is None:
            raise NotFound(f"uri {uri!r} of queue {queue!r}")
        return request_id

    def _find(self, queue: str, uri: str) -> str | None:
        row = self._database.run(
            SELECT_REQUEST_URI, (queue.encode(), uri.encode()), _fetch_one, retry_if_sent=True
        )
        if row is None:
            return None
        return _text(row[0], f"uri {uri!r} of queue {queue!r}", "request_id")


class MySQLCounter:
    """Counters in table ``counter``, one row per domain holding the last number handed out."""

    def __init__(self, database: _Database) -> None:
        self._database = database

    def next(self, domain: str) -> int:
        return self._database.run(
            NEXT_COUNTER, (domain.encode(),), _last_insert_id, retry_if_sent=True
        )


class MySQLQueueStore:
    """Queues in table ``queue``, keyed by name."""

    def __init__(self, database: _Database) -> None:
        self._database = database

    def create(self, queue: Queue) -> None:
        self._database.insert(
            INSERT_QUEUE,
            (
                queue.name.encode(),
                queue.latest_request_id.encode(),
                queue.last_green_uri.encode(),
                queue.last_green_request_id.encode(),
                queue.in_flight,
                queue.version,
            ),
            taken=f"queue {queue.name!r} exists",
            is_ours=lambda: self._find(queue.name) == queue,
        )

    def get(self, name: str) -> Queue:
        queue = self._find(name)
        if queue is None:
            raise NotFound(f"queue {name!r}")
        return queue

    def _find(self, name: str) -> Queue | None:
        row = self._database.run(SELECT_QUEUE, (name.encode(),), _fetch_one, retry_if_sent=True)
        if row is None:
            return None
        latest_request_id, last_green_uri, last_green_request_id, in_flight, version = row
        where = f"queue {name!r}"
        return Queue(
            name=name,
            latest_request_id=_text(latest_request_id, where, "latest_request_id"),
            last_green_uri=_text(last_green_uri, where, "last_green_uri"),
            last_green_request_id=_text(last_green_request_id, where, "last_green_request_id"),
            in_flight=in_flight,
            version=version,
        )

    def update(self, queue: Queue, *, old_version: int, new_version: int) -> None:
        self._database.compare_and_set(
            UPDATE_QUEUE,
            (
                queue.latest_request_id.encode(),
                queue.last_green_uri.encode(),
                queue.last_green_request_id.encode(),
                queue.in_flight,
                new_version,
                queue.name.encode(),
                old_version,
            ),
            mismatch=f"queue {queue.name!r} is not at version {old_version}",
        )


class MySQLBuildStore:
    """Builds in table ``build``, keyed by the id their runner minted."""

    def __init__(self, database: _Database) -> None:
        self._database = database

    def create(self, build: Build) -> None:
        self._database.insert(
            INSERT_BUILD,
            (
                build.id.encode(),
                build.request_id.encode(),
                build.status.encode(),
                build.log.encode(),
                build.version,
            ),
            taken=f"build {build.id!r} exists",
            is_ours=lambda: self._find(build.id) == build,
        )

    def get(self, build_id: str) -> Build:
        build = self._find(build_id)
        if build is None:
            raise NotFound(f"build {build_id!r}")
        return build

    def _find(self, build_id: str) -> Build | None:
        row = self._database.run(SELECT_BUILD, (build_id.encode(),), _fetch_one, retry_if_sent=True)
        if row is None:
            return None
        request_id, status, log, version = row
        where = f"build {build_id!r}"
        return Build(
            id=build_id,
            request_id=_text(request_id, where, "request_id"),
            status=_member(BuildStatus, status, where, "status"),
            log=_text(log, where, "log"),
            version=version,
        )

    def update(self, build: Build, *, old_version: int, new_version: int) -> None:
        self._database.compare_and_set(
            UPDATE_BUILD,
            (
                build.status.encode(),
                build.log.encode(),
                new_version,
                build.id.encode(),
                old_version,
            ),
            mismatch=f"build {build.id!r} is not at version {old_version}",
        )


class MySQLFactStore:
    """Facts in table ``fact``: three key columns, no separator; ``degree`` and ``created_at``
    in DOUBLE columns, which read back as the very float written (see schema/)."""

    def __init__(self, database: _Database) -> None:
        self._database = database

    def create(self, fact: Fact) -> None:
        self._database.insert(
            INSERT_FACT,
            (
                fact.queue.encode(),
                fact.uri.encode(),
                fact.project.encode(),
                # PyMySQL sends a float as its shortest repr with an exponent ("0.1e0"), a
                # DOUBLE literal; an int (allowed by the limits) would be sent as an integer.
                float(fact.degree),
                fact.request_id.encode(),
                float(fact.created_at),
            ),
            taken=f"fact {(fact.queue, fact.uri, fact.project)!r} exists",
            is_ours=lambda: self._find(fact.queue, fact.uri, fact.project) == fact,
        )

    def get(self, queue: str, uri: str, project: str) -> Fact:
        fact = self._find(queue, uri, project)
        if fact is None:
            raise NotFound(f"fact {(queue, uri, project)!r}")
        return fact

    def _find(self, queue: str, uri: str, project: str) -> Fact | None:
        row = self._database.run(
            SELECT_FACT,
            (queue.encode(), uri.encode(), project.encode()),
            _fetch_one,
            retry_if_sent=True,
        )
        if row is None:
            return None
        degree, request_id, created_at = row
        return Fact(
            queue=queue,
            uri=uri,
            project=project,
            degree=degree,
            request_id=_text(request_id, f"fact {(queue, uri, project)!r}", "request_id"),
            created_at=created_at,
        )


class MySQLBackend:
    """The six stores over one connection pool. Thread-safe."""

    # What the conformance suite holds it to (stovepipe.storage.Capability).
    capabilities = frozenset({"durable", "shared", "network"})

    def __init__(self, options: MySQLOptions) -> None:
        self.options = options
        self._database = _Database(options)
        self.requests = MySQLRequestStore(self._database)
        self.request_uris = MySQLRequestURIStore(self._database)
        self.counter = MySQLCounter(self._database)
        self.queues = MySQLQueueStore(self._database)
        self.builds = MySQLBuildStore(self._database)
        self.facts = MySQLFactStore(self._database)

    def close(self) -> None:
        """Close every pooled connection. Idempotent."""
        self._database.close()


def open_backend(url: str, *, workers: int | None = None) -> MySQLBackend:
    """Entry point for ``mysql://user:password@host:port/database?options``.

    Connects and checks that the schema's tables and columns exist before returning, so an
    unreachable server raises ``Unavailable`` here, and wrong credentials or a database without
    the schema, or without its latest migration, ``StorageError`` (whose message says to run
    ``stovepipe migrate URL``). With
    ``?migrate=true`` applies the schema first. ``workers`` sizes the connection pool unless
    the URL sets ``pool_size``.
    """
    options = parse_url(url, workers=workers)
    if options.migrate:
        from stovepipe_mysql.migrations import migrate_options  # imports this module

        migrate_options(options)
    backend = MySQLBackend(options)
    try:
        backend._database.check()
    except BaseException:
        backend.close()
        raise
    return backend
