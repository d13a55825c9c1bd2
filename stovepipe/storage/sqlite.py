"""``sqlite:///path``: the embedded default, durable, on the standard library's sqlite3.

URLs follow the usual convention: ``sqlite:///relative/file.db`` or
``sqlite:////absolute/file.db``. Query options: ``timeout`` (seconds a statement waits for
another writer's lock before ``Unavailable``; default 5) and ``synchronous`` (``full``, the
default, makes every acknowledged write survive power loss; ``normal`` only a crash of the
process).

Each thread gets its own connection in autocommit mode and every operation is one statement,
so the file can be shared by a server's thread pool and by several processes (WAL journal).
"""

from __future__ import annotations

import contextlib
import pathlib
import queue
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterator

from stovepipe.entity import Request, RequestState
from stovepipe.storage.errors import (
    AlreadyExists,
    NotFound,
    StorageError,
    Unavailable,
    VersionMismatch,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS request (
    id      TEXT PRIMARY KEY,
    queue   TEXT NOT NULL,
    uri     TEXT NOT NULL,
    state   TEXT NOT NULL,
    version INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS request_uri (
    queue      TEXT NOT NULL,
    uri        TEXT NOT NULL,
    request_id TEXT NOT NULL,
    PRIMARY KEY (queue, uri)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counter (
    domain TEXT PRIMARY KEY,
    value  INTEGER NOT NULL
) WITHOUT ROWID;
"""


# Another connection holds the lock past the busy timeout: waiting longer may succeed.
_TRANSIENT = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


def _transient(error: sqlite3.Error) -> bool:
    return getattr(error, "sqlite_errorcode", 0) & 0xFF in _TRANSIENT


def _mapped(error: sqlite3.Error) -> StorageError:
    """Translate a sqlite3 error: a lock wait is transient; a missing table, an unwritable
    or full disk, a file that cannot be opened are not, and retrying would not help."""
    if _transient(error):
        return Unavailable(f"sqlite: {error}")
    return StorageError(f"sqlite: {error}")


def use_wal(connection: sqlite3.Connection, timeout: float) -> None:
    """Put the file in WAL mode, which lets readers run beside the one writer.

    Switching a new file to WAL while another process opens it fails at once with "database
    is locked", without waiting on the busy timeout, so the switch is retried until
    ``timeout`` seconds have passed.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            (mode,) = connection.execute("PRAGMA journal_mode = WAL").fetchone()
        except sqlite3.OperationalError as error:
            if not _transient(error) or time.monotonic() >= deadline:
                raise
        else:
            if mode.lower() == "wal":
                return
            if time.monotonic() >= deadline:
                raise Unavailable(f"sqlite: the file stays in journal mode {mode!r}, not WAL")
        time.sleep(0.01)


def create_tables(connection: sqlite3.Connection, schema: str) -> None:
    """Run ``schema``, a script of ``CREATE ... IF NOT EXISTS`` statements.

    Tried plainly first: where the tables exist it only reads, so it passes beside another
    process's long write. A process that lost the race to create them fails at once on its
    stale read, without waiting on the busy timeout; it then takes the write lock first
    (BEGIN IMMEDIATE, which does wait) and runs the script again.
    """
    try:
        connection.executescript(schema)
    except sqlite3.OperationalError as error:
        if not _transient(error):
            raise
        connection.executescript(f"BEGIN IMMEDIATE;\n{schema}\nCOMMIT;")


class _Connections:
    """A pool of connections: each operation borrows one, so threads may come and go."""

    def __init__(self, path: str, timeout: float, synchronous: str) -> None:
        self._path = path
        self._timeout = timeout
        self._synchronous = synchronous
        self._idle: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._all: list[sqlite3.Connection] = []
        self._closed = False

    @contextlib.contextmanager
    def borrow(self) -> Iterator[sqlite3.Connection]:
        """Lend an idle connection (or a new one) for one statement; map sqlite3 errors."""
        try:
            connection = self._idle.get_nowait()
        except queue.Empty:
            connection = self._connect()
        try:
            yield connection
        except sqlite3.Error as error:
            raise _mapped(error) from None
        finally:
            self._idle.put(connection)

    def _connect(self) -> sqlite3.Connection:
        with self._lock:
            if self._closed:
                raise StorageError("sqlite storage is closed")
            try:
                connection = sqlite3.connect(
                    self._path,
                    timeout=self._timeout,
                    isolation_level=None,  # autocommit: each statement is its own transaction
                    check_same_thread=False,  # pooled: used by one thread at a time
                )
                connection.execute(f"PRAGMA synchronous = {self._synchronous}")
            except sqlite3.Error as error:
                raise _mapped(error) from None
            self._all.append(connection)
            return connection

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for connection in self._all:
                connection.close()
            self._all.clear()


class SQLiteRequestStore:
    def __init__(self, connections: _Connections) -> None:
        self._connections = connections

    def create(self, request: Request) -> None:
        with self._connections.borrow() as connection:
            try:
                connection.execute(
                    "INSERT INTO request (id, queue, uri, state, version) VALUES (?, ?, ?, ?, ?)",
                    (request.id, request.queue, request.uri, str(request.state), request.version),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"request {request.id!r} exists") from None

    def get(self, request_id: str) -> Request:
        with self._connections.borrow() as connection:
            row = connection.execute(
                "SELECT queue, uri, state, version FROM request WHERE id = ?", (request_id,)
            ).fetchone()
        if row is None:
            raise NotFound(f"request {request_id!r}")
        queue, uri, state, version = row
        try:
            known_state = RequestState(state)
        except ValueError:
            # e.g. written by a newer version during a rolling upgrade
            raise StorageError(f"request {request_id!r} holds an unknown state {state!r}") from None
        return Request(request_id, queue, uri, known_state, version)

    def update(self, request: Request, *, old_version: int, new_version: int) -> None:
        with self._connections.borrow() as connection:
            cursor = connection.execute(
                "UPDATE request SET uri = ?, state = ?, version = ? WHERE id = ? AND version = ?",
                (request.uri, str(request.state), new_version, request.id, old_version),
            )
        # SQLite counts every row the WHERE matched, changed or not.
        if cursor.rowcount != 1:
            raise VersionMismatch(f"request {request.id!r} is not at version {old_version}")


class SQLiteRequestURIStore:
    def __init__(self, connections: _Connections) -> None:
        self._connections = connections

    def create(self, queue: str, uri: str, request_id: str) -> None:
        with self._connections.borrow() as connection:
            try:
                connection.execute(
                    "INSERT INTO request_uri (queue, uri, request_id) VALUES (?, ?, ?)",
                    (queue, uri, request_id),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"uri {uri!r} of queue {queue!r} is mapped") from None

    def get_id_by_uri(self, queue: str, uri: str) -> str:
        with self._connections.borrow() as connection:
            row = connection.execute(
                "SELECT request_id FROM request_uri WHERE queue = ? AND uri = ?", (queue, uri)
            ).fetchone()
        if row is None:
            raise NotFound(f"uri {uri!r} of queue {queue!r}")
        request_id: str = row[0]
        return request_id


class SQLiteCounter:
    def __init__(self, connections: _Connections) -> None:
        self._connections = connections

    def next(self, domain: str) -> int:
        with self._connections.borrow() as connection:
            # fetchall, not fetchone: the statement (and its write lock) ends when drained.
            [(value,)] = connection.execute(
                "INSERT INTO counter (domain, value) VALUES (?, 1)"
                " ON CONFLICT (domain) DO UPDATE SET value = value + 1 RETURNING value",
                (domain,),
            ).fetchall()
        number: int = value
        return number


class SQLiteBackend:
    """The three stores over one SQLite file."""

    def __init__(self, path: str, *, timeout: float = 5.0, synchronous: str = "full") -> None:
        if synchronous not in ("full", "normal"):
            raise ValueError(f"sqlite synchronous must be full or normal, not {synchronous!r}")
        if path != ":memory:":
            pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._connections = _Connections(path, timeout, synchronous)
        self._timeout = timeout
        self._create_schema()
        self.requests = SQLiteRequestStore(self._connections)
        self.request_uris = SQLiteRequestURIStore(self._connections)
        self.counter = SQLiteCounter(self._connections)

    def _create_schema(self) -> None:
        with self._connections.borrow() as connection:
            use_wal(connection, self._timeout)
            create_tables(connection, _SCHEMA)

    def close(self) -> None:
        self._connections.close()


def open_backend(url: str) -> SQLiteBackend:
    """Entry point for ``sqlite:///path``."""
    parts = urllib.parse.urlsplit(url)
    if parts.netloc:
        raise ValueError(
            f"sqlite URLs name a file, not a host: sqlite:///{parts.netloc}{parts.path}"
        )
    path = parts.path[1:]  # sqlite:///a.db -> "a.db"; sqlite:////tmp/a.db -> "/tmp/a.db"
    if not path:
        raise ValueError("sqlite URL needs a file path: sqlite:///path/to/file.db")
    options = dict(urllib.parse.parse_qsl(parts.query, strict_parsing=bool(parts.query)))
    unknown = set(options) - {"timeout", "synchronous"}
    if unknown:
        raise ValueError(f"unknown sqlite URL options: {', '.join(sorted(unknown))}")
    return SQLiteBackend(
        urllib.parse.unquote(path),
        timeout=float(options.get("timeout", 5.0)),
        synchronous=options.get("synchronous", "full"),
    )
