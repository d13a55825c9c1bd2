"""The storage contract: six stores, each operation one key and one atomic step.

These protocols are what a backend implements and what the conformance suite in
``contract_tests/`` holds every backend to. The rules, in one place:

* **One key, one atomic step.** No method spans two stores; there are no cross-store
  transactions, so any key/value engine can satisfy the contract. Callers orchestrate.
* **Keys are exact.** Ids, queue names and URIs are arbitrary Unicode strings compared byte
  for byte: case-sensitive, whitespace-significant; no two distinct keys (or distinct
  ``(queue, uri)`` pairs, whatever separators they contain) may ever share storage.
* **Limits** are in :mod:`stovepipe.storage.limits`. :func:`stovepipe.storage.open_storage`
  rejects longer input with :class:`~stovepipe.storage.errors.LimitExceeded` before it
  reaches a backend, so a backend may rely on them (column widths, key sizes).
* **Enumerations are closed.** ``state``, ``status`` and ``build_strategy`` hold only the
  values :mod:`stovepipe.entity` defines: ``open_storage`` refuses any other on write, and a
  backend that reads back a value it does not know raises ``StorageError``.
* **Numbers round-trip exactly**: a fact's ``degree`` and ``created_at`` read back as the very
  same ``float`` (``open_storage`` stores an int as the float it equals and ``-0.0`` as
  ``0.0``); counts and versions are signed 64-bit integers.
* **Read-after-write**: a read after a successful write returns that write.
* **Thread-safe**: one instance serves a server's whole thread pool.
* **Capabilities** say what a backend is (:class:`Capability`); the rules about surviving a
  close, sharing between instances and reaching a server apply to the backends that declare
  them.
* **Errors** are those of :mod:`stovepipe.storage.errors`. Transient faults (refused, reset,
  timed out) are :class:`~stovepipe.storage.errors.Unavailable`; every call has a timeout, so
  a dead engine yields ``Unavailable`` promptly, never a hang.
"""

from __future__ import annotations

import enum
from typing import Protocol

from stovepipe.entity import Build, Fact, Queue, Request


class Capability(enum.StrEnum):
    """What a backend is. It declares its capabilities as a ``capabilities`` attribute (any
    collection of these values, or their strings); without one it has
    :data:`DEFAULT_CAPABILITIES`. The conformance suite holds a backend to the rules of the
    capabilities it declares, and skips the others naming the capability.
    """

    DURABLE = "durable"
    """What one instance wrote, a new instance opened on the same URL after it closed reads."""
    SHARED = "shared"
    """Instances open at once on the same URL, in any threads or processes, see each other's
    writes at once: they share one store, as the servers of one deployment do."""
    NETWORK = "network"
    """It reaches a server over TCP at the URL's host and port (the default port when the URL
    has none), and its ``timeout`` URL option bounds every call."""


DEFAULT_CAPABILITIES = frozenset({Capability.DURABLE, Capability.SHARED})
"""A backend's capabilities when it declares none."""


class RequestStore(Protocol):
    """Requests by id."""

    def create(self, request: Request) -> None:
        """Persist a new request as given, ``version`` included.

        Raises ``AlreadyExists`` if the id is stored already; the stored request is left
        exactly as it was (first writer wins).
        """
        ...

    def get(self, request_id: str) -> Request:
        """Return the stored request, or raise ``NotFound``."""
        ...

    def update(self, request: Request, *, old_version: int, new_version: int) -> None:
        """Conditionally persist the mutable fields of ``request``.

        Stores ``request.uri``, ``request.state``, ``request.build_strategy`` and
        ``request.base_uri`` and sets the version to ``new_version`` only if the stored version
        equals ``old_version``; otherwise raises ``VersionMismatch``, also when no request has
        ``request.id``. Never reads ``request.version`` and never changes ``id`` or ``queue``.
        """
        ...


class RequestURIStore(Protocol):
    """The reverse index ``(queue, uri) -> request id``: the ingest dedup key."""

    def create(self, queue: str, uri: str, request_id: str) -> None:
        """Map ``(queue, uri)`` to ``request_id``.

        Raises ``AlreadyExists`` if the pair is mapped already, leaving the first mapping
        intact. This is the dedup signal.
        """
        ...

    def get_id_by_uri(self, queue: str, uri: str) -> str:
        """Return the id mapped to ``(queue, uri)``, or raise ``NotFound``."""
        ...


class Counter(Protocol):
    """Named monotonic sequences."""

    def next(self, domain: str) -> int:
        """Return the next number of ``domain``: 1, 2, 3, ...

        Never a repeat, across threads and processes sharing the engine.
        """
        ...


class QueueStore(Protocol):
    """Queues by name: the pipeline's per-queue state (newest head, slots, green bookmark)."""

    def create(self, queue: Queue) -> None:
        """Persist a new queue as given, ``version`` included.

        Raises ``AlreadyExists`` if the name is stored already; the stored queue is left
        exactly as it was (first writer wins).
        """
        ...

    def get(self, name: str) -> Queue:
        """Return the stored queue, or raise ``NotFound``."""
        ...

    def update(self, queue: Queue, *, old_version: int, new_version: int) -> None:
        """Conditionally persist the mutable fields of ``queue``.

        Stores ``latest_request_id``, ``last_green_uri``, ``last_green_request_id`` and
        ``in_flight`` and sets the version to ``new_version`` only if the stored version
        equals ``old_version``; otherwise raises ``VersionMismatch``, also when no queue has
        ``queue.name``. Never reads ``queue.version``.
        """
        ...


class BuildStore(Protocol):
    """Builds by the id their runner minted."""

    def create(self, build: Build) -> None:
        """Persist a new build as given, ``version`` included.

        Raises ``AlreadyExists`` if the id is stored already; the stored build is left
        exactly as it was (first writer wins).
        """
        ...

    def get(self, build_id: str) -> Build:
        """Return the stored build, or raise ``NotFound``."""
        ...

    def update(self, build: Build, *, old_version: int, new_version: int) -> None:
        """Conditionally persist the mutable fields of ``build``.

        Stores ``status`` and ``log`` and sets the version to ``new_version`` only if the
        stored version equals ``old_version``; otherwise raises ``VersionMismatch``, also when
        no build has ``build.id``. Never reads ``build.version`` and never changes ``id`` or
        ``request_id``.
        """
        ...


class FactStore(Protocol):
    """Validation facts by ``(queue, uri, project)``: written once, never changed."""

    def create(self, fact: Fact) -> None:
        """Persist a new fact.

        Raises ``AlreadyExists`` if a fact has the same ``(queue, uri, project)``; the stored
        fact is left exactly as it was (first writer wins).
        """
        ...

    def get(self, queue: str, uri: str, project: str) -> Fact:
        """Return the fact stored for the key, or raise ``NotFound`` (not validated)."""
        ...


class Backend(Protocol):
    """What a backend's entry point returns: the six stores over one engine connection."""

    @property
    def requests(self) -> RequestStore: ...

    @property
    def request_uris(self) -> RequestURIStore: ...

    @property
    def counter(self) -> Counter: ...

    @property
    def queues(self) -> QueueStore: ...

    @property
    def builds(self) -> BuildStore: ...

    @property
    def facts(self) -> FactStore: ...

    def close(self) -> None:
        """Release connections. Idempotent."""
        ...


class BackendOpener(Protocol):
    """The object a ``stovepipe.storage`` entry point names: opens a backend from its URL."""

    def __call__(self, url: str) -> Backend: ...
