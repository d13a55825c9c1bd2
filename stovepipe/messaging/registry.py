"""Open a messaging queue by URL.

=================================  ====================================================
URL                                queue
=================================  ====================================================
``memory://`` (or none)            in this process only (:mod:`.inprocess`)
``sqlite:///path/to/file.db``      SQL tables in a SQLite file (:mod:`.sqlqueue`)
``mysql://user:pw@host:port/db``   SQL tables in MySQL or MariaDB (``stovepipe_mysql.messaging``,
                                   the MySQL backend's distribution; its URL options)
``redis://host:port/db``           Redis Streams (``stovepipe_redis.messaging``, the Redis
                                   backend's distribution; its URL options)
``rediss://host:port/db``          the same over TLS (its ``ssl_*`` options apply)
=================================  ====================================================

Every scheme but ``memory`` is an engine registered under the entry-point group
:data:`ENTRY_POINT_GROUP` (``stovepipe.messaging``), named by the scheme: a third party adds
one by registering a :class:`BrokerOpener` there.

Query options follow :mod:`stovepipe.urloptions` (each at most once, unknown ones refused,
seconds finite and above 0). Every URL takes these: ``max_attempts`` (deliveries of one message
before it is dead-lettered, default 5), ``backoff`` (seconds before the first retry, doubling
after each, default 0.1), ``max_backoff`` (default 30), ``workers`` (handler threads, default
4), ``transient_retry`` (seconds a message whose handler meets transient faults is retried
without counting attempts, default 3600). The durable queues also take ``visibility_timeout``
(seconds a delivery stays leased without a renewal, default 30) and ``poll_interval`` (seconds
an idle worker waits before asking again, default 0.1). Every other option belongs to the
engine, which reads it with its storage sibling's parser: ``timeout`` (seconds bounding every
call to the server, default 5), TLS, and on Redis ``shards`` (default 16, the same in every
process) and ``prefix`` (of every key name, default ``stovepipe:mq:``).
"""

from __future__ import annotations

import importlib.metadata
import urllib.parse
from typing import Final, Protocol

from prometheus_client import CollectorRegistry

from stovepipe.messaging import brokered
from stovepipe.messaging.contract import Messaging
from stovepipe.messaging.inprocess import DeadLetter, InProcessMessaging
from stovepipe.messaging.metrics import MessagingMetrics
from stovepipe.redaction import redact
from stovepipe.urloptions import URLOptions

MESSAGING_URL_ENV: Final = "STOVEPIPE_MESSAGING_URL"
ENTRY_POINT_GROUP: Final = "stovepipe.messaging"
"""Where messaging engines register a :class:`BrokerOpener`, named by URL scheme, as storage
backends register under ``stovepipe.storage``."""


class InspectableMessaging(Messaging, Protocol):
    """A messaging queue whose dead letters can be read back."""

    def dead_letters(self, topic: str) -> list[DeadLetter]:
        """The messages of ``topic`` that failed for good, oldest first."""
        ...

    def backlog(self, topic: str) -> int:
        """Messages of ``topic`` published and not yet acknowledged or dead-lettered."""
        ...


def open_messaging(
    url: str | None, *, registry: CollectorRegistry | None = None
) -> InspectableMessaging:
    """Open (not start) the messaging queue ``url`` names; ``None`` or ``""`` is in-process.

    Every queue, the in-process one included, registers its metrics in ``registry`` (see
    :mod:`.metrics`). Raises ``ValueError`` for a malformed URL or an unknown scheme or option,
    :class:`~stovepipe.messaging.MessagingUnavailable` if the engine cannot be reached and
    :class:`~stovepipe.messaging.MessagingError` if it refuses.
    """
    url = url or "memory://"
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme
    if scheme != "memory" and not _entry_points(scheme):
        raise ValueError(
            f"unknown messaging queue URL scheme {scheme!r} in {redact(url)!r}: use one of "
            + ", ".join(f"{s}://" for s in installed_schemes())
        )
    # The consumer's options are read here; every other one is the engine's, which its
    # opener reads (and refuses when unknown) with its storage sibling's parser.
    consumer = _CONSUMER_OPTIONS if scheme == "memory" else _DURABLE_CONSUMER_OPTIONS
    names = {name for name, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)}
    engine_names = frozenset() if scheme == "memory" else names - consumer
    options = URLOptions(url, f"{scheme} messaging", consumer | engine_names)
    max_attempts = options.integer("max_attempts", brokered.DEFAULT_MAX_ATTEMPTS, minimum=1)
    backoff = options.number("backoff", brokered.DEFAULT_BACKOFF_SECONDS, minimum=0.0)
    max_backoff = options.number("max_backoff", brokered.DEFAULT_MAX_BACKOFF_SECONDS, minimum=0.0)
    workers = options.integer("workers", brokered.DEFAULT_WORKERS, minimum=1)
    transient_retry = options.seconds("transient_retry", brokered.DEFAULT_TRANSIENT_RETRY_SECONDS)
    if scheme == "memory":
        if parts.netloc or parts.path:
            raise ValueError(f"memory:// takes no host or path: {redact(url)!r}")
        return InProcessMessaging(
            max_attempts=max_attempts,
            backoff_seconds=backoff,
            max_backoff_seconds=max_backoff,
            workers=workers,
            metrics=MessagingMetrics(registry),
            transient_retry_seconds=transient_retry,
        )
    visibility_timeout = options.seconds("visibility_timeout", brokered.DEFAULT_VISIBILITY_TIMEOUT)
    poll_interval = options.seconds("poll_interval", brokered.DEFAULT_POLL_INTERVAL)
    engine_options = {name: value for name, value in options.given.items() if name in engine_names}
    broker_url = with_query(url, urllib.parse.urlencode(engine_options))
    broker = open_broker(broker_url, visibility_timeout=visibility_timeout)
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
            transient_retry_seconds=transient_retry,
        )
    except BaseException:
        broker.close()
        raise


_CONSUMER_OPTIONS: Final = frozenset(
    {"max_attempts", "backoff", "max_backoff", "workers", "transient_retry"}
)
_DURABLE_CONSUMER_OPTIONS: Final = _CONSUMER_OPTIONS | {"visibility_timeout", "poll_interval"}


class BrokerOpener(Protocol):
    """What a messaging engine registers under :data:`ENTRY_POINT_GROUP`, named by its URL
    scheme: opens its broker for the URL (its own options only; the consumer's are taken
    out), raising ``ValueError`` for a malformed URL and the messaging contract's errors."""

    def __call__(self, url: str, *, visibility_timeout: float) -> brokered.Broker: ...


def installed_schemes() -> list[str]:
    """The URL schemes of every messaging engine: ``memory`` and the registered ones."""
    registered = {ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(registered | {"memory"})


def _entry_points(scheme: str) -> importlib.metadata.EntryPoints:
    return importlib.metadata.entry_points(group=ENTRY_POINT_GROUP, name=scheme)


def open_broker(url: str, *, visibility_timeout: float) -> brokered.Broker:
    """The broker of the engine registered for ``url``'s scheme, opened on ``url``.

    Raises ``ValueError`` for a scheme no installed engine serves (or whose driver is
    missing), else what the engine's opener raises.
    """
    scheme = urllib.parse.urlsplit(url).scheme
    matches = _entry_points(scheme)
    if not matches:
        raise ValueError(f"no messaging engine serves {scheme}://")
    try:
        opener: BrokerOpener = next(iter(matches)).load()
    except ImportError as error:
        raise ValueError(
            f"the {scheme}:// messaging engine cannot be loaded ({error}): install its "
            f"distribution (stovepipe-{scheme.removesuffix('s')})"
        ) from error
    return opener(url, visibility_timeout=visibility_timeout)


def default_messaging_url(storage_url: str) -> str:
    """The messaging queue that goes with a storage backend: the same SQLite file, MySQL
    database or Redis server where the backend is one of those, else in-process.

    Every connection option of the storage URL carries over (credentials, TLS, timeouts, and
    for MySQL the pool and ``migrate``), so the queue talks to the database exactly as the
    storage does. On Redis the storage's ``prefix`` P, when given, becomes the queue's
    ``P`` + ``mq:``: deployments that share a database with different prefixes share no
    queue either.
    """
    parts = urllib.parse.urlsplit(storage_url)
    if parts.scheme not in ("sqlite", "mysql", "redis", "rediss"):
        return "memory://"
    options = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    if parts.scheme in ("redis", "rediss"):
        options = [(name, value + "mq:" if name == "prefix" else value) for name, value in options]
    return with_query(storage_url, urllib.parse.urlencode(options))


def with_query(url: str, query: str) -> str:
    """``url`` with its query replaced (string surgery: ``urlunsplit`` would turn
    ``sqlite:////abs/path`` into ``sqlite://abs/path``)."""
    base = url.split("?", 1)[0].split("#", 1)[0]
    return f"{base}?{query}" if query else base
