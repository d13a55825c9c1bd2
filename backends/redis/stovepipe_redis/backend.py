"""The six stores on Redis, each operation one key and the fewest round trips Redis allows.

* ``requests.create``: ``SET key value NX`` (1 round trip).
* ``requests.get``: ``GET key`` (1).
* ``requests.update``: ``WATCH key`` + ``GET key`` pipelined, then ``MULTI`` + ``SET`` +
  ``EXEC`` pipelined (2). ``EXEC`` answers nil when the key changed after ``WATCH``; the
  update then starts over, re-reading the version: if it is no longer ``old_version`` that
  is a real ``VersionMismatch`` (never retried), otherwise the write is tried again, at most
  :data:`MAX_UPDATE_ATTEMPTS` times in all. A mismatch costs ``UNWATCH`` (2 round trips).
* ``request_uris.create``: ``SET key id NX`` (1); ``get_id_by_uri``: ``GET key`` (1).
* ``counter.next``: ``INCR key`` (1).
* ``queues``, ``builds``: ``create`` is ``SET key value NX`` (1), ``get`` is ``GET key`` (1),
  ``update`` is ``EVALSHA`` of :data:`COMPARE_AND_SET` (1): the script compares the stored
  version and writes in one atomic step on the server, so it never retries.
* ``facts.create``: ``SET key value NX`` (1); ``facts.get``: ``GET key`` (1).

Commands go straight to a pooled redis-py connection. The driver never retries on its own:
a retried ``SET NX`` or ``INCR`` whose first attempt did land would answer wrongly.

Stored values are compact UTF-8 JSON of a fixed shape, written without ``json.dumps`` (see
:func:`encode_request`). A queue's and a build's value begins with its version,
``{"version":<n>,``, so the script compares versions as bytes: versions are written in
canonical decimal and the comma ends the digits, so equal heads mean equal versions (a Lua
number, a double, could not tell 2**63-1 from 2**63-2). Floats are written as ``repr`` writes
them, the shortest text that reads back as the very same float.
"""

from __future__ import annotations

import functools
import hashlib
import json
import json.encoder
import ssl
import threading
from collections.abc import Iterable, Sequence
from typing import Any, Final, Protocol

import redis
import redis.exceptions
import tenacity

from stovepipe.entity import (
    Build,
    BuildStatus,
    BuildStrategy,
    Fact,
    Queue,
    Request,
    RequestState,
)
from stovepipe.storage import limits
from stovepipe.storage.errors import (
    AlreadyExists,
    NotFound,
    StorageError,
    Unavailable,
    VersionMismatch,
)
from stovepipe_redis.keys import KeyLayout

MAX_UPDATE_ATTEMPTS: Final = 16
"""How often an update tries its ``MULTI``/``EXEC`` while other writers keep changing the key
without moving its version. After that it gives up with ``Unavailable`` (safe to retry)."""

_CONFLICT_BACKOFF_SECONDS: Final = 0.0002
_CONFLICT_BACKOFF_CAP_SECONDS: Final = 0.01

# The string quoting of json.dumps(..., ensure_ascii=False), without building an encoder per
# call: a third of the time json.dumps takes for this small, fixed shape.
_json_string = json.encoder.encode_basestring
# Built once; json.loads spends longer sniffing the encoding of bytes than decoding them.
_decode_json = json.JSONDecoder().decode


def encode_request(
    queue: str, uri: str, state: str, build_strategy: str, base_uri: str, version: int
) -> bytes:
    """The stored value of a request: compact UTF-8 JSON without the id (the key has it).

    ``{"queue":"monorepo/main","uri":"git://...","state":"accepted","build_strategy":"",
    "base_uri":"","version":1}``, the same bytes as
    ``json.dumps(fields, ensure_ascii=False, separators=(",", ":"))``.
    """
    return (
        f'{{"queue":{_json_string(queue)},"uri":{_json_string(uri)},'
        f'"state":{_json_string(state)},"build_strategy":{_json_string(build_strategy)},'
        f'"base_uri":{_json_string(base_uri)},"version":{version:d}}}'
    ).encode()


def decode_request(key: bytes, value: bytes) -> dict[str, Any]:
    """Parse a stored request value; anything else under the key is a ``StorageError``.

    Values stored before requests had ``build_strategy`` and ``base_uri`` lack them: they
    read as the defaults, ``""`` both.
    """
    try:
        fields = _decode_json(value.decode("utf-8"))
        if (
            isinstance(fields, dict)
            and isinstance(fields.get("queue"), str)
            and isinstance(fields.get("uri"), str)
            and isinstance(fields.get("state"), str)
            and isinstance(fields.setdefault("build_strategy", ""), str)
            and isinstance(fields.setdefault("base_uri", ""), str)
            and type(fields.get("version")) is int
        ):
            return fields
    except ValueError:
        pass
    raise StorageError(f"redis: key {key!r} does not hold a stored request")


def version_head(version: int) -> bytes:
    """How a queue's or build's value stored at ``version`` begins: ``{"version":<n>,``."""
    return b'{"version":%d,' % version


def encode_queue(queue: Queue, version: int) -> bytes:
    """The stored value of a queue at ``version``, without the name (the key has it).

    ``{"version":1,"latest_request_id":"","last_green_uri":"","last_green_request_id":"",
    "in_flight":0}``, the same bytes as ``json.dumps`` writes compactly.
    """
    return (
        f'{{"version":{version:d},"latest_request_id":{_json_string(queue.latest_request_id)},'
        f'"last_green_uri":{_json_string(queue.last_green_uri)},'
        f'"last_green_request_id":{_json_string(queue.last_green_request_id)},'
        f'"in_flight":{queue.in_flight:d}}}'
    ).encode()


BUILD_TAIL: Final = b',"request_id":'
"""Where the immutable part of a stored build begins: its ``request_id``, which comes last."""


def encode_build_head(status: str, log: str, version: int) -> bytes:
    """A build's stored value up to :data:`BUILD_TAIL`: the version and the mutable fields."""
    return (
        f'{{"version":{version:d},"status":{_json_string(status)},"log":{_json_string(log)}'
    ).encode()


def encode_build(request_id: str, status: str, log: str, version: int) -> bytes:
    """The stored value of a build, without the id (the key has it).

    ``{"version":1,"status":"accepted","log":"","request_id":"request/q/1"}``, the same bytes
    as ``json.dumps`` writes compactly. ``request_id`` comes last, so an update can keep it as
    stored: inside a JSON string every ``"`` is escaped, so :data:`BUILD_TAIL` occurs nowhere
    but before the ``request_id``.
    """
    return (
        encode_build_head(status, log, version)
        + BUILD_TAIL
        + f"{_json_string(request_id)}}}".encode()
    )


def encode_fact(degree: float, request_id: str, created_at: float) -> bytes:
    """The stored value of a fact, without its key's three parts.

    ``{"degree":0.0,"request_id":"request/q/1","created_at":1764439245.123456}``. The floats
    are written by ``float.__repr__`` (as ``json.dumps`` writes them), whose text always reads
    back as the very same float, ``-0.0`` included; an ``int`` is stored as its float.
    """
    return (
        f'{{"degree":{float.__repr__(float(degree))},"request_id":{_json_string(request_id)},'
        f'"created_at":{float.__repr__(float(created_at))}}}'
    ).encode()


_QUEUE_SHAPE: Final = (
    ("version", int),
    ("latest_request_id", str),
    ("last_green_uri", str),
    ("last_green_request_id", str),
    ("in_flight", int),
)
_BUILD_SHAPE: Final = (("version", int), ("status", str), ("log", str), ("request_id", str))
_FACT_SHAPE: Final = (("degree", float), ("request_id", str), ("created_at", float))


def _decode(key: bytes, value: bytes, what: str, shape: tuple[tuple[str, type], ...]) -> Any:
    """Parse a stored value whose fields have exactly the types of ``shape``; anything else
    under the key (a foreign value, a lost field) is a ``StorageError``."""
    try:
        fields = _decode_json(value.decode("utf-8"))
    except ValueError:
        fields = None
    if isinstance(fields, dict) and all(type(fields.get(name)) is kind for name, kind in shape):
        return fields
    raise StorageError(f"redis: key {key!r} does not hold a stored {what}")


class _Script:
    """A Lua script, sent by its SHA1 (``EVALSHA``) and by its body only when the server
    lacks it."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source.encode()
        self.sha = hashlib.sha1(self.source, usedforsecurity=False).hexdigest().encode()


COMPARE_AND_SET: Final = _Script(
    """\
-- Compare-and-set of a versioned value, atomic on the server. KEYS[1]: the key.
-- ARGV[1]: the head of the stored value at the expected version, '{"version":<old>,'.
-- ARGV[2]: the new value; or, when ARGV[3] is not empty, its new head, and ARGV[3] marks
-- where the stored value's immutable tail begins, kept as stored.
-- Returns 1 when written, 0 when the key is absent or at another version.
local stored = redis.call('GET', KEYS[1])
if not stored then
  return 0
end
if string.sub(stored, 1, #ARGV[1]) ~= ARGV[1] then
  if not string.find(stored, '^{"version":%d+,') then
    return redis.error_reply('the key does not hold a versioned value')
  end
  return 0
end
local value = ARGV[2]
if ARGV[3] ~= '' then
  local tail = string.find(stored, ARGV[3], #ARGV[1], true)
  if not tail then
    return redis.error_reply('the stored value lacks its immutable tail')
  end
  value = value .. string.sub(stored, tail)
end
redis.call('SET', KEYS[1], value)
return 1
"""
)
"""The one script of the queue and build updates; one ``EVALSHA``, one round trip."""


class _Connection(Protocol):
    """The part of ``redis.Connection`` used here, typed (redis-py leaves it unannotated)."""

    def send_command(self, *args: str | bytes) -> None: ...
    def pack_commands(self, commands: Iterable[Sequence[str | bytes]]) -> list[bytes]: ...
    def send_packed_command(self, command: list[bytes]) -> None: ...
    def read_response(self) -> Any: ...
    def disconnect(self) -> None: ...


class _Conflict(Exception):
    """An ``EXEC`` aborted because another writer changed the key after ``WATCH``."""


_RETRY_CONFLICTS: Final = tenacity.Retrying(
    retry=tenacity.retry_if_exception_type(_Conflict),
    # The first try, made before the policy is entered, counts too.
    stop=tenacity.stop_after_attempt(MAX_UPDATE_ATTEMPTS - 1),
    # A random while below an exponential cap ("full jitter"), so that racers which collided
    # spread out instead of colliding again: before try k (the first is try 0), below
    # 2**k times the base, up to the cap. Try 1 goes at once: of the two writers that
    # collided, the other one's EXEC went through. The policy's n-th failure is try n, and
    # tenacity's cap after it is multiplier * 2**(n - 1).
    wait=tenacity.wait_random_exponential(
        multiplier=4 * _CONFLICT_BACKOFF_SECONDS, max=_CONFLICT_BACKOFF_CAP_SECONDS
    ),
)
"""The retries of an update whose ``EXEC`` was aborted; copied per use (``copy``): a copy
keeps its own state."""


# Error replies of a server that cannot take writes for now: loading its data set, busy with
# a script, a replica or a primary without its replicas, out of memory, failing to persist.
_TRANSIENT_REPLIES: Final = frozenset(
    {"BUSY", "LOADING", "MASTERDOWN", "MISCONF", "NOREPLICAS", "OOM", "READONLY", "TRYAGAIN"}
)


def mapped_error(error: redis.exceptions.RedisError) -> StorageError:
    """Translate a redis-py error: connection trouble, timeouts and the replies of a server
    that cannot write for now are transient (``Unavailable``), the rest not.

    A refused password or a server certificate that fails verification arrive as connection
    errors too, but waiting will not fix them: they are plain ``StorageError``. The one
    mapping of this engine: the storage and the messaging queue both use it.
    """
    # redis-py strips the reply's code from the errors it has a class for; put it back.
    code: str | None = getattr(error, "status_code", None)
    text = f"{code} {error}" if code else str(error)
    if isinstance(
        error, redis.exceptions.AuthenticationError | redis.exceptions.AuthorizationError
    ):
        return StorageError(f"redis: access denied: {text}")
    if isinstance(error.__context__, ssl.SSLCertVerificationError):
        return StorageError(f"redis: {text}")
    if (
        isinstance(error, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError)
        or text.split(" ", 1)[0] in _TRANSIENT_REPLIES
    ):
        return Unavailable(f"redis: {text}")
    return StorageError(f"redis: {text}")


class _Commands:
    """Runs commands on connections borrowed from one thread-safe redis-py pool."""

    __slots__ = ("_pool",)

    def __init__(self, pool: redis.ConnectionPool) -> None:
        self._pool = pool

    def run(self, *command: str | bytes, script: _Script | None = None) -> Any:
        """Send one command and return its raw reply (one round trip).

        With ``script``, ``command`` is ``EVALSHA`` of that script. A server that lacks it
        (``NOSCRIPT``: restarted, failed over, its cache flushed) gets the same call again as
        ``EVAL`` with the script's body, which also caches it for the next ``EVALSHA``: a
        second round trip, once per server.
        """
        pool = self._pool
        try:
            pooled = pool.get_connection()
        except redis.exceptions.RedisError as error:
            raise mapped_error(error) from error
        connection: _Connection = pooled
        try:
            connection.send_command(*command)
            try:
                return connection.read_response()
            except redis.exceptions.NoScriptError:
                if script is None:
                    raise
            connection.send_command(b"EVAL", script.source, *command[2:])
            return connection.read_response()
        except redis.exceptions.RedisError as error:
            # read_response already dropped the socket on I/O errors; an error reply
            # leaves the connection in step with the server, fit for reuse.
            raise mapped_error(error) from error
        finally:
            pool.release(pooled)


def _create(commands: _Commands, key: bytes, value: bytes, what: str) -> None:
    """``SET NX``: store ``value`` under a new ``key``; ``AlreadyExists`` naming ``what``."""
    if commands.run("SET", key, value, "NX") is None:
        raise AlreadyExists(f"{what} exists")


def _read(commands: _Commands, key: bytes, what: str) -> bytes:
    """``GET``: the value under ``key``; ``NotFound`` naming ``what``."""
    value: bytes | None = commands.run("GET", key)
    if value is None:
        raise NotFound(what)
    return value


def _compare_and_set(
    commands: _Commands, key: bytes, old_version: int, head: bytes, tail: bytes, what: str
) -> None:
    """One round trip of :data:`COMPARE_AND_SET`: replace the value under ``key`` by ``head``
    and the stored value's immutable ``tail`` only if it is at ``old_version``; else
    ``VersionMismatch`` naming ``what``."""
    written = commands.run(
        "EVALSHA",
        COMPARE_AND_SET.sha,
        b"1",
        key,
        version_head(old_version),
        head,
        tail,
        script=COMPARE_AND_SET,
    )
    if not written:
        raise VersionMismatch(f"{what} is not at version {old_version}")


class RedisRequestStore:
    """Requests as JSON string values under ``<prefix>request:<id>``."""

    def __init__(self, pool: redis.ConnectionPool, commands: _Commands, keys: KeyLayout) -> None:
        self._pool = pool
        self._commands = commands
        self._keys = keys
        self._lock = threading.Lock()
        self._watch_conflicts = 0

    @property
    def watch_conflicts(self) -> int:
        """How many update attempts ``EXEC`` aborted because the key changed under ``WATCH``."""
        return self._watch_conflicts

    def create(self, request: Request) -> None:
        key = self._keys.request(request.id)
        value = encode_request(
            request.queue,
            request.uri,
            request.state,
            request.build_strategy,
            request.base_uri,
            request.version,
        )
        _create(self._commands, key, value, f"request {request.id!r}")

    def get(self, request_id: str) -> Request:
        key = self._keys.request(request_id)
        value = _read(self._commands, key, f"request {request_id!r}")
        fields = decode_request(key, value)
        return Request(
            id=request_id,
            queue=fields["queue"],
            uri=fields["uri"],
            state=limits.read_member(RequestState, fields["state"], "state", f"redis: key {key!r}"),
            version=fields["version"],
            build_strategy=limits.read_member(
                BuildStrategy, fields["build_strategy"], "build_strategy", f"redis: key {key!r}"
            ),
            base_uri=fields["base_uri"],
        )

    def update(self, request: Request, *, old_version: int, new_version: int) -> None:
        key = self._keys.request(request.id)
        pool = self._pool
        try:
            pooled = pool.get_connection()
        except redis.exceptions.RedisError as error:
            raise mapped_error(error) from error
        connection: _Connection = pooled
        try:
            watch_and_get = connection.pack_commands((("WATCH", key), ("GET", key)))
            attempt = functools.partial(
                self._try_update, connection, watch_and_get, request, old_version, new_version
            )
            try:
                attempt()
            except _Conflict:
                # Tried again under the policy: a conflict is rare, and the policy costs more
                # than a round trip, so the first try goes without it.
                try:
                    _RETRY_CONFLICTS.copy()(attempt)
                except tenacity.RetryError:
                    raise Unavailable(
                        f"redis: request {request.id!r} kept changing under WATCH; "
                        f"gave up after {MAX_UPDATE_ATTEMPTS} attempts"
                    ) from None
        except redis.exceptions.RedisError as error:
            connection.disconnect()
            raise mapped_error(error) from error
        except (VersionMismatch, Unavailable):
            raise  # raised here, after UNWATCH or an aborted EXEC: no WATCH is left behind
        except BaseException:
            # Anything else (a foreign value under the key, an interrupt) may leave a WATCH
            # or unread replies behind: drop the socket rather than hand it on.
            connection.disconnect()
            raise
        finally:
            pool.release(pooled)

    def _try_update(
        self,
        connection: _Connection,
        watch_and_get: list[bytes],
        request: Request,
        old_version: int,
        new_version: int,
    ) -> None:
        """One ``WATCH``, ``GET``, ``MULTI``/``SET``/``EXEC``: raises :class:`_Conflict` if
        another writer changed the key meanwhile (nothing written, no ``WATCH`` left)."""
        key = self._keys.request(request.id)
        connection.send_packed_command(watch_and_get)
        connection.read_response()  # OK
        stored = connection.read_response()
        fields = None if stored is None else decode_request(key, stored)
        if fields is None or fields["version"] != old_version:
            connection.send_command("UNWATCH")
            connection.read_response()
            raise VersionMismatch(f"request {request.id!r} is not at version {old_version}")
        # The queue is immutable: keep the stored one whatever the caller passed.
        value = encode_request(
            fields["queue"],
            request.uri,
            request.state,
            request.build_strategy,
            request.base_uri,
            new_version,
        )
        connection.send_packed_command(
            connection.pack_commands((("MULTI",), ("SET", key, value), ("EXEC",)))
        )
        connection.read_response()  # OK
        connection.read_response()  # QUEUED
        if connection.read_response() is None:
            # EXEC was aborted: someone wrote the key after WATCH. Re-read and decide.
            with self._lock:
                self._watch_conflicts += 1
            raise _Conflict


class RedisRequestURIStore:
    """``(queue, uri) -> id`` as string values under ``<prefix>request_uri:<n>:<queue>:<uri>``."""

    def __init__(self, commands: _Commands, keys: KeyLayout) -> None:
        self._commands = commands
        self._keys = keys

    def create(self, queue: str, uri: str, request_id: str) -> None:
        key = self._keys.request_uri(queue, uri)
        _create(self._commands, key, request_id.encode("utf-8"), f"uri {uri!r} of queue {queue!r}")

    def get_id_by_uri(self, queue: str, uri: str) -> str:
        key = self._keys.request_uri(queue, uri)
        value = _read(self._commands, key, f"uri {uri!r} of queue {queue!r}")
        try:
            request_id: str = value.decode("utf-8")
        except UnicodeDecodeError:
            raise StorageError(f"redis: key {key!r} does not hold a request id") from None
        return request_id


class RedisCounter:
    """Counters as integers under ``<prefix>counter:<domain>``, advanced by ``INCR``."""

    def __init__(self, commands: _Commands, keys: KeyLayout) -> None:
        self._commands = commands
        self._keys = keys

    def next(self, domain: str) -> int:
        value: int = self._commands.run("INCR", self._keys.counter(domain))
        return value


class RedisQueueStore:
    """Queues as JSON string values under ``<prefix>queue:<name>``."""

    def __init__(self, commands: _Commands, keys: KeyLayout) -> None:
        self._commands = commands
        self._keys = keys

    def create(self, queue: Queue) -> None:
        key = self._keys.queue(queue.name)
        _create(self._commands, key, encode_queue(queue, queue.version), f"queue {queue.name!r}")

    def get(self, name: str) -> Queue:
        key = self._keys.queue(name)
        fields = _decode(key, _read(self._commands, key, f"queue {name!r}"), "queue", _QUEUE_SHAPE)
        return Queue(
            name=name,
            latest_request_id=fields["latest_request_id"],
            last_green_uri=fields["last_green_uri"],
            last_green_request_id=fields["last_green_request_id"],
            in_flight=fields["in_flight"],
            version=fields["version"],
        )

    def update(self, queue: Queue, *, old_version: int, new_version: int) -> None:
        _compare_and_set(
            self._commands,
            self._keys.queue(queue.name),
            old_version,
            encode_queue(queue, new_version),
            b"",  # the name is the key: the whole value is mutable
            f"queue {queue.name!r}",
        )


class RedisBuildStore:
    """Builds as JSON string values under ``<prefix>build:<id>``."""

    def __init__(self, commands: _Commands, keys: KeyLayout) -> None:
        self._commands = commands
        self._keys = keys

    def create(self, build: Build) -> None:
        key = self._keys.build(build.id)
        value = encode_build(build.request_id, build.status, build.log, build.version)
        _create(self._commands, key, value, f"build {build.id!r}")

    def get(self, build_id: str) -> Build:
        key = self._keys.build(build_id)
        value = _read(self._commands, key, f"build {build_id!r}")
        fields = _decode(key, value, "build", _BUILD_SHAPE)
        return Build(
            id=build_id,
            request_id=fields["request_id"],
            status=limits.read_member(
                BuildStatus, fields["status"], "status", f"redis: key {key!r}"
            ),
            log=fields["log"],
            version=fields["version"],
        )

    def update(self, build: Build, *, old_version: int, new_version: int) -> None:
        _compare_and_set(
            self._commands,
            self._keys.build(build.id),
            old_version,
            encode_build_head(build.status, build.log, new_version),
            BUILD_TAIL,  # the request id is immutable: the script keeps the stored one
            f"build {build.id!r}",
        )


class RedisFactStore:
    """Facts as JSON string values under ``<prefix>fact:<n>:<queue>:<m>:<uri>:<k>:<project>``."""

    def __init__(self, commands: _Commands, keys: KeyLayout) -> None:
        self._commands = commands
        self._keys = keys

    def create(self, fact: Fact) -> None:
        key = self._keys.fact(fact.queue, fact.uri, fact.project)
        value = encode_fact(fact.degree, fact.request_id, fact.created_at)
        _create(self._commands, key, value, f"fact {(fact.queue, fact.uri, fact.project)!r}")

    def get(self, queue: str, uri: str, project: str) -> Fact:
        key = self._keys.fact(queue, uri, project)
        value = _read(self._commands, key, f"fact {(queue, uri, project)!r}")
        fields = _decode(key, value, "fact", _FACT_SHAPE)
        return Fact(
            queue=queue,
            uri=uri,
            project=project,
            degree=fields["degree"],
            request_id=fields["request_id"],
            created_at=fields["created_at"],
        )


class RedisBackend:
    """The six stores over one redis-py connection pool, shared by every thread."""

    # What the conformance suite holds it to (stovepipe.storage.Capability).
    capabilities = frozenset({"durable", "shared", "network"})

    def __init__(self, pool: redis.ConnectionPool, keys: KeyLayout) -> None:
        self._pool = pool
        self._commands = commands = _Commands(pool)
        self.requests = RedisRequestStore(pool, commands, keys)
        self.request_uris = RedisRequestURIStore(commands, keys)
        self.counter = RedisCounter(commands, keys)
        self.queues = RedisQueueStore(commands, keys)
        self.builds = RedisBuildStore(commands, keys)
        self.facts = RedisFactStore(commands, keys)

    def ping(self) -> None:
        """Check the server answers; ``Unavailable`` if it does not within the timeout."""
        self._commands.run("PING")

    def close(self) -> None:
        """Close every pooled connection. Idempotent."""
        self._pool.disconnect()
