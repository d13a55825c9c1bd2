"""Deliberately broken backends, each wrong in one way, to show the suite catches them.

They register the way any outside backend does (an entry point in ``stovepipe.storage``);
``test_suite_catches_broken_backends.py`` installs them only for the runs it starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading

from stovepipe.entity import Build, Fact, Queue, Request
from stovepipe.storage.contract import RequestStore
from stovepipe.storage.errors import AlreadyExists, NotFound, VersionMismatch
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
