"""Deliberately broken backends, each wrong in one way, to show the suite catches them.

They register the way any outside backend does (an entry point in ``stovepipe.storage``);
``test_suite_catches_broken_backends.py`` installs them only for the runs it starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import threading
import urllib.parse
from collections.abc import Iterator

from stovepipe.entity import Build, Fact, Queue, Request
from stovepipe.storage.contract import RequestStore
from stovepipe.storage.errors import AlreadyExists, NotFound, Unavailable, VersionMismatch
from stovepipe.storage.memory import (
    MemoryBackend,
    MemoryBuildStore,
    MemoryCounter,
    MemoryFactStore,
    MemoryQueueStore,
    MemoryRequestStore,
    MemoryRequestURIStore,
)
from stovepipe.storage.sqlite import SQLiteBackend
from stovepipe.storage.sqlite import open_backend as open_sqlite


class _UpdateIgnoresVersion(MemoryRequestStore):
    def update(self, request: Request, *, old_version: int, new_version: int) -> None:
        with self._lock:
            stored = self._requests.get(request.id)
            if stored is None:
                raise VersionMismatch(request.id)
            self._requests[request.id] = dataclasses.replace(
                stored,
                uri=request.uri,
                state=request.state,
                build_strategy=request.build_strategy,
                base_uri=request.base_uri,
                version=new_version,
            )


class _UpdateChecksWithoutLock(MemoryRequestStore):
    """Compares the version, then writes, with nothing held between: a lost update waiting
    for two racers to pass the comparison together."""

    def update(self, request: Request, *, old_version: int, new_version: int) -> None:
        stored = self._requests.get(request.id)
        if stored is None or stored.version != old_version:
            raise VersionMismatch(request.id)
        self._requests[request.id] = dataclasses.replace(request, version=new_version)


class _QueueUpdateIgnoresVersion(MemoryQueueStore):
    def update(self, queue: Queue, *, old_version: int, new_version: int) -> None:
        with self._lock:
            if queue.name not in self._queues:
                raise VersionMismatch(queue.name)
            self._queues[queue.name] = dataclasses.replace(queue, version=new_version)


class _BuildUpdateStoresEveryField(MemoryBuildStore):
    def update(self, build: Build, *, old_version: int, new_version: int) -> None:
        with self._lock:
            stored = self._builds.get(build.id)
            if stored is None or stored.version != old_version:
                raise VersionMismatch(build.id)
            self._builds[build.id] = dataclasses.replace(build, version=new_version)


class _CreateOverwrites(MemoryRequestStore):
    def create(self, request: Request) -> None:
        with self._lock:
            self._requests[request.id] = request


class _QueueCreateOverwrites(MemoryQueueStore):
    def create(self, queue: Queue) -> None:
        with self._lock:
            self._queues[queue.name] = queue


class _BuildCreateOverwrites(MemoryBuildStore):
    def create(self, build: Build) -> None:
        with self._lock:
            self._builds[build.id] = build


class _FactCreateOverwrites(MemoryFactStore):
    def create(self, fact: Fact) -> None:
        with self._lock:
            self._facts[fact.queue, fact.uri, fact.project] = fact


class _FactKeyJoinedWithSlash(MemoryFactStore):
    """Lays the key out as ``queue/uri/project``, as a key/value store's path might."""

    def __init__(self) -> None:
        super().__init__()
        self._joined: dict[str, Fact] = {}

    def create(self, fact: Fact) -> None:
        key = "/".join((fact.queue, fact.uri, fact.project))
        with self._lock:
            if key in self._joined:
                raise AlreadyExists(key)
            self._joined[key] = fact

    def get(self, queue: str, uri: str, project: str) -> Fact:
        with self._lock:
            try:
                fact = self._joined["/".join((queue, uri, project))]
            except KeyError:
                raise NotFound(queue) from None
        return dataclasses.replace(fact, queue=queue, uri=uri, project=project)


class _FactFloatsAsShortText(MemoryFactStore):
    """Keeps ``degree`` and ``created_at`` as text of 15 significant digits, not the 17 a
    float can need."""

    def create(self, fact: Fact) -> None:
        super().create(
            dataclasses.replace(
                fact,
                degree=float(f"{fact.degree:.15g}"),
                created_at=float(f"{fact.created_at:.15g}"),
            )
        )


class _LowercaseRequestStore(MemoryRequestStore):
    def create(self, request: Request) -> None:
        super().create(dataclasses.replace(request, id=request.id.lower()))

    def get(self, request_id: str) -> Request:
        return dataclasses.replace(super().get(request_id.lower()), id=request_id)


class _LowercaseRequestURIStore(MemoryRequestURIStore):
    def create(self, queue: str, uri: str, request_id: str) -> None:
        super().create(queue.lower(), uri.lower(), request_id)

    def get_id_by_uri(self, queue: str, uri: str) -> str:
        return super().get_id_by_uri(queue.lower(), uri.lower())


class _LowercaseCounter(MemoryCounter):
    def next(self, domain: str) -> int:
        return super().next(domain.lower())


class _LowercaseQueueStore(MemoryQueueStore):
    def create(self, queue: Queue) -> None:
        super().create(dataclasses.replace(queue, name=queue.name.lower()))

    def get(self, name: str) -> Queue:
        return dataclasses.replace(super().get(name.lower()), name=name)

    def update(self, queue: Queue, *, old_version: int, new_version: int) -> None:
        lowered = dataclasses.replace(queue, name=queue.name.lower())
        super().update(lowered, old_version=old_version, new_version=new_version)


class _LowercaseBuildStore(MemoryBuildStore):
    def create(self, build: Build) -> None:
        super().create(dataclasses.replace(build, id=build.id.lower()))

    def get(self, build_id: str) -> Build:
        return dataclasses.replace(super().get(build_id.lower()), id=build_id)

    def update(self, build: Build, *, old_version: int, new_version: int) -> None:
        lowered = dataclasses.replace(build, id=build.id.lower())
        super().update(lowered, old_version=old_version, new_version=new_version)


class _LowercaseFactStore(MemoryFactStore):
    def create(self, fact: Fact) -> None:
        super().create(
            dataclasses.replace(
                fact, queue=fact.queue.lower(), uri=fact.uri.lower(), project=fact.project.lower()
            )
        )

    def get(self, queue: str, uri: str, project: str) -> Fact:
        fact = super().get(queue.lower(), uri.lower(), project.lower())
        return dataclasses.replace(fact, queue=queue, uri=uri, project=project)


def open_update_ignores_version(url: str) -> MemoryBackend:
    backend = MemoryBackend()
    backend.requests = _UpdateIgnoresVersion()
    return backend


def open_update_checks_without_lock(url: str) -> MemoryBackend:
    backend = MemoryBackend()
    backend.requests = _UpdateChecksWithoutLock()
    return backend


def open_create_overwrites(url: str) -> MemoryBackend:
    backend = MemoryBackend()
    backend.requests = _CreateOverwrites()
    backend.queues = _QueueCreateOverwrites()
    backend.builds = _BuildCreateOverwrites()
    backend.facts = _FactCreateOverwrites()
    return backend


def open_lowercases_keys(url: str) -> MemoryBackend:
    backend = MemoryBackend()
    backend.requests = _LowercaseRequestStore()
    backend.request_uris = _LowercaseRequestURIStore()
    backend.counter = _LowercaseCounter()
    backend.queues = _LowercaseQueueStore()
    backend.builds = _LowercaseBuildStore()
    backend.facts = _LowercaseFactStore()
    return backend


def open_queue_update_ignores_version(url: str) -> MemoryBackend:
    backend = MemoryBackend()
    backend.queues = _QueueUpdateIgnoresVersion()
    return backend


def open_build_update_stores_every_field(url: str) -> MemoryBackend:
    backend = MemoryBackend()
    backend.builds = _BuildUpdateStoresEveryField()
    return backend


def open_fact_key_joined_with_slash(url: str) -> MemoryBackend:
    backend = MemoryBackend()
    backend.facts = _FactKeyJoinedWithSlash()
    return backend


def open_fact_floats_as_short_text(url: str) -> MemoryBackend:
    backend = MemoryBackend()
    backend.facts = _FactFloatsAsShortText()
    return backend


class _UnlockedCounter(MemoryCounter):
    """Read, then write, with nothing between them held: racing callers draw the same number."""

    def next(self, domain: str) -> int:
        value = self._values.get(domain, 0) + 1
        self._values[domain] = value
        return value


class _RetriesForever(MemoryRequestStore):
    """A ``get`` that never gives up, as a backend retrying ``Unavailable`` without end."""

    def get(self, request_id: str) -> Request:
        threading.Event().wait()
        raise AssertionError("unreachable")


def open_unlocked_counter(url: str) -> MemoryBackend:
    backend = MemoryBackend()
    backend.counter = _UnlockedCounter()
    return backend


def open_retries_forever(url: str) -> MemoryBackend:
    backend = MemoryBackend()
    backend.requests = _RetriesForever()
    return backend


class _CreateIdenticalSucceeds(MemoryRequestStore):
    """A create of the very request already stored is taken for a retry and reported a success."""

    def create(self, request: Request) -> None:
        with self._lock:
            if self._requests.get(request.id) == request:
                return
        super().create(request)


class _ReclaimSucceeds(MemoryRequestURIStore):
    """A claim of a pair already mapped to the same id is reported a success."""

    def create(self, queue: str, uri: str, request_id: str) -> None:
        with contextlib.suppress(NotFound):
            if self.get_id_by_uri(queue, uri) == request_id:
                return
        super().create(queue, uri, request_id)


def open_create_identical_succeeds(url: str) -> MemoryBackend:
    backend = MemoryBackend()
    backend.requests = _CreateIdenticalSucceeds()
    backend.request_uris = _ReclaimSucceeds()
    return backend


class _CachedSQLiteRequests:
    """SQLite's request store with ``get`` served from what this instance wrote or read."""

    def __init__(self, inner: RequestStore) -> None:
        self._inner = inner
        self._cache: dict[str, Request] = {}

    def create(self, request: Request) -> None:
        self._inner.create(request)
        self._cache[request.id] = request

    def get(self, request_id: str) -> Request:
        if request_id not in self._cache:
            self._cache[request_id] = self._inner.get(request_id)
        return self._cache[request_id]

    def update(self, request: Request, *, old_version: int, new_version: int) -> None:
        self._inner.update(request, old_version=old_version, new_version=new_version)
        self._cache[request.id] = dataclasses.replace(request, version=new_version)


def open_cached_get(url: str) -> SQLiteBackend:
    """A SQLite backend (``cached-get:///path``) whose request reads come from a per-instance
    cache: each instance reads its own writes, never another's."""
    backend = open_sqlite(url.replace("cached-get:", "sqlite:", 1))
    backend.requests = _CachedSQLiteRequests(backend.requests)  # type: ignore[assignment]
    return backend


class _URIKeyJoined(MemoryRequestURIStore):
    """Keys ``(queue, uri)`` as one string: the queue, a separator, the uri. ``escaping`` is
    ``"none"`` (the separator is taken never to occur), ``"separator"`` (a backslash before
    each separator, the backslash itself left as it is) or ``"both"``; ``keep`` cuts the key
    to its first characters, as an index on a prefix does."""

    def __init__(self, separator: str, escaping: str, keep: int | None = None) -> None:
        super().__init__()
        self._separator = separator
        self._escaping = escaping
        self._keep = keep
        self._joined: dict[str, str] = {}

    def _key(self, queue: str, uri: str) -> str:
        def escaped(part: str) -> str:
            if self._escaping == "both":
                part = part.replace("\\", "\\\\")
            if self._escaping in ("both", "separator"):
                part = part.replace(self._separator, "\\" + self._separator)
            return part

        key = escaped(queue) + self._separator + escaped(uri)
        return key[: self._keep] if self._keep is not None else key

    def create(self, queue: str, uri: str, request_id: str) -> None:
        key = self._key(queue, uri)
        with self._lock:
            if key in self._joined:
                raise AlreadyExists(key)
            self._joined[key] = request_id

    def get_id_by_uri(self, queue: str, uri: str) -> str:
        with self._lock:
            try:
                return self._joined[self._key(queue, uri)]
            except KeyError:
                raise NotFound(uri) from None


def open_uri_key_joined_with_a_control_character(url: str) -> MemoryBackend:
    backend = MemoryBackend()
    backend.request_uris = _URIKeyJoined("\x1e", escaping="none")
    return backend


def open_uri_key_escape_forgets_the_escape(url: str) -> MemoryBackend:
    backend = MemoryBackend()
    backend.request_uris = _URIKeyJoined("/", escaping="separator")
    return backend


def open_uri_key_cut_to_a_prefix(url: str) -> MemoryBackend:
    backend = MemoryBackend()
    backend.request_uris = _URIKeyJoined("/", escaping="both", keep=255)
    return backend


class _Wire:
    """One TCP connection to a line echo server, on which every call makes a round trip, as a
    driver's statement does. ``bound_calls``: the URL's ``timeout`` (seconds, default 5)
    bounds each call as well as the connect and handshake. ``map_call_errors``: a socket
    error in a call is raised as ``Unavailable``, as it is on connect."""

    def __init__(self, url: str, *, bound_calls: bool, map_call_errors: bool) -> None:
        parts = urllib.parse.urlsplit(url)
        self._address = (parts.hostname or "127.0.0.1", parts.port or 0)
        timeout = float(dict(urllib.parse.parse_qsl(parts.query)).get("timeout", "5"))
        self._map_call_errors = map_call_errors
        self._lock = threading.Lock()
        try:
            self._socket = socket.create_connection(self._address, timeout=timeout)
            self._reader = self._socket.makefile("rb")
            self._exchange()  # the handshake, under the timeout as the connect is
        except OSError as error:
            raise Unavailable(f"wire {self._address}: {error}") from error
        self._socket.settimeout(timeout if bound_calls else None)

    def _exchange(self) -> None:
        self._socket.sendall(b"ping\n")
        if self._reader.readline() != b"ping\n":
            raise ConnectionResetError("the server closed the connection")

    def round_trip(self) -> None:
        with self._lock:
            try:
                self._exchange()
            except OSError as error:
                if not self._map_call_errors:
                    raise
                raise Unavailable(f"wire {self._address}: {error}") from error

    def close(self) -> None:
        # Shut the socket down rather than close the reader: a call blocked reading holds the
        # reader's lock, and the shutdown is what wakes it.
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)
        self._socket.close()


class _OverWire:
    """A store whose every method makes a round trip on the wire before the in-memory work."""

    def __init__(self, wire: _Wire, inner: object) -> None:
        self._wire = wire
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        method = getattr(self._inner, name)

        def call(*args: object, **kwargs: object) -> object:
            self._wire.round_trip()
            return method(*args, **kwargs)

        return call


class _WireBackend:
    """The memory stores behind a network round trip: declares ``network`` only."""

    capabilities = frozenset({"network"})

    def __init__(self, url: str, *, bound_calls: bool, map_call_errors: bool) -> None:
        self._wire = _Wire(url, bound_calls=bound_calls, map_call_errors=map_call_errors)
        memory = MemoryBackend()
        self.requests = _OverWire(self._wire, memory.requests)
        self.request_uris = _OverWire(self._wire, memory.request_uris)
        self.counter = _OverWire(self._wire, memory.counter)
        self.queues = _OverWire(self._wire, memory.queues)
        self.builds = _OverWire(self._wire, memory.builds)
        self.facts = _OverWire(self._wire, memory.facts)

    def close(self) -> None:
        self._wire.close()


def open_timeout_bounds_only_connect(url: str) -> _WireBackend:
    """``timeout-bounds-only-connect://127.0.0.1:PORT`` (a :func:`line_echo_server`): the
    timeout bounds connecting and the handshake, and no call after them."""
    return _WireBackend(url, bound_calls=False, map_call_errors=True)


def open_statement_errors_leak(url: str) -> _WireBackend:
    """``statement-errors-leak://127.0.0.1:PORT`` (a :func:`line_echo_server`): a socket
    error while connecting becomes ``Unavailable``; one in a call leaks as it is."""
    return _WireBackend(url, bound_calls=True, map_call_errors=False)


@contextlib.contextmanager
def line_echo_server() -> Iterator[int]:
    """A server on 127.0.0.1 that answers each line with the same line; yields its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()
    connections: list[socket.socket] = []

    def echo(connection: socket.socket) -> None:
        with contextlib.suppress(OSError), connection.makefile("rb") as lines:
            for line in lines:
                connection.sendall(line)

    def accept() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connection.settimeout(None)
            connections.append(connection)
            threading.Thread(target=echo, args=(connection,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.close()
