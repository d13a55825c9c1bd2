"""The ``etcd://`` URL: ``etcd://[user:password@]host[:port][?options]``.

The port defaults to 2379; user and password are percent-decoded. Options, read by
:mod:`stovepipe.urloptions` (each at most once, unknown ones refused): ``prefix`` (default
``stovepipe/``), ``timeout`` (seconds above 0, default 5), and the PEM file paths
``ca_cert``, ``cert_cert`` and ``cert_key`` (the last two together), any of which turns on
TLS.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from typing import Final

from stovepipe.redaction import redact
from stovepipe.urloptions import URLOptions

DEFAULT_PORT: Final = 2379
DEFAULT_PREFIX: Final = "stovepipe/"
DEFAULT_TIMEOUT_SECONDS: Final = 5.0
TLS_OPTIONS: Final = frozenset({"ca_cert", "cert_cert", "cert_key"})
OPTIONS: Final = frozenset({"prefix", "timeout"}) | TLS_OPTIONS


@dataclasses.dataclass(frozen=True)
class EtcdOptions:
    """A parsed ``etcd://`` URL; ``target`` is ``host:port`` for gRPC."""

    target: str
    user: str | None = None
    password: str = ""
    prefix: str = DEFAULT_PREFIX
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    ca_cert: str | None = None
    cert_cert: str | None = None
    cert_key: str | None = None

    @property
    def tls(self) -> bool:
        """Whether any TLS option is given."""
        return any((self.ca_cert, self.cert_cert, self.cert_key))


def parse_url(url: str) -> EtcdOptions:
    """Parse an ``etcd://`` URL; raise ``ValueError`` with one line (the URL redacted) if it
    is malformed."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "etcd":
        raise ValueError(f"not an etcd URL: {parts.scheme}://")
    if not parts.hostname:
        raise ValueError(f"etcd URL {redact(url)} needs a host: etcd://host:2379")
    if parts.path not in ("", "/"):
        raise ValueError(f"etcd URL {redact(url)} has a path; use ?prefix=... instead")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise ValueError(f"etcd URL {redact(url)} has an invalid port") from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    options = URLOptions(url, "etcd", OPTIONS)
    cert_cert = options.optional_text("cert_cert")
    cert_key = options.optional_text("cert_key")
    if (cert_cert is None) != (cert_key is None):
        raise options.error("options cert_cert and cert_key go together")
    return EtcdOptions(
        target=f"{host}:{port}",
        user=urllib.parse.unquote(parts.username) if parts.username else None,
        password=urllib.parse.unquote(parts.password or ""),
        prefix=options.text("prefix", DEFAULT_PREFIX),
        timeout=options.seconds("timeout", DEFAULT_TIMEOUT_SECONDS),
        ca_cert=options.optional_text("ca_cert"),
        cert_cert=cert_cert,
        cert_key=cert_key,
    )
