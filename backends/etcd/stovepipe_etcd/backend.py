"""The three stores on etcd: each operation is one transaction (or one read) on one key."""

from __future__ import annotations

import random
import threading
import time

from stovepipe.entity import Request
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


def _decoded(request_id: str, value: bytes) -> Request:
    try:
        return layout.decode_request(request_id, value)
    except CorruptValue as error:
        raise StorageError(str(error)) from None


class EtcdRequestStore:
    """Requests by id, one key each (see :mod:`stovepipe_etcd.layout`)."""

    def __init__(self, client: EtcdClient, keys: Layout) -> None:
        self._client = client
        self._keys = keys

    def create(self, request: Request) -> None:
        """One round trip: put the request if its key has never been written."""
        key = self._keys.request_key(request.id)
        value = layout.encode_request(request, version=request.version, queue=request.queue)
        response = self._client.txn(TxnRequest(compare=[_absent(key)], success=[_put(key, value)]))
        if not response.succeeded:
            raise AlreadyExists(f"request {request.id!r} exists")

    def get(self, request_id: str) -> Request:
        """One round trip: a linearizable read."""
        response = self._client.range(self._keys.request_key(request_id))
        if not response.kvs:
            raise NotFound(f"request {request_id!r}")
        return _decoded(request_id, response.kvs[0].value)

    def update(self, request: Request, *, old_version: int, new_version: int) -> None:
        """One round trip when ``request.queue`` is the stored queue, two when it is not.

        The transaction writes only if the stored value starts with the version and queue
        the caller expects, i.e. lies in ``[prefix, upper bound)`` (see the layout), and reads
        the key otherwise. If that read shows the expected version under another queue, the
        caller passed a queue that differs from the stored one; the queue is immutable, so the
        write is repeated with the stored queue, under the same compare.
        """
        key = self._keys.request_key(request.id)
        queue = request.queue
        while True:
            expected = layout.version_prefix(old_version, queue)
            response = self._client.txn(
                TxnRequest(
                    compare=[
                        Compare(
                            key=key, target=Compare.VALUE, result=Compare.GREATER, value=expected
                        ),
                        Compare(
                            key=key,
                            target=Compare.VALUE,
                            result=Compare.LESS,
                            value=layout.prefix_upper_bound(expected),
                        ),
                    ],
                    success=[
                        _put(key, layout.encode_request(request, version=new_version, queue=queue))
                    ],
                    failure=[_read(key)],
                )
            )
            if response.succeeded:
                return
            stored_kv = _failure_read(response)
            stored = None if stored_kv is None else _decoded(request.id, stored_kv.value)
            # The queue never changes, so this repeats at most once.
            if stored is None or stored.version != old_version or stored.queue == queue:
                raise VersionMismatch(f"request {request.id!r} is not at version {old_version}")
            queue = stored.queue


class EtcdRequestURIStore:
    """``(queue, uri) -> id``, one key per pair with the queue length-prefixed."""

    def __init__(self, client: EtcdClient, keys: Layout) -> None:
        self._client = client
        self._keys = keys

    def create(self, queue: str, uri: str, request_id: str) -> None:
        """One round trip: map the pair if its key has never been written."""
        key = self._keys.uri_key(queue, uri)
        response = self._client.txn(
            TxnRequest(compare=[_absent(key)], success=[_put(key, request_id.encode())])
        )
        if not response.succeeded:
            raise AlreadyExists(f"uri {uri!r} of queue {queue!r} is mapped")

    def get_id_by_uri(self, queue: str, uri: str) -> str:
        """One round trip: a linearizable read."""
        response = self._client.range(self._keys.uri_key(queue, uri))
        if not response.kvs:
            raise NotFound(f"uri {uri!r} of queue {queue!r}")
        try:
            return response.kvs[0].value.decode()
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
            for attempt in range(self.MAX_ATTEMPTS):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                if attempt >= 2:
                    delay = random.uniform(0, min(self._BACKOFF_CAP_SECONDS, 0.001 * 2**attempt))
                    time.sleep(min(delay, remaining))
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
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
        finally:
            sequence.lock.release()
        raise Unavailable(f"counter {domain!r}: too much contention, gave up without a number")


class EtcdBackend:
    """The three stores over one etcd client."""

    def __init__(self, client: EtcdClient, keys: Layout) -> None:
        self.client = client
        self.requests = EtcdRequestStore(client, keys)
        self.request_uris = EtcdRequestURIStore(client, keys)
        self.counter = EtcdCounter(client, keys)

    def close(self) -> None:
        self.client.close()
