"""``redis://`` and ``rediss://`` (TLS): Stovepipe's storage contract on Redis.

URL: ``redis://[[user]:password@]host[:port][/db][?option=value&...]``; its options are in
:mod:`stovepipe_redis.options` (``timeout``, ``prefix``, TLS and redis-py's), shared with the
messaging queue (:mod:`stovepipe_redis.messaging`). Past ``timeout`` an operation raises
``Unavailable``. The key layout is in :mod:`stovepipe_redis.keys` (default prefix
``stovepipe:``).

Opening pings the server, so a wrong address fails at once with ``Unavailable``.
"""

from __future__ import annotations

from stovepipe_redis.backend import (
    MAX_UPDATE_ATTEMPTS,
    RedisBackend,
    RedisBuildStore,
    RedisCounter,
    RedisFactStore,
    RedisQueueStore,
    RedisRequestStore,
    RedisRequestURIStore,
)
from stovepipe_redis.keys import DEFAULT_PREFIX, KeyLayout
from stovepipe_redis.options import DEFAULT_TIMEOUT, parse_url

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_TIMEOUT",
    "MAX_UPDATE_ATTEMPTS",
    "KeyLayout",
    "RedisBackend",
    "RedisBuildStore",
    "RedisCounter",
    "RedisFactStore",
    "RedisQueueStore",
    "RedisRequestStore",
    "RedisRequestURIStore",
    "open_backend",
]


def open_backend(url: str) -> RedisBackend:
    """Entry point for ``redis://`` and ``rediss://``: a pooled, pinged backend.

    Raises ``ValueError`` for a malformed URL or an unknown option, ``Unavailable`` if the
    server does not answer within the timeout.
    """
    options = parse_url(url)
    keys = KeyLayout(DEFAULT_PREFIX if options.prefix is None else options.prefix)
    backend = RedisBackend(options.connection_pool(), keys)
    try:
        backend.ping()
    except BaseException:
        backend.close()
        raise
    return backend
