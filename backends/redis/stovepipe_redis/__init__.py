"""``redis://`` and ``rediss://`` (TLS): Stovepipe's storage contract on Redis.

URL: ``redis://[[user]:password@]host[:port][/db][?option=value&...]``, parsed by
:mod:`stovepipe_redis.options`. Options:

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
    keys = KeyLayout(options.prefix)
    timeout = options.timeout
    pool = redis.BlockingConnectionPool.from_url(
        options.driver_url,
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
