"""The six stores on etcd: each operation is one transaction (or one read) on one key."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import tenacity

from stovepipe.entity import Build, Fact, Queue, Request
from stovepipe.storage.errors import (
    AlreadyExists,
    NotFound,
    StorageError,
    Unavailable,
    VersionMismatch,
)
from stovepipe_etcd import layout
from stovepipe_etcd.client import EtcdClient
from stovepipe_etcd.etcdrpc.rpc_pb2 import (
    Compare,
    KeyValue,
    PutRequest,
    RangeRequest,
    RequestOp,
    TxnRequest,
    TxnResponse,
)
from stovepipe_etcd.layout import CorruptValue, Layout

_P = ParamSpec("_P")
_Record = TypeVar("_Record")


def _absent(key: bytes) -> Compare:
    """True while ``key`` does not exist (a key's version counts its writes since creation)."""
    return Compare(key=key, target=Compare.VERSION, result=Compare.EQUAL, version=0)


def _put(key: bytes, value: bytes) -> RequestOp:
    return RequestOp(request_put=PutRequest(key=key, value=value))


def _read(key: bytes) -> RequestOp:
    return RequestOp(request_range=RangeRequest(key=key))


def _failure_read(response: TxnResponse) -> KeyValue | None:
    """The key a failed transaction read in its failure branch, or None if it is absent."""
    kvs = response.responses[0].response_range.kvs
    return kvs[0] if kvs else None


def _decoded(decode: Callable[_P, _Record], *args: _P.args, **kwargs: _P.kwargs) -> _Record:
    """``decode(...)``, with a value this layout cannot read raised as ``StorageError``."""
    try:
        return decode(*args, **kwargs)
    except CorruptValue as error:
        raise StorageError(str(error)) from None


def _value_starts_with(key: bytes, prefix: bytes) -> list[Compare]:
    """True while the value of ``key`` lies in ``[prefix, upper bound)``: starts with ``prefix``.

    The value always continues after a version prefix, so ``GREATER`` excludes nothing.
    """
    return [
        Compare(key=key, target=Compare.VALUE, result=Compare.GREATER, value=prefix),
        Compare(
            key=key,
            target=Compare.VALUE,
            result=Compare.LESS,
            value=layout.prefix_upper_bound(prefix),
        ),
    ]


def _create(client: EtcdClient, key: bytes, value: bytes, exists: str) -> None:
    """One round trip: put ``value`` if ``key`` has never been written, else ``AlreadyExists``."""
    response = client.txn(TxnRequest(compare=[_absent(key)], success=[_put(key, value)]))
    if not response.succeeded:
        raise AlreadyExists(exists)


def _get(client: EtcdClient, key: bytes, missing: str) -> bytes:
    """One round trip: the value of ``key`` by a linearizable read, else ``NotFound``."""
    response = client.range(key)
    if not response.kvs:
        raise NotFound(missing)
    return response.kvs[0].value


def _update(
    client: EtcdClient,
    key: bytes,
    *,
    old_version: int,
    fixed: tuple[str, ...],
    encode: Callable[[tuple[str, ...]], bytes],
    what: str,
) -> None:
    """Put ``encode(fixed)`` only if the stored version is ``old_version``, else raise
    ``VersionMismatch``: one transaction, or two when the caller's immutable field differs.

    ``fixed`` is the record's immutable field as the caller has it (a request's queue, a
    build's request_id; empty for a queue). The transaction writes only if the stored value
    starts with the version and that field, i.e. lies in ``[prefix, upper bound)`` (see the
    layout), and reads the key otherwise. If that read shows the expected version with
    another immutable field, the caller passed a field that differs from the stored one; it
    never changes, so the write is repeated with the stored field, under the same compare.
    A record without an immutable field needs no read: a failed compare is the mismatch.
    """
    mismatch = f"{what} is not at version {old_version}"
    for _ in range(2):
        response = client.txn(
            TxnRequest(
                compare=_value_starts_with(key, layout.version_prefix(old_version, *fixed)),
                success=[_put(key, encode(fixed))],
                failure=[_read(key)] if fixed else [],
            )
        )
        if response.succeeded:
            return
        stored_kv = _failure_read(response) if fixed else None
        if stored_kv is None:
            raise VersionMismatch(mismatch)
        version, stored = _decoded(layout.stored_head, what, stored_kv.value, len(fixed))
        if version != old_version or stored == fixed:
            raise VersionMismatch(mismatch)
        fixed = stored
    # The immutable field changed between the two attempts: the record was replaced.
    raise VersionMismatch(mismatch)


class EtcdRequestStore:
    """Requests by id, one key each (see :mod:`stovepipe_etcd.layout`)."""

    def __init__(self, client: EtcdClient, keys: Layout) -> None:
        self._client = client
        self._keys = keys

    def create(self, request: Request) -> None:
        """One round trip: put the request if its key has never been written."""
        _create(
            self._client,
            self._keys.request_key(request.id),
            layout.encode_request(request, version=request.version, queue=request.queue),
            f"request {request.id!r} exists",
        )

    def get(self, request_id: str) -> Request:
        """One round trip: a linearizable read."""
        value = _get(self._client, self._keys.request_key(request_id), f"request {request_id!r}")
        return _decoded(layout.decode_request, request_id, value)

    def update(self, request: Request, *, old_version: int, new_version: int) -> None:
        """One round trip when ``request.queue`` is the stored queue, two when it is not.

        Stores uri, state, build_strategy and base_uri; keeps the stored queue.
        """
        _update(
            self._client,
            self._keys.request_key(request.id),
            old_version=old_version,
            fixed=(request.queue,),
            encode=lambda fixed: layout.encode_request(
                request, version=new_version, queue=fixed[0]
            ),
            what=f"request {request.id!r}",
        )


class EtcdRequestURIStore:
    """``(queue, uri) -> id``, one key per pair with the queue length-prefixed."""

    def __init__(self, client: EtcdClient, keys: Layout) -> None:
        self._client = client
        self._keys = keys

    def create(self, queue: str, uri: str, request_id: str) -> None:
        """One round trip: map the pair if its key has never been written."""
        _create(
            self._client,
            self._keys.uri_key(queue, uri),
            request_id.encode(),
            f"uri {uri!r} of queue {queue!r} is mapped",
        )

    def get_id_by_uri(self, queue: str, uri: str) -> str:
        """One round trip: a linearizable read."""
        value = _get(
            self._client, self._keys.uri_key(queue, uri), f"uri {uri!r} of queue {queue!r}"
        )
        try:
            return value.decode()
        except UnicodeDecodeError as error:
            raise StorageError(f"uri {uri!r} of queue {queue!r} maps to no text: {error}") from None


class _Sequence:
    """What this process last saw of one counter key, and the lock its threads take turns on."""

    __slots__ = ("lock", "mod_revision", "value")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.value = 0
        self.mod_revision = 0  # 0: not seen, assume the key is absent


class EtcdCounter:
    """Counters by compare-and-swap on one key per domain holding the last number, in decimal.

    Each attempt is one transaction: "if the key is still at the revision last seen, write
    value + 1, else read it". A success hands out value + 1, which no other success can also
    hand out, because every write changes the key's revision. A failure returns the current
    value and revision, so the next attempt needs no separate read. The last seen state is kept
    per domain, so an uncontended ``next`` is one round trip. Threads of this process take
    turns per domain, so only other processes contend; after repeated losses an attempt waits
    a short random time, and after ``MAX_ATTEMPTS`` or the timeout the call raises
    ``Unavailable``, never a number that may have been handed out already.
    """

    MAX_ATTEMPTS = 64
    _BACKOFF_CAP_SECONDS = 0.05

    def __init__(self, client: EtcdClient, keys: Layout) -> None:
        self._client = client
        self._keys = keys
        self._sequences: dict[bytes, _Sequence] = {}
        self._sequences_lock = threading.Lock()

    def _sequence(self, key: bytes) -> _Sequence:
        sequence = self._sequences.get(key)
        if sequence is None:
            with self._sequences_lock:
                sequence = self._sequences.setdefault(key, _Sequence())
        return sequence

    def next(self, domain: str) -> int:
        key = self._keys.counter_key(domain)
        sequence = self._sequence(key)
        deadline = time.monotonic() + self._client.timeout
        if not sequence.lock.acquire(timeout=self._client.timeout):
            raise Unavailable(f"counter {domain!r}: timed out waiting for this process's turn")
        try:
            attempt = functools.partial(self._try_next, key, sequence, domain, deadline)
            try:
                return attempt()
            except _Lost:
                # Retried under the policy only now: entering it costs more than a round
                # trip, and an uncontended next never needs it.
                if self.MAX_ATTEMPTS < 2:
                    raise Unavailable(self._gave_up(domain)) from None
            try:
                return self._retrying(deadline)(attempt)
            except tenacity.RetryError:
                raise Unavailable(self._gave_up(domain)) from None
        finally:
            sequence.lock.release()

    def _retrying(self, deadline: float) -> tenacity.Retrying:
        """The policy after a first lost try: up to ``MAX_ATTEMPTS`` tries in all, none
        started past ``deadline`` (monotonic); the next at once, then each after a random
        while below ``2**k`` ms for try k (the first is try 0), at most
        ``_BACKOFF_CAP_SECONDS``, and never past ``deadline``."""

        def sleep(seconds: float) -> None:
            time.sleep(max(0.0, min(seconds, deadline - time.monotonic())))

        return tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_Lost),
            stop=tenacity.stop_any(
                tenacity.stop_after_attempt(self.MAX_ATTEMPTS - 1),
                tenacity.stop_after_delay(max(0.0, deadline - time.monotonic())),
            ),
            # The policy's n-th failure is try n: tenacity's cap is multiplier * 2**(n - 1).
            wait=tenacity.wait_random_exponential(multiplier=0.004, max=self._BACKOFF_CAP_SECONDS),
            sleep=sleep,
        )

    @staticmethod
    def _gave_up(domain: str) -> str:
        return f"counter {domain!r}: too much contention, gave up without a number"

    def _try_next(self, key: bytes, sequence: _Sequence, domain: str, deadline: float) -> int:
        """One compare-and-swap transaction: the number it handed out; raises :class:`_Lost`
        if another process moved the key (``sequence`` then holds the key's current state),
        or ``Unavailable`` if ``deadline`` has passed."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Unavailable(self._gave_up(domain))
        if sequence.mod_revision:
            compare = Compare(
                key=key,
                target=Compare.MOD,
                result=Compare.EQUAL,
                mod_revision=sequence.mod_revision,
            )
        else:
            compare = _absent(key)
        number = sequence.value + 1
        response = self._client.txn(
            TxnRequest(
                compare=[compare],
                success=[_put(key, b"%d" % number)],
                failure=[_read(key)],
            ),
            timeout=remaining,
        )
        if response.succeeded:
            # A transaction's writes all carry the revision it created.
            sequence.value, sequence.mod_revision = number, response.header.revision
            return number
        current = _failure_read(response)
        if current is None:
            sequence.value, sequence.mod_revision = 0, 0
        else:
            try:
                sequence.value = int(current.value)
            except ValueError:
                raise StorageError(
                    f"counter {domain!r} holds no number: {current.value!r}"
                ) from None
            sequence.mod_revision = current.mod_revision
        raise _Lost


class _Lost(Exception):
    """A counter's compare-and-swap lost to another process's."""


class EtcdQueueStore:
    """Queues by name, one key each (see :mod:`stovepipe_etcd.layout`)."""

    def __init__(self, client: EtcdClient, keys: Layout) -> None:
        self._client = client
        self._keys = keys

    def create(self, queue: Queue) -> None:
        """One round trip: put the queue if its key has never been written."""
        _create(
            self._client,
            self._keys.queue_key(queue.name),
            layout.encode_queue(queue, version=queue.version),
            f"queue {queue.name!r} exists",
        )

    def get(self, name: str) -> Queue:
        """One round trip: a linearizable read."""
        value = _get(self._client, self._keys.queue_key(name), f"queue {name!r}")
        return _decoded(layout.decode_queue, name, value)

    def update(self, queue: Queue, *, old_version: int, new_version: int) -> None:
        """One round trip: stores latest_request_id, last_green_uri, last_green_request_id
        and in_flight if the stored version is ``old_version``."""
        _update(
            self._client,
            self._keys.queue_key(queue.name),
            old_version=old_version,
            fixed=(),
            encode=lambda _: layout.encode_queue(queue, version=new_version),
            what=f"queue {queue.name!r}",
        )


class EtcdBuildStore:
    """Builds by id, one key each (see :mod:`stovepipe_etcd.layout`)."""

    def __init__(self, client: EtcdClient, keys: Layout) -> None:
        self._client = client
        self._keys = keys

    def create(self, build: Build) -> None:
        """One round trip: put the build if its key has never been written."""
        _create(
            self._client,
            self._keys.build_key(build.id),
            layout.encode_build(build, version=build.version, request_id=build.request_id),
            f"build {build.id!r} exists",
        )

    def get(self, build_id: str) -> Build:
        """One round trip: a linearizable read."""
        value = _get(self._client, self._keys.build_key(build_id), f"build {build_id!r}")
        return _decoded(layout.decode_build, build_id, value)

    def update(self, build: Build, *, old_version: int, new_version: int) -> None:
        """One round trip when ``build.request_id`` is the stored one, two when it is not.

        Stores status and log; keeps the stored request_id.
        """
        _update(
            self._client,
            self._keys.build_key(build.id),
            old_version=old_version,
            fixed=(build.request_id,),
            encode=lambda fixed: layout.encode_build(
                build, version=new_version, request_id=fixed[0]
            ),
            what=f"build {build.id!r}",
        )


class EtcdFactStore:
    """Facts by ``(queue, uri, project)``, one key each with queue and uri length-prefixed."""

    def __init__(self, client: EtcdClient, keys: Layout) -> None:
        self._client = client
        self._keys = keys

    def create(self, fact: Fact) -> None:
        """One round trip: put the fact if its key has never been written."""
        key = (fact.queue, fact.uri, fact.project)
        _create(
            self._client,
            self._keys.fact_key(*key),
            layout.encode_fact(fact),
            f"fact {key!r} exists",
        )

    def get(self, queue: str, uri: str, project: str) -> Fact:
        """One round trip: a linearizable read."""
        value = _get(
            self._client,
            self._keys.fact_key(queue, uri, project),
            f"fact {(queue, uri, project)!r}",
        )
        return _decoded(layout.decode_fact, queue, uri, project, value)


class EtcdBackend:
    """The six stores over one etcd client."""

    # What the conformance suite holds it to (stovepipe.storage.Capability).
    capabilities = frozenset({"durable", "shared", "network"})

    def __init__(self, client: EtcdClient, keys: Layout) -> None:
        self.client = client
        self.requests = EtcdRequestStore(client, keys)
        self.request_uris = EtcdRequestURIStore(client, keys)
        self.counter = EtcdCounter(client, keys)
        self.queues = EtcdQueueStore(client, keys)
        self.builds = EtcdBuildStore(client, keys)
        self.facts = EtcdFactStore(client, keys)

    def close(self) -> None:
        self.client.close()
