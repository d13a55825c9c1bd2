"""The ``redis://`` and ``rediss://`` (TLS) URL: where the server is, and how to talk to it.

``redis://[[user]:password@]host[:port][/db][?option=value&...]``. Options, read by
:mod:`stovepipe.urloptions` (each at most once, unknown ones refused):

* ``timeout``: seconds (default 5) bounding connecting, each read and write, and the wait for
  a free pooled connection.
* ``prefix``: prepended to every key (default ``stovepipe:``).
* passed on to redis-py after a check of their type: ``db``, ``max_connections`` (pool size,
  default 50), ``health_check_interval``, ``socket_keepalive``, ``client_name``, and for TLS
  the :data:`TLS_OPTIONS` (``rediss://`` only: on a ``redis://`` URL they are refused).
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from typing import Final

from stovepipe.redaction import redact
from stovepipe.urloptions import URLOptions
from stovepipe_redis.keys import DEFAULT_PREFIX

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
"""Options redis-py applies to its TLS connections (``rediss://``)."""

DRIVER_OPTIONS: Final = frozenset(
    {"db", "max_connections", "health_check_interval", "socket_keepalive", "client_name"}
    | TLS_OPTIONS
)
"""Options handed to redis-py as written, once their type is checked."""

OPTIONS: Final = DRIVER_OPTIONS | {"timeout", "prefix"}


@dataclasses.dataclass(frozen=True)
class RedisOptions:
    """A parsed Redis URL: ``driver_url`` is what redis-py opens (the URL with only the
    :data:`DRIVER_OPTIONS` it gave), ``timeout`` is in seconds, ``prefix`` starts every key."""

    driver_url: str
    timeout: float = DEFAULT_TIMEOUT
    prefix: str = DEFAULT_PREFIX


def parse_url(url: str) -> RedisOptions:
    """Parse a ``redis://`` or ``rediss://`` URL; raise ``ValueError`` with one line (the URL
    redacted) if it is malformed or an option is unknown, repeated or of the wrong type."""
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
    options = URLOptions(url, "redis", OPTIONS)
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
        driver_url=urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(driver))),
        timeout=options.seconds("timeout", DEFAULT_TIMEOUT),
        prefix=options.text("prefix", DEFAULT_PREFIX),
    )
