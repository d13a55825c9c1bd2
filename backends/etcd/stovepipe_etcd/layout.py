"""Where each record lives in etcd's flat byte keyspace, and how its value is encoded.

Keys (every string UTF-8 encoded, ``<prefix>`` from the URL, ``stovepipe/`` by default)::

    <prefix>request/<id>                          -> request value (below)
    <prefix>uri/<n>:<queue><uri>                  -> request id
    <prefix>counter/<domain>                      -> last number handed out, decimal ASCII
    <prefix>queue/<name>                          -> queue value (below)
    <prefix>build/<id>                            -> build value (below)
    <prefix>fact/<n>:<queue><m>:<uri><project>    -> fact value (below)

where ``n`` and ``m`` are the byte lengths of the queue and the uri, in decimal. The six tags
differ and none is a prefix of another, so the stores never share a key. A length ends at
the first ``:`` after it (digits contain none) and says exactly where its part ends, so
``(queue, uri)`` and ``(queue, uri, project)`` are recovered from the key alone: two distinct
tuples never share a key, whatever ``/``, ``:``, NUL or other bytes their parts contain. Ids,
names, counter domains and a fact's project are the whole rest of their key.

A versioned record's value (request, queue, build) is two lines, readable with
``etcdctl get``::

    <version: 19 decimal digits, zero-padded>
    <its fields as a JSON array, Python's default separators, non-ASCII kept as is>

for example ``0000000000000000001`` and ``["monorepo/main", "git://...", "accepted"]``. The
fields, in order:

* request: queue, uri, state, then build_strategy and base_uri. Values written before those
  two existed hold only the first three, and read back with them unset; a request whose two
  are unset is still written that way, so the previous release reads it too.
* queue: latest_request_id, last_green_uri, last_green_request_id, in_flight (a JSON integer).
* build: request_id, status, log.

The version comes first at a fixed width so that byte order equals numeric order, and the
record's immutable field (a request's queue, a build's request_id; a queue has none besides
its name, which is its key) comes next: "stored version is v and stored immutable field is q"
is the same as "the value starts with ``version_prefix(v, q)``", which an etcd transaction
can check by comparing the value with the two ends of that prefix's range. That lets an
update be one transaction.

A fact is written once and has no version; its value is the JSON array
``[request_id, degree, created_at]``. The two floats are written as Python's ``repr``, the
shortest decimal that reads back as the very same float (``-0.0`` included).

A value that does not have this layout, or holds a state, status or strategy this version
does not define, raises :class:`CorruptValue`: reading is strict.
"""

from __future__ import annotations

import enum
import json
from typing import TypeVar

from stovepipe.entity import (
    Build,
    BuildStatus,
    BuildStrategy,
    Fact,
    Queue,
    Request,
    RequestState,
)

VERSION_DIGITS = 19
"""Wide enough for the largest version, 2**63 - 1, and for 2**63 (an upper bound in compares)."""

_REQUEST_TAG = b"request/"
_URI_TAG = b"uri/"
_COUNTER_TAG = b"counter/"
_QUEUE_TAG = b"queue/"
_BUILD_TAG = b"build/"
_FACT_TAG = b"fact/"

_Enum = TypeVar("_Enum", bound=enum.StrEnum)


class CorruptValue(ValueError):
    """A stored value does not have this layout."""


def _length_prefixed(text: str) -> bytes:
    """``<n>:<text>``, n the byte length of the UTF-8 text: self-delimiting whatever it holds."""
    encoded = text.encode()
    return b"%d:%s" % (len(encoded), encoded)


class Layout:
    """Keys under one prefix."""

    __slots__ = ("_build", "_counter", "_fact", "_queue", "_request", "_uri", "prefix")

    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix
        self._request = prefix + _REQUEST_TAG
        self._uri = prefix + _URI_TAG
        self._counter = prefix + _COUNTER_TAG
        self._queue = prefix + _QUEUE_TAG
        self._build = prefix + _BUILD_TAG
        self._fact = prefix + _FACT_TAG

    def request_key(self, request_id: str) -> bytes:
        """The key of the request with this id."""
        return self._request + request_id.encode()

    def uri_key(self, queue: str, uri: str) -> bytes:
        """The key of the ``(queue, uri)`` mapping: the queue is length-prefixed."""
        return self._uri + _length_prefixed(queue) + uri.encode()

    def counter_key(self, domain: str) -> bytes:
        """The key of a counter domain."""
        return self._counter + domain.encode()

    def queue_key(self, name: str) -> bytes:
        """The key of the queue with this name."""
        return self._queue + name.encode()

    def build_key(self, build_id: str) -> bytes:
        """The key of the build with this id."""
        return self._build + build_id.encode()

    def fact_key(self, queue: str, uri: str, project: str) -> bytes:
        """The key of the ``(queue, uri, project)`` fact: queue and uri are length-prefixed."""
        return self._fact + _length_prefixed(queue) + _length_prefixed(uri) + project.encode()


def _json(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


def version_prefix(version: int, *immutable: str) -> bytes:
    """The bytes every stored value at ``version`` with these leading fields starts with.

    ``immutable`` is the record's immutable field (a request's queue, a build's request_id),
    or nothing for a queue.
    """
    return b"%0*d\n[%s" % (VERSION_DIGITS, version, b"".join(_json(f) + b", " for f in immutable))


def prefix_upper_bound(prefix: bytes) -> bytes:
    """The least byte string greater than every string that starts with ``prefix``.

    A version prefix ends with an ASCII byte (a space or ``[``), so incrementing its last
    byte suffices.
    """
    return prefix[:-1] + bytes((prefix[-1] + 1,))


def _versioned(version: int, fields: list[str | int]) -> bytes:
    # The same bytes as version_prefix(version, fields[0]) + the rest: json.dumps writes a
    # list as "[" + items joined by ", " + "]", each string as _json does.
    return b"%0*d\n%s" % (VERSION_DIGITS, version, _json(fields))


def _split_versioned(value: bytes) -> tuple[int, list[object]]:
    """The version and the fields of a versioned value; ValueError or TypeError if unreadable."""
    version, newline, fields = value.decode().partition("\n")
    if (
        not newline
        or len(version) != VERSION_DIGITS
        or not (version.isascii() and version.isdigit())
    ):
        raise ValueError(f"no {VERSION_DIGITS}-digit version line")
    items = json.loads(fields)
    if not isinstance(items, list):
        raise ValueError("the fields are not a JSON array")
    return int(version), items


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a string")
    return value


def _member(kind: type[_Enum], value: object, field: str) -> _Enum:
    try:
        return kind(_text(value))
    except ValueError:
        raise ValueError(f"unknown {field} {value!r}") from None


def stored_head(what: str, value: bytes, count: int) -> tuple[int, tuple[str, ...]]:
    """The version and the first ``count`` fields (strings) of a versioned stored value.

    What an update needs to tell a stale version from a caller's differing immutable field.
    ``what`` names the record in the error.
    """
    try:
        version, items = _split_versioned(value)
        if len(items) < count:
            raise ValueError(f"fewer than {count} fields")
        return version, tuple(_text(item) for item in items[:count])
    except (ValueError, TypeError) as error:
        raise CorruptValue(f"{what} has an unreadable value: {error}") from None


def encode_request(request: Request, *, version: int, queue: str) -> bytes:
    """The stored value of ``request`` with the given version and queue."""
    fields: list[str | int] = [queue, request.uri, str(request.state)]
    if request.build_strategy != BuildStrategy.UNSET or request.base_uri:
        fields += [str(request.build_strategy), request.base_uri]
    return _versioned(version, fields)


def decode_request(request_id: str, value: bytes) -> Request:
    """The request a stored value describes; a value without the pipeline fields reads them
    as unset."""
    try:
        version, items = _split_versioned(value)
        if len(items) == 3:
            items += ["", ""]
        queue, uri, state, strategy, base_uri = items
        return Request(
            id=request_id,
            queue=_text(queue),
            uri=_text(uri),
            state=_member(RequestState, state, "state"),
            version=version,
            build_strategy=_member(BuildStrategy, strategy, "build_strategy"),
            base_uri=_text(base_uri),
        )
    # UnicodeDecodeError and json.JSONDecodeError are ValueErrors; unpacking a list of another
    # length raises ValueError.
    except (ValueError, TypeError) as error:
        raise CorruptValue(f"request {request_id!r} has an unreadable value: {error}") from None


def encode_queue(queue: Queue, *, version: int) -> bytes:
    """The stored value of ``queue`` with the given version (its name is the key)."""
    return _versioned(
        version,
        [
            queue.latest_request_id,
            queue.last_green_uri,
            queue.last_green_request_id,
            queue.in_flight,
        ],
    )


def decode_queue(name: str, value: bytes) -> Queue:
    """The queue a stored value describes."""
    try:
        version, items = _split_versioned(value)
        latest, green_uri, green_request, in_flight = items
        if not isinstance(in_flight, int) or isinstance(in_flight, bool) or in_flight < 0:
            raise ValueError(f"in_flight {in_flight!r} is not a count")
        return Queue(
            name=name,
            latest_request_id=_text(latest),
            last_green_uri=_text(green_uri),
            last_green_request_id=_text(green_request),
            in_flight=in_flight,
            version=version,
        )
    except (ValueError, TypeError) as error:
        raise CorruptValue(f"queue {name!r} has an unreadable value: {error}") from None


def encode_build(build: Build, *, version: int, request_id: str) -> bytes:
    """The stored value of ``build`` with the given version and request id."""
    return _versioned(version, [request_id, str(build.status), build.log])


def decode_build(build_id: str, value: bytes) -> Build:
    """The build a stored value describes."""
    try:
        version, items = _split_versioned(value)
        request_id, status, log = items
        return Build(
            id=build_id,
            request_id=_text(request_id),
            status=_member(BuildStatus, status, "status"),
            log=_text(log),
            version=version,
        )
    except (ValueError, TypeError) as error:
        raise CorruptValue(f"build {build_id!r} has an unreadable value: {error}") from None


def encode_fact(fact: Fact) -> bytes:
    """The stored value of ``fact`` (its queue, uri and project are the key)."""
    # float(): an int degree or time is stored, and read back, as the float it equals.
    return _json([fact.request_id, float(fact.degree), float(fact.created_at)])


def decode_fact(queue: str, uri: str, project: str, value: bytes) -> Fact:
    """The fact a stored value describes."""
    try:
        request_id, degree, created_at = json.loads(value.decode())
        if not (isinstance(degree, float) and isinstance(created_at, float)):
            raise ValueError(f"degree {degree!r} and created_at {created_at!r} are not floats")
        return Fact(queue, uri, project, degree, _text(request_id), created_at)
    except (ValueError, TypeError) as error:
        key = (queue, uri, project)
        raise CorruptValue(f"fact {key!r} has an unreadable value: {error}") from None
