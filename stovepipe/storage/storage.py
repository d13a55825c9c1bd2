"""The :class:`Storage` aggregate and :func:`open_storage`, which finds backends by URL scheme."""

from __future__ import annotations

import importlib.metadata
import urllib.parse
from types import TracebackType
from typing import Self

from stovepipe.entity import Request
from stovepipe.storage import limits
from stovepipe.storage.contract import (
    Backend,
    BackendOpener,
    Counter,
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


class Storage:
    """Stovepipe's state: ``requests``, ``request_uris`` and ``counter`` over one backend.

    Every argument is checked against :mod:`stovepipe.storage.limits` before the backend
    sees it. Thread-safe; a context manager that closes the backend on exit.
    """

    __slots__ = ("_backend", "counter", "request_uris", "requests")

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self.requests: RequestStore = _CheckedRequestStore(backend.requests)
        self.request_uris: RequestURIStore = _CheckedRequestURIStore(backend.request_uris)
        self.counter: Counter = _CheckedCounter(backend.counter)

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


def open_storage(url: str) -> Storage:
    """Open the storage a URL names; its scheme picks the backend.

    ``memory://``, ``sqlite:///path/to/file`` ship with Stovepipe; other backends register
    an opener under the ``stovepipe.storage`` entry-point group, named by their scheme.
    Raises :class:`UnknownBackend` naming the installed schemes when none matches, and
    ``Unavailable`` if the backend cannot be reached.
    """
    scheme = urllib.parse.urlsplit(url).scheme
    matches = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP, name=scheme)
    if not scheme or not matches:
        raise UnknownBackend(
            f"no storage backend serves {scheme + '://' if scheme else repr(url)}; "
            f"installed: {', '.join(s + '://' for s in installed_schemes()) or 'none'}"
        )
    opener: BackendOpener = next(iter(matches)).load()
    return Storage(opener(url))
