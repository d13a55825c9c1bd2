"""``memory://``: the reference model of the contract. In-process, thread-safe, not durable.

Every URL opens a new, empty store. The conformance suite compares other backends against
this one, so it stays as plain as the rules it models.
"""

from __future__ import annotations

import dataclasses
import threading

from stovepipe.entity import Build, BuildStatus, BuildStrategy, Fact, Queue, Request, RequestState
from stovepipe.storage.errors import AlreadyExists, NotFound, VersionMismatch


def _members(request: Request) -> Request:
    """``request`` with its enumerated fields as members, as every durable backend reads them
    back (the caller may pass a plain ``str`` that names one)."""
    return dataclasses.replace(
        request,
        state=RequestState(request.state),
        build_strategy=BuildStrategy(request.build_strategy),
    )


class MemoryRequestStore:
    """Requests in a dict, one lock for every operation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[str, Request] = {}

    def create(self, request: Request) -> None:
        with self._lock:
            if request.id in self._requests:
                raise AlreadyExists(f"request {request.id!r} exists")
            self._requests[request.id] = _members(request)

    def get(self, request_id: str) -> Request:
        with self._lock:
            try:
                return self._requests[request_id]
            except KeyError:
                raise NotFound(f"request {request_id!r}") from None

    def update(self, request: Request, *, old_version: int, new_version: int) -> None:
        with self._lock:
            stored = self._requests.get(request.id)
            if stored is None or stored.version != old_version:
                raise VersionMismatch(f"request {request.id!r} is not at version {old_version}")
            self._requests[request.id] = _members(
                dataclasses.replace(
                    stored,
                    uri=request.uri,
                    state=request.state,
                    build_strategy=request.build_strategy,
                    base_uri=request.base_uri,
                    version=new_version,
                )
            )


class MemoryRequestURIStore:
    """``(queue, uri) -> id`` in a dict keyed by the tuple itself, so keys never collide."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: dict[tuple[str, str], str] = {}

    def create(self, queue: str, uri: str, request_id: str) -> None:
        with self._lock:
            if (queue, uri) in self._ids:
                raise AlreadyExists(f"uri {uri!r} of queue {queue!r} is mapped")
            self._ids[queue, uri] = request_id

    def get_id_by_uri(self, queue: str, uri: str) -> str:
        with self._lock:
            try:
                return self._ids[queue, uri]
            except KeyError:
                raise NotFound(f"uri {uri!r} of queue {queue!r}") from None


class MemoryCounter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, int] = {}

    def next(self, domain: str) -> int:
        with self._lock:
            value = self._values.get(domain, 0) + 1
            self._values[domain] = value
            return value


class MemoryQueueStore:
    """Queues in a dict, one lock for every operation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, Queue] = {}

    def create(self, queue: Queue) -> None:
        with self._lock:
            if queue.name in self._queues:
                raise AlreadyExists(f"queue {queue.name!r} exists")
            self._queues[queue.name] = queue

    def get(self, name: str) -> Queue:
        with self._lock:
            try:
                return self._queues[name]
            except KeyError:
                raise NotFound(f"queue {name!r}") from None

    def update(self, queue: Queue, *, old_version: int, new_version: int) -> None:
        with self._lock:
            stored = self._queues.get(queue.name)
            if stored is None or stored.version != old_version:
                raise VersionMismatch(f"queue {queue.name!r} is not at version {old_version}")
            self._queues[queue.name] = dataclasses.replace(queue, version=new_version)


class MemoryBuildStore:
    """Builds in a dict, one lock for every operation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._builds: dict[str, Build] = {}

    def create(self, build: Build) -> None:
        with self._lock:
            if build.id in self._builds:
                raise AlreadyExists(f"build {build.id!r} exists")
            self._builds[build.id] = dataclasses.replace(build, status=BuildStatus(build.status))

    def get(self, build_id: str) -> Build:
        with self._lock:
            try:
                return self._builds[build_id]
            except KeyError:
                raise NotFound(f"build {build_id!r}") from None

    def update(self, build: Build, *, old_version: int, new_version: int) -> None:
        with self._lock:
            stored = self._builds.get(build.id)
            if stored is None or stored.version != old_version:
                raise VersionMismatch(f"build {build.id!r} is not at version {old_version}")
            self._builds[build.id] = dataclasses.replace(
                stored, status=BuildStatus(build.status), log=build.log, version=new_version
            )


class MemoryFactStore:
    """Facts in a dict keyed by the ``(queue, uri, project)`` tuple itself."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._facts: dict[tuple[str, str, str], Fact] = {}

    def create(self, fact: Fact) -> None:
        key = (fact.queue, fact.uri, fact.project)
        with self._lock:
            if key in self._facts:
                raise AlreadyExists(f"fact {key!r} exists")
            self._facts[key] = fact

    def get(self, queue: str, uri: str, project: str) -> Fact:
        with self._lock:
            try:
                return self._facts[queue, uri, project]
            except KeyError:
                raise NotFound(f"fact {(queue, uri, project)!r}") from None


class MemoryBackend:
    """The six in-memory stores. ``close`` keeps the data: nothing to release."""

    # Each instance is a store of its own, gone with it.
    capabilities: frozenset[str] = frozenset()

    def __init__(self) -> None:
        self.requests = MemoryRequestStore()
        self.request_uris = MemoryRequestURIStore()
        self.counter = MemoryCounter()
        self.queues = MemoryQueueStore()
        self.builds = MemoryBuildStore()
        self.facts = MemoryFactStore()

    def close(self) -> None:
        pass


def open_backend(url: str) -> MemoryBackend:
    """Entry point for ``memory://``: a new, empty store."""
    return MemoryBackend()
