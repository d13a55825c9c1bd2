"""The ``mysql://`` URL: where the server is, and how to talk to it.

``mysql://user:password@host:port/database?option=value&...``; user and password are
percent-decoded, the port defaults to 3306 and the database is required. Query options
(read by :mod:`stovepipe.urloptions`: each at most once, unknown ones refused):

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

from stovepipe.redaction import redact
from stovepipe.urloptions import URLOptions

DEFAULT_PORT = 3306
DEFAULT_TIMEOUT = 5.0
DEFAULT_POOL_SIZE = 10
MAX_TIMEOUT = 31_536_000.0

_OPTIONS = frozenset(
    {"timeout", "pool_size", "ssl_ca", "ssl_cert", "ssl_key", "ssl_verify", "migrate"}
)

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
        """The TLS context the ``ssl_*`` options ask for, or None when none was given.

        Raises ``ValueError`` naming the option and its file if a file cannot be read or holds
        no certificate or key (the driver's own message names neither)."""
        if (self.ssl_ca, self.ssl_cert, self.ssl_key, self.ssl_verify) == (None, None, None, None):
            return None
        try:
            context = ssl.create_default_context(cafile=self.ssl_ca)
        except (OSError, ssl.SSLError) as error:
            raise ValueError(f"mysql URL option ssl_ca={self.ssl_ca}: {error}") from error
        if self.ssl_verify is False:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.ssl_cert is not None:
            try:
                context.load_cert_chain(self.ssl_cert, self.ssl_key)
            except (OSError, ssl.SSLError) as error:
                files = f"ssl_cert={self.ssl_cert}" + (
                    f", ssl_key={self.ssl_key}" if self.ssl_key else ""
                )
                raise ValueError(f"mysql URL options {files}: {error}") from error
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


def parse_url(url: str, *, workers: int | None = None) -> MySQLOptions:
    """Parse ``mysql://user:password@host:port/database?options``; raise ``ValueError`` with
    one line (the URL redacted) if malformed. Options follow :mod:`stovepipe.urloptions`.

    ``workers`` (threads that will call the storage at once) is the default ``pool_size``."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "mysql":
        raise ValueError(f"not a mysql URL: scheme {parts.scheme!r}")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise ValueError(f"mysql URL {redact(url)} has an invalid port") from None
    database = urllib.parse.unquote(parts.path.lstrip("/"))
    if not parts.hostname or not database or "/" in database:
        raise ValueError(f"mysql URL {redact(url)}: write mysql://user:password@host:port/database")
    options = URLOptions(url, "mysql", _OPTIONS)
    if options.optional_text("ssl_key") and not options.optional_text("ssl_cert"):
        raise options.error("option ssl_key needs ssl_cert, the certificate it belongs to")
    return MySQLOptions(
        host=parts.hostname,
        port=port,
        user=urllib.parse.unquote(parts.username or ""),
        password=urllib.parse.unquote(parts.password or ""),
        database=database,
        # PyMySQL's own bound on connect_timeout: a year.
        timeout=options.seconds("timeout", DEFAULT_TIMEOUT, maximum=MAX_TIMEOUT),
        pool_size=options.integer("pool_size", workers or DEFAULT_POOL_SIZE, minimum=1),
        ssl_ca=options.optional_text("ssl_ca"),
        ssl_cert=options.optional_text("ssl_cert"),
        ssl_key=options.optional_text("ssl_key"),
        ssl_verify=options.optional_boolean("ssl_verify"),
        migrate=options.boolean("migrate", False),
    )
