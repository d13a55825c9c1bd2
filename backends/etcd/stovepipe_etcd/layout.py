"""Where each record lives in etcd's flat byte keyspace, and how its value is encoded.

Keys (every string UTF-8 encoded, ``<prefix>`` from the URL, ``stovepipe/`` by default)::

    <prefix>request/<id>                     -> request value (below)
    <prefix>uri/<n>:<queue><uri>             -> request id;  n = byte length of queue, decimal
    <prefix>counter/<domain>                 -> last number handed out, decimal ASCII

The three tags differ and none is a prefix of another, so the stores never share a key. Within
``uri/``, the decimal length ends at the first ``:`` (digits contain none) and says exactly
where the queue ends, so ``(queue, uri)`` is recovered from the key alone: two distinct pairs
never share a key, whatever ``/``, ``:``, NUL or other bytes they contain. Request ids and
counter domains are the whole rest of their key.

A request's value is two lines, readable with ``etcdctl get``::

    <version: 19 decimal digits, zero-padded>
    <[queue, uri, state] as a JSON array of strings, Python's default separators>

for example ``0000000000000000001`` and ``["monorepo/main", "git://...", "accepted"]``. The
version comes first at a fixed width so that byte order equals numeric order, and the queue
comes next: "stored version is v and stored queue is q" is the same as "the value starts
with ``version_prefix(v, q)``", which an etcd transaction can check by comparing the value
with the two ends of that prefix's range. That lets an update be one transaction.
"""

from __future__ import annotations

import json

from stovepipe.entity import Request, RequestState

VERSION_DIGITS = 19
"""Wide enough for the largest version, 2**63 - 1, and for 2**63 (an upper bound in compares)."""

_REQUEST_TAG = b"request/"
_URI_TAG = b"uri/"
_COUNTER_TAG = b"counter/"


class CorruptValue(ValueError):
    """A stored value does not have this layout."""


class Layout:
    """Keys under one prefix."""

    __slots__ = ("_counter", "_request", "_uri", "prefix")

    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix
        self._request = prefix + _REQUEST_TAG
        self._uri = prefix + _URI_TAG
        self._counter = prefix + _COUNTER_TAG

    def request_key(self, request_id: str) -> bytes:
        """The key of the request with this id."""
        return self._request + request_id.encode()

    def uri_key(self, queue: str, uri: str) -> bytes:
        """The key of the ``(queue, uri)`` mapping: the queue is length-prefixed."""
        encoded_queue = queue.encode()
        return b"%s%d:%s%s" % (self._uri, len(encoded_queue), encoded_queue, uri.encode())

    def counter_key(self, domain: str) -> bytes:
        """The key of a counter domain."""
        return self._counter + domain.encode()


def _json(text: str) -> bytes:
    return json.dumps(text, ensure_ascii=False).encode()


def version_prefix(version: int, queue: str) -> bytes:
    """The bytes every stored value of a request at ``version`` in ``queue`` starts with."""
    return b"%0*d\n[%s, " % (VERSION_DIGITS, version, _json(queue))


def prefix_upper_bound(prefix: bytes) -> bytes:
    """The least byte string greater than every string that starts with ``prefix``.

    A version prefix ends with a space (0x20), so incrementing its last byte suffices.
    """
    return prefix[:-1] + bytes((prefix[-1] + 1,))


def encode_request(request: Request, *, version: int, queue: str) -> bytes:
    """The stored value of ``request`` with the given version and queue."""
    return version_prefix(version, queue) + b"%s, %s]" % (_json(request.uri), _json(request.state))


def decode_request(request_id: str, value: bytes) -> Request:
    """The request a stored value describes."""
    try:
        version, _, fields = value.decode().partition("\n")
        queue, uri, state = json.loads(fields)
        if not (isinstance(queue, str) and isinstance(uri, str)):
            raise ValueError("queue and uri must be strings")
        return Request(
            id=request_id,
            queue=queue,
            uri=uri,
            state=RequestState(state),
            version=int(version),
        )
    # UnicodeDecodeError and json.JSONDecodeError are ValueErrors; unpacking a non-list of
    # three raises ValueError or TypeError.
    except (ValueError, TypeError) as error:
        raise CorruptValue(f"request {request_id!r} has an unreadable value: {error}") from None
