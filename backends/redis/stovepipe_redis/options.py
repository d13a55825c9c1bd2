"""The ``redis://`` and ``rediss://`` URL: parsed once for the storage and the messaging queue.

URL: ``redis://[[user]:password@]host[:port][/db][?option=value&...]``. Options:

* ``timeout``: seconds (float, default 5) bounding connecting, each read and write, and the
  wait for a free pooled connection.
* ``prefix``: prepended to every key, so one database can hold several deployments or other
  data (the storage's default ``stovepipe:``, the messaging queue's ``stovepipe:mq:``).
* passed on to redis-py: ``db``, ``max_connections`` (pool size, default 50),
  ``health_check_interval``, ``socket_keepalive``, ``client_name``, and for ``rediss`` only
  ``ssl_cert_reqs``, ``ssl_ca_certs``, ``ssl_ca_path``, ``ssl_certfile``, ``ssl_keyfile``,
  ``ssl_password``, ``ssl_check_hostname``, ``ssl_min_version``.
"""

from __future__ import annotations

import dataclasses
import math
import urllib.parse
from collections.abc import Collection

import redis
import redis.retry
from redis.backoff import NoBackoff

DEFAULT_TIMEOUT = 5.0

TLS_OPTIONS = frozenset(
    {
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
"""Options of a ``rediss://`` URL that redis-py applies to its TLS connections."""

REDIS_PY_OPTIONS = (
    frozenset({"db", "max_connections", "health_check_interval", "socket_keepalive"})
    | frozenset({"client_name"})
    | TLS_OPTIONS
)


@dataclasses.dataclass(frozen=True)
class RedisOptions:
    """A parsed ``redis://`` or ``rediss://`` URL.

    ``prefix`` is ``None`` when the URL names none (each user has its default); ``extra``
    holds the options the caller allowed beyond these (e.g. the queue's ``shards``).
    """

    pool_url: str
    timeout: float
    prefix: str | None
    extra: dict[str, str]

    def connection_pool(self) -> redis.BlockingConnectionPool:
        """A new pool of connections as the URL says, every call bounded by ``timeout``."""
        return redis.BlockingConnectionPool.from_url(
            self.pool_url,
            timeout=self.timeout,  # waiting for a free connection
            socket_connect_timeout=self.timeout,
            socket_timeout=self.timeout,
            # No driver retries: a retried SET NX or INCR whose first try landed answers wrongly.
            retry=redis.retry.Retry(NoBackoff(), 0),
        )


def parse_url(url: str, extra: Collection[str] = ()) -> RedisOptions:
    """Parse a ``redis://`` or ``rediss://`` URL; raise ``ValueError`` if it is malformed, has
    an unknown or repeated option, or TLS options without ``rediss``."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"not a redis URL: {parts.scheme}://")
    if parts.path not in ("", "/") and not parts.path[1:].isdigit():
        raise ValueError(f"the path of a redis URL is a database number, not {parts.path!r}")
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    options = dict(query)
    if len(options) != len(query):
        raise ValueError("redis URL repeats an option")
    known = REDIS_PY_OPTIONS | {"timeout", "prefix"} | set(extra)
    unknown = set(options) - known
    if unknown:
        raise ValueError(
            f"unknown redis URL options: {', '.join(sorted(unknown))}; known: "
            f"{', '.join(sorted(known))}"
        )
    tls = set(options) & TLS_OPTIONS
    if tls and parts.scheme != "rediss":
        raise ValueError(f"redis URL options {', '.join(sorted(tls))} need rediss://")
    timeout = float(options.pop("timeout", DEFAULT_TIMEOUT))
    if not (timeout > 0 and math.isfinite(timeout)):
        raise ValueError(f"redis timeout must be a positive number of seconds, not {timeout}")
    prefix = options.pop("prefix", None)
    extras = {name: options.pop(name) for name in extra if name in options}
    pool_url = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(options)))
    return RedisOptions(pool_url, timeout, prefix, extras)
