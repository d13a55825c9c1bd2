"""The three stores on Redis, each operation one key and the fewest round trips Redis allows.

* ``requests.create``: ``SET key value NX`` (1 round trip).
* ``requests.get``: ``GET key`` (1).
* ``requests.update``: ``WATCH key`` + ``GET key`` pipelined, then ``MULTI`` + ``SET`` +
  ``EXEC`` pipelined (2). ``EXEC`` answers nil when the key changed after ``WATCH``; the
  update then starts over, re-reading the version: if it is no longer ``old_version`` that
  is a real ``VersionMismatch`` (never retried), otherwise the write is tried again, at most
  :data:`MAX_UPDATE_ATTEMPTS` times in all. A mismatch costs ``UNWATCH`` (2 round trips).
* ``request_uris.create``: ``SET key id NX`` (1); ``get_id_by_uri``: ``GET key`` (1).
* ``counter.next``: ``INCR key`` (1).

Commands go straight to a pooled redis-py connection. The driver never retries on its own:
a retried ``SET NX`` or ``INCR`` whose first attempt did land would answer wrongly.
"""

from __future__ import annotations

import json
import json.encoder
import random
import ssl
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any, Final, Protocol

import redis
import redis.exceptions

from stovepipe.entity import Request, RequestState
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


def encode_request(queue: str, uri: str, state: str, version: int) -> bytes:
    """The stored value of a request: compact UTF-8 JSON without the id (the key has it).

    ``{"queue":"monorepo/main","uri":"git://...","state":"accepted","version":1}``, the same
    bytes as ``json.dumps(fields, ensure_ascii=False, separators=(",", ":"))``.
    """
    return (
        f'{{"queue":{_json_string(queue)},"uri":{_json_string(uri)},'
        f'"state":{_json_string(state)},"version":{version:d}}}'
    ).encode()


def decode_request(key: bytes, value: bytes) -> dict[str, Any]:
    """Parse a stored request value; anything else under the key is a ``StorageError``."""
    try:
        fields = _decode_json(value.decode("utf-8"))
        if (
            isinstance(fields, dict)
            and isinstance(fields.get("queue"), str)
            and isinstance(fields.get("uri"), str)
            and isinstance(fields.get("state"), str)
            and type(fields.get("version")) is int
        ):
            return fields
    except ValueError:
        pass
    raise StorageError(f"redis: key {key!r} does not hold a stored request")


class _Connection(Protocol):
    """The part of ``redis.Connection`` used here, typed (redis-py leaves it unannotated)."""

    def send_command(self, *args: str | bytes) -> None: ...
    def pack_commands(self, commands: Iterable[Sequence[str | bytes]]) -> list[bytes]: ...
    def send_packed_command(self, command: list[bytes]) -> None: ...
    def read_response(self) -> Any: ...
    def disconnect(self) -> None: ...


def _pause_after_conflict(attempt: int) -> None:
    """Sleep a random while below an exponential cap ("full jitter"), so that racers which
    collided spread out instead of colliding again."""
    cap = min(_CONFLICT_BACKOFF_CAP_SECONDS, _CONFLICT_BACKOFF_SECONDS * 2**attempt)
    time.sleep(random.uniform(0, cap))


def _mapped(error: redis.exceptions.RedisError) -> StorageError:
    """Translate a redis-py error: connection trouble and timeouts are transient, the rest not.

    A refused password or a server certificate that fails verification arrive as connection
    errors too, but waiting will not fix them: they are plain ``StorageError``.
    """
    if isinstance(
        error, redis.exceptions.AuthenticationError | redis.exceptions.AuthorizationError
    ) or isinstance(error.__context__, ssl.SSLCertVerificationError):
        return StorageError(f"redis: {error}")
    if isinstance(error, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return Unavailable(f"redis: {error}")
    return StorageError(f"redis: {error}")


class _Commands:
    """Runs commands on connections borrowed from one thread-safe redis-py pool."""

    __slots__ = ("_pool",)

    def __init__(self, pool: redis.ConnectionPool) -> None:
        self._pool = pool

    def run(self, *command: str | bytes) -> Any:
        """Send one command and return its raw reply (one round trip)."""
        pool = self._pool
        try:
            pooled = pool.get_connection()
        except redis.exceptions.RedisError as error:
            raise _mapped(error) from None
        connection: _Connection = pooled
        try:
            connection.send_command(*command)
            return connection.read_response()
        except redis.exceptions.RedisError as error:
            # read_response already dropped the socket on I/O errors; an error reply
            # leaves the connection in step with the server, fit for reuse.
            raise _mapped(error) from None
        finally:
            pool.release(pooled)


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
        value = encode_request(request.queue, request.uri, request.state, request.version)
        if self._commands.run("SET", key, value, "NX") is None:
            raise AlreadyExists(f"request {request.id!r} exists")

    def get(self, request_id: str) -> Request:
        key = self._keys.request(request_id)
        value = self._commands.run("GET", key)
        if value is None:
            raise NotFound(f"request {request_id!r}")
        fields = decode_request(key, value)
        try:
            state = RequestState(fields["state"])
        except ValueError:
            raise StorageError(f"redis: key {key!r} holds an unknown state") from None
        return Request(
            id=request_id,
            queue=fields["queue"],
            uri=fields["uri"],
            state=state,
            version=fields["version"],
        )

    def update(self, request: Request, *, old_version: int, new_version: int) -> None:
        key = self._keys.request(request.id)
        pool = self._pool
        try:
            pooled = pool.get_connection()
        except redis.exceptions.RedisError as error:
            raise _mapped(error) from None
        connection: _Connection = pooled
        try:
            watch_and_get = connection.pack_commands((("WATCH", key), ("GET", key)))
            for attempt in range(MAX_UPDATE_ATTEMPTS):
                if attempt:
                    _pause_after_conflict(attempt)
                connection.send_packed_command(watch_and_get)
                connection.read_response()  # OK
                stored = connection.read_response()
                fields = None if stored is None else decode_request(key, stored)
                if fields is None or fields["version"] != old_version:
                    connection.send_command("UNWATCH")
                    connection.read_response()
                    raise VersionMismatch(f"request {request.id!r} is not at version {old_version}")
                # The queue is immutable: keep the stored one whatever the caller passed.
                value = encode_request(fields["queue"], request.uri, request.state, new_version)
                connection.send_packed_command(
                    connection.pack_commands((("MULTI",), ("SET", key, value), ("EXEC",)))
                )
                connection.read_response()  # OK
                connection.read_response()  # QUEUED
                if connection.read_response() is not None:
                    return
                # EXEC was aborted: someone wrote the key after WATCH. Re-read and decide.
                with self._lock:
                    self._watch_conflicts += 1
            raise Unavailable(
                f"redis: request {request.id!r} kept changing under WATCH; "
                f"gave up after {MAX_UPDATE_ATTEMPTS} attempts"
            )
        except redis.exceptions.RedisError as error:
            connection.disconnect()
            raise _mapped(error) from None
        except (VersionMismatch, Unavailable):
            raise  # raised here, after UNWATCH or an aborted EXEC: no WATCH is left behind
        except BaseException:
            # Anything else (a foreign value under the key, an interrupt) may leave a WATCH
            # or unread replies behind: drop the socket rather than hand it on.
            connection.disconnect()
            raise
        finally:
            pool.release(pooled)


class RedisRequestURIStore:
    """``(queue, uri) -> id`` as string values under ``<prefix>request_uri:<n>:<queue>:<uri>``."""

    def __init__(self, commands: _Commands, keys: KeyLayout) -> None:
        self._commands = commands
        self._keys = keys

    def create(self, queue: str, uri: str, request_id: str) -> None:
        key = self._keys.request_uri(queue, uri)
        if self._commands.run("SET", key, request_id.encode("utf-8"), "NX") is None:
            raise AlreadyExists(f"uri {uri!r} of queue {queue!r} is mapped")

    def get_id_by_uri(self, queue: str, uri: str) -> str:
        key = self._keys.request_uri(queue, uri)
        value = self._commands.run("GET", key)
        if value is None:
            raise NotFound(f"uri {uri!r} of queue {queue!r}")
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


class RedisBackend:
    """The three stores over one redis-py connection pool, shared by every thread."""

    def __init__(self, pool: redis.ConnectionPool, keys: KeyLayout) -> None:
        self._pool = pool
        self._commands = commands = _Commands(pool)
        self.requests = RedisRequestStore(pool, commands, keys)
        self.request_uris = RedisRequestURIStore(commands, keys)
        self.counter = RedisCounter(commands, keys)

    def ping(self) -> None:
        """Check the server answers; ``Unavailable`` if it does not within the timeout."""
        self._commands.run("PING")

    def close(self) -> None:
        """Close every pooled connection. Idempotent."""
        self._pool.disconnect()
