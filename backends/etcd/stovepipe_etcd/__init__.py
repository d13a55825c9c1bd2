"""Stovepipe's storage on etcd v3: ``etcd://[user:password@]host[:port][?options]``.

Query options (all optional):

``prefix``
    Every key starts with it (default ``stovepipe/``); percent-encode special characters.
    Deployments sharing a cluster need prefixes none of which starts with another.
``timeout``
    Seconds, a float, bounding every call (default 5): the gRPC deadline of each request.
``ca_cert``, ``cert_cert``, ``cert_key``
    Paths of PEM files. Any of them turns on TLS: ``ca_cert`` verifies the server (the
    system's roots without it), ``cert_cert`` and ``cert_key`` (together) authenticate the
    client.

A user and password in the URL (percent-encoded) log in to etcd's authentication; the token
is renewed whenever etcd rejects it. The port defaults to 2379.
"""

from __future__ import annotations

import pathlib
import urllib.parse

import grpc

from stovepipe_etcd.backend import EtcdBackend
from stovepipe_etcd.client import EtcdClient
from stovepipe_etcd.layout import Layout

DEFAULT_PORT = 2379
DEFAULT_PREFIX = "stovepipe/"
DEFAULT_TIMEOUT_SECONDS = 5.0
_TLS_OPTIONS = frozenset({"ca_cert", "cert_cert", "cert_key"})
_OPTIONS = frozenset({"prefix", "timeout"}) | _TLS_OPTIONS


def _read_pem(option: str, path: str) -> bytes:
    try:
        return pathlib.Path(path).read_bytes()
    except OSError as error:
        raise ValueError(f"etcd URL option {option}: cannot read {path!r}: {error}") from None


def _credentials(options: dict[str, str]) -> grpc.ChannelCredentials | None:
    if not _TLS_OPTIONS & options.keys():
        return None
    if ("cert_cert" in options) != ("cert_key" in options):
        raise ValueError("etcd URL options cert_cert and cert_key go together")
    pem = {name: _read_pem(name, path) for name, path in options.items() if name in _TLS_OPTIONS}
    return grpc.ssl_channel_credentials(
        root_certificates=pem.get("ca_cert"),
        private_key=pem.get("cert_key"),
        certificate_chain=pem.get("cert_cert"),
    )


def open_backend(url: str) -> EtcdBackend:
    """Entry point for ``etcd://``. Raises ``ValueError`` for a malformed URL.

    Connects lazily: the first call reaches the server, unless the URL names a user, whose
    login happens here (and raises ``Unavailable`` if the server cannot be reached).
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "etcd":
        raise ValueError(f"not an etcd URL: {parts.scheme}://")
    if not parts.hostname:
        raise ValueError("etcd URL needs a host: etcd://host:2379")
    if parts.path not in ("", "/"):
        raise ValueError(f"etcd URLs have no path (use ?prefix=...): {parts.path!r}")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError as error:
        raise ValueError(f"etcd URL has a bad port: {error}") from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    options = dict(urllib.parse.parse_qsl(parts.query, strict_parsing=bool(parts.query)))
    unknown = options.keys() - _OPTIONS
    if unknown:
        raise ValueError(f"unknown etcd URL options: {', '.join(sorted(unknown))}")
    timeout = float(options.get("timeout", DEFAULT_TIMEOUT_SECONDS))
    if not timeout > 0:
        raise ValueError(f"etcd URL option timeout must be positive seconds, not {timeout}")
    user = urllib.parse.unquote(parts.username) if parts.username else None
    password = urllib.parse.unquote(parts.password or "")
    client = EtcdClient(
        f"{host}:{port}",
        timeout=timeout,
        credentials=_credentials(options),
        user=user,
        password=password,
    )
    try:
        client.authenticate()
    except BaseException:
        client.close()
        raise
    return EtcdBackend(client, Layout(options.get("prefix", DEFAULT_PREFIX).encode()))


__all__ = ["EtcdBackend", "open_backend"]
