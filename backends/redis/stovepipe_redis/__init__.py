"""``redis://`` and ``rediss://`` (TLS): Stovepipe's storage contract on Redis.

URL: ``redis://[[user]:password@]host[:port][/db][?option=value&...]``, parsed by redis-py.
Options:

* ``timeout``: seconds (float, default 5) bounding connecting, each read and write, and the
  wait for a free pooled connection; past it an operation raises ``Unavailable``.
* ``prefix``: prepended to every key (default ``stovepipe:``), so one database can hold
  several deployments or other data. The key layout is in :mod:`stovepipe_redis.keys`.
* passed on to redis-py: ``db``, ``max_connections`` (pool size, default 50),
  ``health_check_interval``, ``socket_keepalive``, ``client_name``, and for ``rediss``
  ``ssl_cert_reqs``, ``ssl_ca_certs``, ``ssl_ca_path``, ``ssl_certfile``, ``ssl_keyfile``,
  ``ssl_password``, ``ssl_check_hostname``, ``ssl_min_version``.

Opening pings the server, so a wrong address fails at once with ``Unavailable``.
"""

from __future__ import annotations

import math
import urllib.parse

import redis
import redis.retry
from redis.backoff import NoBackoff

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

__all__ = [
    "DEFAULT_PREFIX",
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

DEFAULT_TIMEOUT = 5.0

_REDIS_PY_OPTIONS = frozenset(
    {
        "db",
        "max_connections",
        "health_check_interval",
        "socket_keepalive",
        "client_name",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ca_path",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_password",
        "ssl_check_hostname",
        "ssl_min_version",
    }
)


def open_backend(url: str) -> RedisBackend:
    """Entry point for ``redis://`` and ``rediss://``: a pooled, pinged backend.

    Raises ``ValueError`` for a malformed URL or an unknown option, ``Unavailable`` if the
    server does not answer within the timeout.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"not a redis URL: {parts.scheme}://")
    if parts.path not in ("", "/") and not parts.path[1:].isdigit():
        raise ValueError(f"the path of a redis URL is a database number, not {parts.path!r}")
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    options = dict(query)
    if len(options) != len(query):
        raise ValueError("redis URL repeats an option")
    unknown = set(options) - _REDIS_PY_OPTIONS - {"timeout", "prefix"}
    if unknown:
        raise ValueError(
            f"unknown redis URL options: {', '.join(sorted(unknown))}; known: "
            f"{', '.join(sorted(_REDIS_PY_OPTIONS | {'timeout', 'prefix'}))}"
        )
    timeout = float(options.pop("timeout", DEFAULT_TIMEOUT))
    if not (timeout > 0 and math.isfinite(timeout)):
        raise ValueError(f"redis timeout must be a positive number of seconds, not {timeout}")
    keys = KeyLayout(options.pop("prefix", DEFAULT_PREFIX))

    pool = redis.BlockingConnectionPool.from_url(
        urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(options))),
        timeout=timeout,  # waiting for a free connection
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        # No driver retries: a retried SET NX or INCR whose first try landed answers wrongly.
        retry=redis.retry.Retry(NoBackoff(), 0),
    )
    backend = RedisBackend(pool, keys)
    try:
        backend.ping()
    except BaseException:
        backend.close()
        raise
    return backend
