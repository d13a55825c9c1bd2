"""Open a messaging queue by URL.

=================================  ====================================================
URL                                queue
=================================  ====================================================
``memory://`` (or none)            in this process only (:mod:`.inprocess`)
``sqlite:///path/to/file.db``      SQL tables in a SQLite file (:mod:`.sqlqueue`)
``mysql://user:pw@host:port/db``   SQL tables in MySQL or MariaDB (:mod:`.sqlqueue`, PyMySQL)
``redis://host:port/db``           Redis Streams (:mod:`.redis_streams`, redis-py)
``rediss://host:port/db``          the same over TLS (redis-py's ``ssl_*`` options apply)
=================================  ====================================================

Query options follow :mod:`stovepipe.urloptions` (each at most once, unknown ones refused,
seconds finite and above 0). Every URL takes these: ``max_attempts`` (deliveries of one message
before it is dead-lettered, default 5), ``backoff`` (seconds before the first retry, doubling
after each, default 0.1), ``max_backoff`` (default 30), ``workers`` (handler threads, default
4). The durable queues also take ``visibility_timeout`` (seconds a delivery stays leased
without a renewal, default 30), ``poll_interval`` (seconds an idle worker waits before asking
again, default 0.1) and ``timeout`` (seconds bounding every call to the server, default 5);
Redis takes ``shards`` (default 16, the same in every process) and ``prefix`` (of every key
name, default ``stovepipe:mq:``).
"""

from __future__ import annotations

import urllib.parse
from types import ModuleType
from typing import Final, Protocol

from prometheus_client import CollectorRegistry

from stovepipe.messaging import brokered
from stovepipe.messaging.contract import Messaging
from stovepipe.messaging.inprocess import DeadLetter, InProcessMessaging
from stovepipe.messaging.metrics import MessagingMetrics
from stovepipe.redaction import redact
from stovepipe.storage import sqlite
from stovepipe.urloptions import URLOptions

MESSAGING_URL_ENV: Final = "STOVEPIPE_MESSAGING_URL"
SCHEMES: Final = ("memory", "sqlite", "mysql", "redis", "rediss")
_DURABLE_OPTIONS: Final = ("visibility_timeout", "poll_interval")


class InspectableMessaging(Messaging, Protocol):
    """A messaging queue whose dead letters can be read back."""

    def dead_letters(self, topic: str) -> list[DeadLetter]:
        """The messages of ``topic`` that failed for good, oldest first."""
        ...


def open_messaging(
    url: str | None, *, registry: CollectorRegistry | None = None
) -> InspectableMessaging:
    """Open (not start) the messaging queue ``url`` names; ``None`` or ``""`` is in-process.

    The durable queues register their metrics in ``registry`` (see :mod:`.metrics`). Raises
    ``ValueError`` for a malformed URL or an unknown scheme or option, and
    :class:`~stovepipe.messaging.brokered.MessagingUnavailable` if the server cannot be
    reached.
    """
    url = url or "memory://"
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme
    if scheme not in SCHEMES:
        raise ValueError(
            f"unknown messaging queue URL scheme {scheme!r} in {redact(url)!r}: use one of "
            + ", ".join(f"{s}://" for s in SCHEMES)
        )
    options = URLOptions(url, f"{scheme} messaging", _options_of(scheme))
    max_attempts = options.integer("max_attempts", brokered.DEFAULT_MAX_ATTEMPTS, minimum=1)
    backoff = options.number("backoff", brokered.DEFAULT_BACKOFF_SECONDS, minimum=0.0)
    max_backoff = options.number("max_backoff", brokered.DEFAULT_MAX_BACKOFF_SECONDS, minimum=0.0)
    workers = options.integer("workers", brokered.DEFAULT_WORKERS, minimum=1)
    if scheme == "memory":
        if parts.netloc or parts.path:
            raise ValueError(f"memory:// takes no host or path: {redact(url)!r}")
        return InProcessMessaging(
            max_attempts=max_attempts,
            backoff_seconds=backoff,
            max_backoff_seconds=max_backoff,
            workers=workers,
        )
    if scheme == "sqlite":
        sqlite.parse_url(url.split("?", 1)[0])  # the file's form: sqlite:///path
    visibility_timeout = options.seconds("visibility_timeout", brokered.DEFAULT_VISIBILITY_TIMEOUT)
    poll_interval = options.seconds("poll_interval", brokered.DEFAULT_POLL_INTERVAL)
    # Checked here; the broker reads them again from the URL it is given.
    options.seconds("timeout", 5.0)
    options.integer("shards", 1, minimum=1)
    broker_options = {
        name: value
        for name, value in options.given.items()
        if name not in _DURABLE_CONSUMER_OPTIONS
    }
    broker_url = with_query(url, urllib.parse.urlencode(broker_options))
    broker: brokered.Broker
    if scheme in ("redis", "rediss"):
        broker = _redis_streams(scheme).redis_broker(
            broker_url, visibility_timeout=visibility_timeout
        )
    elif scheme == "mysql":
        from stovepipe.messaging.sqlqueue import mysql_broker

        broker = mysql_broker(broker_url, visibility_timeout=visibility_timeout)
    else:
        from stovepipe.messaging.sqlqueue import sqlite_broker

        broker = sqlite_broker(broker_url, visibility_timeout=visibility_timeout)
    try:
        return brokered.BrokeredMessaging(
            broker,
            max_attempts=max_attempts,
            backoff_seconds=backoff,
            max_backoff_seconds=max_backoff,
            workers=workers,
            poll_interval=poll_interval,
            renew_interval=visibility_timeout / 3,
            metrics=MessagingMetrics(registry),
        )
    except BaseException:
        broker.close()
        raise


_CONSUMER_OPTIONS: Final = frozenset({"max_attempts", "backoff", "max_backoff", "workers"})
_DURABLE_CONSUMER_OPTIONS: Final = _CONSUMER_OPTIONS | {"visibility_timeout", "poll_interval"}
# The brokers' own options, by scheme; rediss:// also takes redis-py's TLS options.
_BROKER_OPTIONS: Final = {
    "memory": frozenset[str](),
    "sqlite": frozenset({"timeout"}),
    "mysql": frozenset({"timeout"}),
    "redis": frozenset({"timeout", "shards", "prefix"}),
    "rediss": frozenset({"timeout", "shards", "prefix"}),
}


def _options_of(scheme: str) -> frozenset[str]:
    """Every query option a messaging URL of ``scheme`` takes."""
    if scheme == "memory":
        return _CONSUMER_OPTIONS
    tls = _redis_streams(scheme).TLS_OPTIONS if scheme == "rediss" else ()
    return _DURABLE_CONSUMER_OPTIONS | _BROKER_OPTIONS[scheme] | frozenset(tls)


def _redis_streams(scheme: str) -> ModuleType:
    """:mod:`.redis_streams`, or a ``ValueError`` saying how to install redis-py."""
    try:
        from stovepipe.messaging import redis_streams
    except ImportError:
        raise ValueError(
            f"{scheme}:// queues need redis-py: pip install 'stovepipe[redis]' (or stovepipe-redis)"
        ) from None
    return redis_streams


def default_messaging_url(storage_url: str) -> str:
    """The messaging queue that goes with a storage backend: the same SQLite file, MySQL
    database or Redis server (over TLS for ``rediss://``) where the backend is one of those,
    else in-process."""
    parts = urllib.parse.urlsplit(storage_url)
    if parts.scheme not in ("sqlite", "mysql", "redis", "rediss"):
        return "memory://"
    # Only the connection's options carry over (its timeout and, for rediss://, its TLS
    # settings); the others are the backend's own.
    options = urllib.parse.parse_qsl(parts.query)
    kept = urllib.parse.urlencode(
        [
            (name, value)
            for name, value in options
            if name == "timeout" or (parts.scheme == "rediss" and name.startswith("ssl_"))
        ]
    )
    return with_query(storage_url, kept)


def with_query(url: str, query: str) -> str:
    """``url`` with its query replaced (string surgery: ``urlunsplit`` would turn
    ``sqlite:////abs/path`` into ``sqlite://abs/path``)."""
    base = url.split("?", 1)[0].split("#", 1)[0]
    return f"{base}?{query}" if query else base
