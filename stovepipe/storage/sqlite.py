"""``sqlite:///path``: the embedded default, durable, on the standard library's sqlite3.

URLs follow the usual convention: ``sqlite:///relative/file.db`` or
``sqlite:////absolute/file.db`` (``sqlite:/file.db``, without the ``//``, is refused: it would
read as absolute but name a relative path). Query options: ``timeout`` (seconds a statement
waits for another writer's lock before ``Unavailable``; default 5) and ``synchronous``
(``full``, the default, makes every acknowledged write survive power loss; ``normal`` only a
crash of the process).

Each thread gets its own connection in autocommit mode and every operation is one statement,
so the file can be shared by a server's thread pool and by several processes (WAL journal).

SQLite lets one writer at a time into a file, and a writer that finds the lock taken sleeps in
its busy handler, in steps of up to 100 ms, however soon the lock is free again. So the
writers of one process queue on one in-process lock per file (:func:`writer_lock`, keyed by
the file's real path, shared with the SQLite messaging queue in the same file) and reach the
file one after another, in the order they came, each woken as soon as the writer before it
is done; only writers in other processes still meet in the busy handler. Readers take no lock
(WAL).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import pathlib
import queue
import sqlite3
import threading
import urllib.parse
import weakref
from collections.abc import Iterator

import tenacity

from stovepipe.entity import (
    Build,
    BuildStatus,
    BuildStrategy,
    Fact,
    Queue,
    Request,
    RequestState,
)
from stovepipe.redaction import redact
from stovepipe.storage import limits
from stovepipe.storage.errors import (
    AlreadyExists,
    NotFound,
    StorageError,
    Unavailable,
    VersionMismatch,
)
from stovepipe.urloptions import URLOptions

_SCHEMA = """
CREATE TABLE IF NOT EXISTS request (
    id      TEXT PRIMARY KEY,
    queue   TEXT NOT NULL,
    uri     TEXT NOT NULL,
    state   TEXT NOT NULL,
    version INTEGER NOT NULL,
    build_strategy TEXT NOT NULL DEFAULT '',
    base_uri       TEXT NOT NULL DEFAULT ''
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
CREATE TABLE IF NOT EXISTS queue (
    name                  TEXT PRIMARY KEY,
    latest_request_id     TEXT NOT NULL,
    last_green_uri        TEXT NOT NULL,
    last_green_request_id TEXT NOT NULL,
    in_flight             INTEGER NOT NULL,
    version               INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS build (
    id         TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    status     TEXT NOT NULL,
    log        TEXT NOT NULL,
    version    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fact (
    queue      TEXT NOT NULL,
    uri        TEXT NOT NULL,
    project    TEXT NOT NULL,
    degree     REAL NOT NULL,
    request_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (queue, uri, project)
) WITHOUT ROWID;
"""

# Files made before the pipeline's columns existed gain them in place; SQLite has no
# ADD COLUMN IF NOT EXISTS, so each is added only when the table lacks it.
_REQUEST_COLUMNS_ADDED = {
    "build_strategy": "ALTER TABLE request ADD COLUMN build_strategy TEXT NOT NULL DEFAULT ''",
    "base_uri": "ALTER TABLE request ADD COLUMN base_uri TEXT NOT NULL DEFAULT ''",
}


# Another connection holds the lock past the busy timeout: waiting longer may succeed.
_TRANSIENT = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


def is_transient(error: sqlite3.Error) -> bool:
    """Whether a ``sqlite3`` error may pass on its own: a lock held by another connection past
    the busy timeout. A missing table, an unwritable or full disk, a file that cannot be
    opened are not, and retrying would not help. The one classification of SQLite's errors,
    for the storage here and the SQLite messaging queue."""
    return getattr(error, "sqlite_errorcode", 0) & 0xFF in _TRANSIENT


def _mapped(error: sqlite3.Error) -> StorageError:
    """Translate a sqlite3 error (:func:`is_transient` says which are ``Unavailable``); the
    caller raises it ``from error``, so logs keep the driver's error."""
    if is_transient(error):
        return Unavailable(f"sqlite: {error}")
    return StorageError(f"sqlite: {error}")


def use_wal(connection: sqlite3.Connection, timeout: float) -> None:
    """Put the file in WAL mode, which lets readers run beside the one writer.

    Switching a new file to WAL while another process opens it fails at once with "database
    is locked", without waiting on the busy timeout, so the switch is retried until
    ``timeout`` seconds have passed.
    """
    for attempt in tenacity.Retrying(
        retry=tenacity.retry_if_exception(_wal_not_yet),
        stop=tenacity.stop_after_delay(timeout),
        wait=tenacity.wait_fixed(0.01),
        reraise=True,
    ):
        with attempt:
            (mode,) = connection.execute("PRAGMA journal_mode = WAL").fetchone()
            if mode.lower() != "wal":
                raise Unavailable(f"sqlite: the file stays in journal mode {mode!r}, not WAL")


def _wal_not_yet(error: BaseException) -> bool:
    """Whether switching to WAL may succeed on another try: the file was locked, or it is
    still in another journal mode."""
    if isinstance(error, sqlite3.OperationalError):
        return is_transient(error)
    return isinstance(error, Unavailable)


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
        if not is_transient(error):
            raise
        connection.executescript(f"BEGIN IMMEDIATE;\n{schema}\nCOMMIT;")


def _missing_request_columns(connection: sqlite3.Connection) -> list[str]:
    present = {row[1] for row in connection.execute("PRAGMA table_info(request)")}
    return [column for column in _REQUEST_COLUMNS_ADDED if column not in present]


class WriterLock:
    """Serializes this process's writers of one SQLite file (see the module's notes), first
    come first served: a writer that releases the lock hands it to the writer that has waited
    longest, so one that writes again at once queues behind the others instead of taking the
    lock back before they wake. A plain lock lets a busy writer (a delivery running its
    stage's writes one after another) keep it while another waits tens of milliseconds.

    Re-entrant: a writer that nests another write on the same file in the same thread then
    waits on SQLite's own lock, bounded by its timeout, instead of forever here.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._owner: int | None = None  # the thread holding the lock
        self._depth = 0  # how many times the owner holds it
        # Writers waiting, oldest first: each sleeps on a lock of its own, released to wake it.
        self._waiting: collections.deque[tuple[int, threading.Lock]] = collections.deque()

    @property
    def waiting(self) -> int:
        """Writers waiting for the lock now."""
        return len(self._waiting)

    @contextlib.contextmanager
    def held(self, timeout: float) -> Iterator[None]:
        """Hold the lock for one write transaction, after the writers already waiting;
        ``Unavailable`` (transient) if other writers of this process held it for ``timeout``
        seconds."""
        self._acquire(timeout)
        try:
            yield
        finally:
            self._release()

    def _acquire(self, timeout: float) -> None:
        me = threading.get_ident()
        with self._mutex:
            if self._owner == me:
                self._depth += 1
                return
            if self._owner is None and not self._waiting:
                self._owner, self._depth = me, 1
                return
            wakeup = threading.Lock()
            wakeup.acquire()
            entry = (me, wakeup)
            self._waiting.append(entry)
        try:
            granted = wakeup.acquire(timeout=timeout)
        except BaseException:  # interrupted: leave the queue, or pass on what was handed over
            with self._mutex:
                handed_over = self._owner == me
                if not handed_over:
                    self._waiting.remove(entry)
            if handed_over:
                self._release()
            raise
        if granted:
            return  # handed over: _release made this thread the owner
        with self._mutex:
            if self._owner == me:
                return  # handed over just as the wait timed out
            self._waiting.remove(entry)
        raise Unavailable(
            f"sqlite: waited {timeout:g} s for the write lock behind other writers of this process"
        )

    def _release(self) -> None:
        with self._mutex:
            self._depth -= 1
            if self._depth:
                return
            if not self._waiting:
                self._owner = None
                return
            self._owner, wakeup = self._waiting.popleft()
            self._depth = 1
            wakeup.release()


_writer_locks: weakref.WeakValueDictionary[str, WriterLock] = weakref.WeakValueDictionary()
_writer_locks_guard = threading.Lock()


def writer_lock(path: str) -> WriterLock:
    """The writer lock of the SQLite file at ``path`` in this process: the same object for
    every path naming the same file (by real path) while anyone holds it; a private one for
    ``:memory:``, which is a new database on each connection."""
    if path == ":memory:" or path.startswith("file:"):
        return WriterLock()
    key = os.path.realpath(path)
    with _writer_locks_guard:
        lock = _writer_locks.get(key)
        if lock is None:
            lock = _writer_locks[key] = WriterLock()
        return lock


class _Connections:
    """A pool of connections: each operation borrows one, so threads may come and go."""

    def __init__(self, path: str, timeout: float, synchronous: str) -> None:
        self._path = path
        self._timeout = timeout
        self._synchronous = synchronous
        self._idle: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._writer = writer_lock(path)
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
            raise _mapped(error) from error
        finally:
            self._idle.put(connection)

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """:meth:`borrow`, holding the file's writer lock: for a statement that writes."""
        with self._writer.held(self._timeout), self.borrow() as connection:
            yield connection

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
                raise _mapped(error) from error
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
        with self._connections.write() as connection:
            try:
                connection.execute(
                    "INSERT INTO request (id, queue, uri, state, version, build_strategy, base_uri)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        request.id,
                        request.queue,
                        request.uri,
                        str(request.state),
                        request.version,
                        str(request.build_strategy),
                        request.base_uri,
                    ),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"request {request.id!r} exists") from None

    def get(self, request_id: str) -> Request:
        with self._connections.borrow() as connection:
            row = connection.execute(
                "SELECT queue, uri, state, version, build_strategy, base_uri"
                " FROM request WHERE id = ?",
                (request_id,),
            ).fetchone()
        if row is None:
            raise NotFound(f"request {request_id!r}")
        queue, uri, state, version, build_strategy, base_uri = row
        return Request(
            request_id,
            queue,
            uri,
            limits.read_member(RequestState, state, "state", f"request {request_id!r}"),
            version,
            limits.read_member(
                BuildStrategy, build_strategy, "build_strategy", f"request {request_id!r}"
            ),
            base_uri,
        )

    def update(self, request: Request, *, old_version: int, new_version: int) -> None:
        with self._connections.write() as connection:
            cursor = connection.execute(
                "UPDATE request SET uri = ?, state = ?, build_strategy = ?, base_uri = ?,"
                " version = ? WHERE id = ? AND version = ?",
                (
                    request.uri,
                    str(request.state),
                    str(request.build_strategy),
                    request.base_uri,
                    new_version,
                    request.id,
                    old_version,
                ),
            )
        # SQLite counts every row the WHERE matched, changed or not.
        if cursor.rowcount != 1:
            raise VersionMismatch(f"request {request.id!r} is not at version {old_version}")


class SQLiteRequestURIStore:
    def __init__(self, connections: _Connections) -> None:
        self._connections = connections

    def create(self, queue: str, uri: str, request_id: str) -> None:
        with self._connections.write() as connection:
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
        with self._connections.write() as connection:
            # fetchall, not fetchone: the statement (and its write lock) ends when drained.
            [(value,)] = connection.execute(
                "INSERT INTO counter (domain, value) VALUES (?, 1)"
                " ON CONFLICT (domain) DO UPDATE SET value = value + 1 RETURNING value",
                (domain,),
            ).fetchall()
        number: int = value
        return number


class SQLiteQueueStore:
    def __init__(self, connections: _Connections) -> None:
        self._connections = connections

    def create(self, queue: Queue) -> None:
        with self._connections.write() as connection:
            try:
                connection.execute(
                    "INSERT INTO queue (name, latest_request_id, last_green_uri,"
                    " last_green_request_id, in_flight, version) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        queue.name,
                        queue.latest_request_id,
                        queue.last_green_uri,
                        queue.last_green_request_id,
                        queue.in_flight,
                        queue.version,
                    ),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"queue {queue.name!r} exists") from None

    def get(self, name: str) -> Queue:
        with self._connections.borrow() as connection:
            row = connection.execute(
                "SELECT latest_request_id, last_green_uri, last_green_request_id, in_flight,"
                " version FROM queue WHERE name = ?",
                (name,),
            ).fetchone()
        if row is None:
            raise NotFound(f"queue {name!r}")
        return Queue(name, *row)

    def update(self, queue: Queue, *, old_version: int, new_version: int) -> None:
        with self._connections.write() as connection:
            cursor = connection.execute(
                "UPDATE queue SET latest_request_id = ?, last_green_uri = ?,"
                " last_green_request_id = ?, in_flight = ?, version = ?"
                " WHERE name = ? AND version = ?",
                (
                    queue.latest_request_id,
                    queue.last_green_uri,
                    queue.last_green_request_id,
                    queue.in_flight,
                    new_version,
                    queue.name,
                    old_version,
                ),
            )
        if cursor.rowcount != 1:
            raise VersionMismatch(f"queue {queue.name!r} is not at version {old_version}")


class SQLiteBuildStore:
    def __init__(self, connections: _Connections) -> None:
        self._connections = connections

    def create(self, build: Build) -> None:
        with self._connections.write() as connection:
            try:
                connection.execute(
                    "INSERT INTO build (id, request_id, status, log, version)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (build.id, build.request_id, str(build.status), build.log, build.version),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"build {build.id!r} exists") from None

    def get(self, build_id: str) -> Build:
        with self._connections.borrow() as connection:
            row = connection.execute(
                "SELECT request_id, status, log, version FROM build WHERE id = ?", (build_id,)
            ).fetchone()
        if row is None:
            raise NotFound(f"build {build_id!r}")
        request_id, status, log, version = row
        return Build(
            build_id,
            request_id,
            limits.read_member(BuildStatus, status, "status", f"build {build_id!r}"),
            log,
            version,
        )

    def update(self, build: Build, *, old_version: int, new_version: int) -> None:
        with self._connections.write() as connection:
            cursor = connection.execute(
                "UPDATE build SET status = ?, log = ?, version = ? WHERE id = ? AND version = ?",
                (str(build.status), build.log, new_version, build.id, old_version),
            )
        if cursor.rowcount != 1:
            raise VersionMismatch(f"build {build.id!r} is not at version {old_version}")


class SQLiteFactStore:
    def __init__(self, connections: _Connections) -> None:
        self._connections = connections

    def create(self, fact: Fact) -> None:
        with self._connections.write() as connection:
            try:
                connection.execute(
                    "INSERT INTO fact (queue, uri, project, degree, request_id, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        fact.queue,
                        fact.uri,
                        fact.project,
                        float(fact.degree),
                        fact.request_id,
                        float(fact.created_at),
                    ),
                )
            except sqlite3.IntegrityError:
                key = (fact.queue, fact.uri, fact.project)
                raise AlreadyExists(f"fact {key!r} exists") from None

    def get(self, queue: str, uri: str, project: str) -> Fact:
        with self._connections.borrow() as connection:
            row = connection.execute(
                "SELECT degree, request_id, created_at FROM fact"
                " WHERE queue = ? AND uri = ? AND project = ?",
                (queue, uri, project),
            ).fetchone()
        if row is None:
            raise NotFound(f"fact {(queue, uri, project)!r}")
        degree, request_id, created_at = row
        return Fact(queue, uri, project, degree, request_id, created_at)


class SQLiteBackend:
    """The six stores over one SQLite file."""

    # One file, shared by every process that opens it; no server.
    capabilities = frozenset({"durable", "shared"})

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
        self.queues = SQLiteQueueStore(self._connections)
        self.builds = SQLiteBuildStore(self._connections)
        self.facts = SQLiteFactStore(self._connections)

    def _create_schema(self) -> None:
        with self._connections.borrow() as connection:
            use_wal(connection, self._timeout)
            create_tables(connection, _SCHEMA)
            self._add_missing_columns(connection)

    @staticmethod
    def _add_missing_columns(connection: sqlite3.Connection) -> None:
        """Upgrade a file made before the request's pipeline columns, under the write lock
        (BEGIN IMMEDIATE waits for it), so processes opening it together add each once."""
        if _missing_request_columns(connection):
            connection.execute("BEGIN IMMEDIATE")
            try:
                for column in _missing_request_columns(connection):
                    connection.execute(_REQUEST_COLUMNS_ADDED[column])
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    def close(self) -> None:
        self._connections.close()


DEFAULT_TIMEOUT = 5.0
SYNCHRONOUS_MODES = ("full", "normal")


@dataclasses.dataclass(frozen=True)
class SQLiteOptions:
    """A parsed ``sqlite:`` URL: the file's ``path`` (relative to the current directory
    unless absolute), ``timeout`` in seconds and the ``synchronous`` mode."""

    path: str
    timeout: float = DEFAULT_TIMEOUT
    synchronous: str = "full"


def parse_url(url: str) -> SQLiteOptions:
    """Parse ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``.

    The ``//`` of an empty authority is required: ``sqlite:/tmp/x.db`` would otherwise name
    ``./tmp/x.db``, which is not what it seems to say. Options follow
    :mod:`stovepipe.urloptions`. Raises ``ValueError`` with one line for a malformed URL.
    """
    if not url.startswith("sqlite://"):
        raise ValueError(
            f"sqlite URL {redact(url)}: write sqlite:///relative/path.db, or "
            "sqlite:////absolute/path.db for an absolute path (note the //)"
        )
    parts = urllib.parse.urlsplit(url)
    if parts.netloc:
        raise ValueError(
            f"sqlite URL {redact(url)}: sqlite URLs name a file, not a host: "
            "sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    path = urllib.parse.unquote(parts.path[1:])  # "/a.db" -> "a.db"; "//tmp/a.db" -> "/tmp/a.db"
    if not path:
        raise ValueError(f"sqlite URL {redact(url)} needs a file path: sqlite:///path/to/file.db")
    options = URLOptions(url, "sqlite", {"timeout", "synchronous"})
    return SQLiteOptions(
        path=path,
        timeout=options.seconds("timeout", DEFAULT_TIMEOUT),
        synchronous=options.choice("synchronous", "full", SYNCHRONOUS_MODES),
    )


def open_backend(url: str) -> SQLiteBackend:
    """Entry point for ``sqlite:///path`` (see :func:`parse_url`)."""
    options = parse_url(url)
    return SQLiteBackend(options.path, timeout=options.timeout, synchronous=options.synchronous)
