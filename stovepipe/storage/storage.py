"""The :class:`Storage` aggregate and :func:`open_storage`, which finds backends by URL scheme."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import inspect
import urllib.parse
from types import TracebackType
from typing import Any, Self, cast

from stovepipe.entity import Build, BuildStatus, BuildStrategy, Fact, Queue, Request, RequestState
from stovepipe.redaction import redact
from stovepipe.storage import limits
from stovepipe.storage.contract import (
    DEFAULT_CAPABILITIES,
    Backend,
    BackendOpener,
    BuildStore,
    Capability,
    Counter,
    FactStore,
    QueueStore,
    RequestStore,
    RequestURIStore,
)
from stovepipe.storage.errors import UnknownBackend

ENTRY_POINT_GROUP = "stovepipe.storage"


def _check_request(request: Request) -> None:
    limits.check_text("request id", request.id, limits.MAX_REQUEST_ID_BYTES)
    limits.check_text("queue", request.queue, limits.MAX_QUEUE_BYTES)
    limits.check_text("uri", request.uri, limits.MAX_URI_BYTES)
    limits.check_text("state", request.state, limits.MAX_STATE_BYTES)
    limits.check_member("state", request.state, RequestState)
    limits.check_text("build_strategy", request.build_strategy, limits.MAX_STATE_BYTES)
    limits.check_member("build_strategy", request.build_strategy, BuildStrategy)
    limits.check_text("base_uri", request.base_uri, limits.MAX_URI_BYTES)


class _CheckedRequestStore:
    """Enforces the documented limits, then delegates to the backend's store."""

    __slots__ = ("_store",)

    def __init__(self, store: RequestStore) -> None:
        self._store = store

    def create(self, request: Request) -> None:
        _check_request(request)
        limits.check_version("version", request.version)
        self._store.create(request)

    def get(self, request_id: str) -> Request:
        limits.check_text("request id", request_id, limits.MAX_REQUEST_ID_BYTES)
        return self._store.get(request_id)

    def update(self, request: Request, *, old_version: int, new_version: int) -> None:
        _check_request(request)
        limits.check_version("old_version", old_version)
        limits.check_version("new_version", new_version)
        self._store.update(request, old_version=old_version, new_version=new_version)


class _CheckedRequestURIStore:
    __slots__ = ("_store",)

    def __init__(self, store: RequestURIStore) -> None:
        self._store = store

    def create(self, queue: str, uri: str, request_id: str) -> None:
        limits.check_text("queue", queue, limits.MAX_QUEUE_BYTES)
        limits.check_text("uri", uri, limits.MAX_URI_BYTES)
        limits.check_text("request id", request_id, limits.MAX_REQUEST_ID_BYTES)
        self._store.create(queue, uri, request_id)

    def get_id_by_uri(self, queue: str, uri: str) -> str:
        limits.check_text("queue", queue, limits.MAX_QUEUE_BYTES)
        limits.check_text("uri", uri, limits.MAX_URI_BYTES)
        return self._store.get_id_by_uri(queue, uri)


class _CheckedCounter:
    __slots__ = ("_counter",)

    def __init__(self, counter: Counter) -> None:
        self._counter = counter

    def next(self, domain: str) -> int:
        limits.check_text("counter domain", domain, limits.MAX_COUNTER_DOMAIN_BYTES)
        return self._counter.next(domain)


def _check_queue(queue: Queue) -> None:
    limits.check_text("queue", queue.name, limits.MAX_QUEUE_BYTES)
    limits.check_text("latest_request_id", queue.latest_request_id, limits.MAX_REQUEST_ID_BYTES)
    limits.check_text("last_green_uri", queue.last_green_uri, limits.MAX_URI_BYTES)
    limits.check_text(
        "last_green_request_id", queue.last_green_request_id, limits.MAX_REQUEST_ID_BYTES
    )
    limits.check_count("in_flight", queue.in_flight, limits.MAX_IN_FLIGHT)


class _CheckedQueueStore:
    __slots__ = ("_store",)

    def __init__(self, store: QueueStore) -> None:
        self._store = store

    def create(self, queue: Queue) -> None:
        _check_queue(queue)
        limits.check_version("version", queue.version)
        self._store.create(queue)

    def get(self, name: str) -> Queue:
        limits.check_text("queue", name, limits.MAX_QUEUE_BYTES)
        return self._store.get(name)

    def update(self, queue: Queue, *, old_version: int, new_version: int) -> None:
        _check_queue(queue)
        limits.check_version("old_version", old_version)
        limits.check_version("new_version", new_version)
        self._store.update(queue, old_version=old_version, new_version=new_version)


def _check_build(build: Build) -> None:
    limits.check_text("build id", build.id, limits.MAX_BUILD_ID_BYTES)
    limits.check_text("request id", build.request_id, limits.MAX_REQUEST_ID_BYTES)
    limits.check_text("status", build.status, limits.MAX_STATE_BYTES)
    limits.check_member("status", build.status, BuildStatus)
    limits.check_text("log", build.log, limits.MAX_BUILD_LOG_BYTES)


class _CheckedBuildStore:
    __slots__ = ("_store",)

    def __init__(self, store: BuildStore) -> None:
        self._store = store

    def create(self, build: Build) -> None:
        _check_build(build)
        limits.check_version("version", build.version)
        self._store.create(build)

    def get(self, build_id: str) -> Build:
        limits.check_text("build id", build_id, limits.MAX_BUILD_ID_BYTES)
        return self._store.get(build_id)

    def update(self, build: Build, *, old_version: int, new_version: int) -> None:
        _check_build(build)
        limits.check_version("old_version", old_version)
        limits.check_version("new_version", new_version)
        self._store.update(build, old_version=old_version, new_version=new_version)


def _check_fact_key(queue: str, uri: str, project: str) -> None:
    limits.check_text("queue", queue, limits.MAX_QUEUE_BYTES)
    limits.check_text("uri", uri, limits.MAX_URI_BYTES)
    limits.check_text("project", project, limits.MAX_PROJECT_BYTES)


class _CheckedFactStore:
    __slots__ = ("_store",)

    def __init__(self, store: FactStore) -> None:
        self._store = store

    def create(self, fact: Fact) -> None:
        _check_fact_key(fact.queue, fact.uri, fact.project)
        limits.check_float("degree", fact.degree, limits.MIN_DEGREE, limits.MAX_DEGREE)
        limits.check_text("request id", fact.request_id, limits.MAX_REQUEST_ID_BYTES)
        limits.check_float("created_at", fact.created_at, 0.0, limits.MAX_CREATED_AT)
        # Backends store floats: an int becomes the float it equals, and -0.0 becomes 0.0,
        # which SQL engines do anyway (adding 0.0 turns -0.0 into 0.0 and changes no other).
        fact = dataclasses.replace(
            fact, degree=float(fact.degree) + 0.0, created_at=float(fact.created_at) + 0.0
        )
        self._store.create(fact)

    def get(self, queue: str, uri: str, project: str) -> Fact:
        _check_fact_key(queue, uri, project)
        return self._store.get(queue, uri, project)


class Storage:
    """Stovepipe's state over one backend: ``requests``, ``request_uris``, ``counter``, and
    the pipeline's ``queues``, ``builds`` and ``facts``.

    Every argument is checked against :mod:`stovepipe.storage.limits` before the backend
    sees it. ``capabilities`` is what the backend declares it is (a frozenset of
    :class:`~stovepipe.storage.contract.Capability`). Thread-safe; a context manager that
    closes the backend on exit.
    """

    __slots__ = (
        "_backend",
        "builds",
        "capabilities",
        "counter",
        "facts",
        "queues",
        "request_uris",
        "requests",
    )

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        # What the backend declares it is; a value that is not a Capability is a ValueError.
        declared = getattr(backend, "capabilities", DEFAULT_CAPABILITIES)
        self.capabilities: frozenset[Capability] = frozenset(map(Capability, declared))
        self.requests: RequestStore = _CheckedRequestStore(backend.requests)
        self.request_uris: RequestURIStore = _CheckedRequestURIStore(backend.request_uris)
        self.counter: Counter = _CheckedCounter(backend.counter)
        self.queues: QueueStore = _CheckedQueueStore(backend.queues)
        self.builds: BuildStore = _CheckedBuildStore(backend.builds)
        self.facts: FactStore = _CheckedFactStore(backend.facts)

    def close(self) -> None:
        """Release the backend's connections. Idempotent."""
        self._backend.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def installed_schemes() -> list[str]:
    """The URL schemes of every installed backend, sorted."""
    return sorted({ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)})


def open_storage(url: str, *, workers: int | None = None) -> Storage:
    """Open the storage a URL names; its scheme picks the backend.

    ``memory://``, ``sqlite:///path/to/file`` ship with Stovepipe; other backends register
    an opener under the ``stovepipe.storage`` entry-point group, named by their scheme.
    ``workers`` is how many threads will call the storage at once (a server's RPC threads):
    an opener that takes a ``workers`` keyword gets it, to size a connection pool by default.
    Raises :class:`UnknownBackend` naming the installed schemes when none matches, and
    ``Unavailable`` if the backend cannot be reached.
    """
    scheme = urllib.parse.urlsplit(url).scheme
    matches = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP, name=scheme)
    if not scheme or not matches:
        raise UnknownBackend(
            f"no storage backend serves {scheme + '://' if scheme else repr(redact(url))}; "
            f"installed: {', '.join(s + '://' for s in installed_schemes()) or 'none'}"
        )
    opener: BackendOpener = next(iter(matches)).load()
    if workers is not None and "workers" in inspect.signature(opener).parameters:
        return Storage(cast(Any, opener)(url, workers=workers))
    return Storage(opener(url))
