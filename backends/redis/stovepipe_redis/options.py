"""The ``redis://`` and ``rediss://`` URL: parsed once, for the storage and the messaging queue.

``redis://[[user]:password@]host[:port][/db][?option=value&...]``. Options, read by
:mod:`stovepipe.urloptions` (each at most once, unknown ones refused):

* ``timeout``: seconds (default 5) bounding connecting, each read and write, and the wait for
  a free pooled connection.
* ``prefix``: prepended to every key, so one database can hold several deployments or other
  data (the storage's default ``stovepipe:``, the messaging queue's ``stovepipe:mq:``).
* passed on to redis-py after a check of their type: ``db``, ``max_connections`` (pool size,
  default 50), ``health_check_interval``, ``socket_keepalive``, ``client_name``, and for TLS
  the :data:`TLS_OPTIONS` (``rediss://`` only: on a ``redis://`` URL they are refused).
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Collection
from typing import Final

import redis
import redis.retry
from redis.backoff import NoBackoff

from stovepipe.redaction import redact
from stovepipe.urloptions import URLOptions

DEFAULT_TIMEOUT: Final = 5.0

TLS_OPTIONS: Final = frozenset(
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
"""Options redis-py applies to its TLS connections (``rediss://`` only)."""

DRIVER_OPTIONS: Final = frozenset(
    {"db", "max_connections", "health_check_interval", "socket_keepalive", "client_name"}
    | TLS_OPTIONS
)
"""Options handed to redis-py as written, once their type is checked."""

OPTIONS: Final = DRIVER_OPTIONS | {"timeout", "prefix"}


@dataclasses.dataclass(frozen=True)
class RedisOptions:
    """A parsed ``redis://`` or ``rediss://`` URL.

    ``pool_url`` is what redis-py opens (the URL with only the :data:`DRIVER_OPTIONS` it gave);
    ``timeout`` is in seconds; ``prefix`` is ``None`` when the URL names none (each user has
    its default); ``extra`` holds the options the caller allowed beyond these (e.g. the
    queue's ``shards``), as written.
    """

    pool_url: str
    timeout: float = DEFAULT_TIMEOUT
    prefix: str | None = None
    extra: dict[str, str] = dataclasses.field(default_factory=dict)

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
    """Parse a ``redis://`` or ``rediss://`` URL, allowing the options in ``extra`` too.

    Raises ``ValueError`` with one line (the URL redacted) if it is malformed, an option is
    unknown, repeated or of the wrong type, or a TLS option is given without ``rediss://``.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"not a redis URL: {parts.scheme}://")
    if parts.path not in ("", "/") and not parts.path[1:].isdigit():
        raise ValueError(
            f"redis URL {redact(url)}: the path is a database number, not {parts.path!r}"
        )
    try:
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError:
        raise ValueError(f"redis URL {redact(url)} has an invalid port") from None
    options = URLOptions(url, "redis", OPTIONS | set(extra))
    if parts.scheme == "redis":
        # redis-py would hand them to a plain connection, which fails with a TypeError.
        tls = sorted(TLS_OPTIONS & set(options.given))
        if tls:
            raise ValueError(f"redis URL {redact(url)}: {tls[0]} is a TLS option: use rediss://")
    # Checked here, so that a typo fails with our message rather than deep in redis-py.
    options.integer("db", 0, minimum=0)
    options.integer("max_connections", 1, minimum=1)
    options.number("health_check_interval", 0.0, minimum=0.0)
    options.boolean("socket_keepalive", False)
    options.boolean("ssl_check_hostname", False)
    driver = {name: value for name, value in options.given.items() if name in DRIVER_OPTIONS}
    return RedisOptions(
        pool_url=urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(driver))),
        timeout=options.seconds("timeout", DEFAULT_TIMEOUT),
        prefix=options.optional_text("prefix"),
        extra={name: value for name, value in options.given.items() if name in extra},
    )
