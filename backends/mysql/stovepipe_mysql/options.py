"""The ``mysql://`` URL: where the server is, and how to talk to it.

``mysql://user:password@host:port/database?option=value&...``; user and password are
percent-decoded, the port defaults to 3306 and the database is required. Query options:

``timeout``
    Seconds (float, default 5) bounding each step of every call: connecting, sending a
    statement, waiting for its answer, and waiting for a free pooled connection.
``pool_size``
    Most storage connections open at once; by default the number of threads that call the
    storage at once (a server's ``max_workers``), else 10. Connections open on demand, so
    an idle server holds few. A call that finds them all busy waits up to ``timeout``.
``ssl_ca``, ``ssl_cert``, ``ssl_key``
    PEM files: the CA that signs the server's certificate, and a client certificate and key.
``ssl_verify``
    ``true`` (the default once TLS is on) checks the server's certificate against ``ssl_ca``
    (else the system's trusted CAs) and its host name; ``false`` encrypts without checking.
    Any ``ssl_*`` option makes TLS required: a server that does not offer it is refused.
    Without one, the connection uses TLS only if the server offers it, unverified.
``migrate``
    ``true`` applies the schema (:func:`stovepipe_mysql.migrations.migrate`) when the
    storage is opened; default ``false``: the schema is a deliberate step
    (``stovepipe migrate URL``), and production accounts seldom hold DDL rights.
"""

from __future__ import annotations

import dataclasses
import ssl
import urllib.parse
from typing import Any

DEFAULT_PORT = 3306
DEFAULT_TIMEOUT = 5.0
DEFAULT_POOL_SIZE = 10

_OPTIONS = frozenset(
    {"timeout", "pool_size", "ssl_ca", "ssl_cert", "ssl_key", "ssl_verify", "migrate"}
)
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}

# Every session runs in the same mode whatever the server's default, so each statement means
# what it says: strict (an out-of-range value fails instead of being truncated) and without
# ANSI_QUOTES or NO_BACKSLASH_ESCAPES, which would change how a statement parses.
SESSION_SQL_MODE = "STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION"


@dataclasses.dataclass(frozen=True)
class MySQLOptions:
    """A parsed ``mysql://`` URL."""

    host: str
    port: int
    user: str
    password: str
    database: str
    timeout: float = DEFAULT_TIMEOUT
    pool_size: int = DEFAULT_POOL_SIZE
    ssl_ca: str | None = None
    ssl_cert: str | None = None
    ssl_key: str | None = None
    ssl_verify: bool | None = None
    migrate: bool = False

    @property
    def address(self) -> str:
        """``host:port`` for messages; never the credentials."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}/{self.database}"

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context the ``ssl_*`` options ask for, or None when none was given."""
        if (self.ssl_ca, self.ssl_cert, self.ssl_key, self.ssl_verify) == (None, None, None, None):
            return None
        context = ssl.create_default_context(cafile=self.ssl_ca)
        if self.ssl_verify is False:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.ssl_cert is not None:
            context.load_cert_chain(self.ssl_cert, self.ssl_key)
        return context

    def connect_arguments(self) -> dict[str, Any]:
        """Keyword arguments for :func:`pymysql.connect`, the same for every connection.

        The storage and the raw-driver benchmark both connect with exactly these.
        """
        from pymysql.constants import CLIENT

        arguments: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "database": self.database,
            "charset": "utf8mb4",
            "autocommit": True,
            "sql_mode": SESSION_SQL_MODE,
            "connect_timeout": self.timeout,
            "read_timeout": self.timeout,
            "write_timeout": self.timeout,
            # Affected rows = rows the WHERE matched, not rows whose values changed, so a
            # conditional UPDATE that writes the values already stored still reports 1.
            "client_flag": CLIENT.FOUND_ROWS,
        }
        context = self.ssl_context()
        if context is not None:
            arguments["ssl"] = context
        return arguments


def _boolean(name: str, value: str) -> bool:
    try:
        return _BOOLEANS[value.lower()]
    except KeyError:
        raise ValueError(f"mysql URL option {name} must be true or false, not {value!r}") from None


def parse_url(url: str, *, workers: int | None = None) -> MySQLOptions:
    """Parse ``mysql://user:password@host:port/database?options``; raise ValueError if malformed.

    ``workers`` (threads that will call the storage at once) is the default ``pool_size``."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "mysql":
        raise ValueError(f"not a mysql URL: scheme {parts.scheme!r}")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise ValueError("mysql URL has an invalid port") from None
    database = urllib.parse.unquote(parts.path.lstrip("/"))
    if not parts.hostname or not database or "/" in database:
        raise ValueError("mysql URLs look like mysql://user:password@host:port/database")
    query = urllib.parse.parse_qs(
        parts.query, keep_blank_values=True, strict_parsing=bool(parts.query)
    )
    unknown = set(query) - _OPTIONS
    if unknown:
        raise ValueError(f"unknown mysql URL options: {', '.join(sorted(unknown))}")
    options = {name: values[-1] for name, values in query.items()}
    timeout = float(options.get("timeout", DEFAULT_TIMEOUT))
    if not 0 < timeout <= 31_536_000:  # PyMySQL's own bound on connect_timeout
        raise ValueError(f"mysql URL option timeout must be positive seconds, not {timeout}")
    pool_size = int(options.get("pool_size", workers or DEFAULT_POOL_SIZE))
    if pool_size < 1:
        raise ValueError(f"mysql URL option pool_size must be at least 1, not {pool_size}")
    if options.get("ssl_key") and not options.get("ssl_cert"):
        raise ValueError("mysql URL option ssl_key needs ssl_cert, the certificate it belongs to")
    return MySQLOptions(
        host=parts.hostname,
        port=port,
        user=urllib.parse.unquote(parts.username or ""),
        password=urllib.parse.unquote(parts.password or ""),
        database=database,
        timeout=timeout,
        pool_size=pool_size,
        ssl_ca=options.get("ssl_ca") or None,
        ssl_cert=options.get("ssl_cert") or None,
        ssl_key=options.get("ssl_key") or None,
        ssl_verify=_boolean("ssl_verify", options["ssl_verify"])
        if "ssl_verify" in options
        else None,
        migrate=_boolean("migrate", options["migrate"]) if "migrate" in options else False,
    )
