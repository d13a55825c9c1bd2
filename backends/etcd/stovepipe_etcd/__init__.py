"""Stovepipe's storage on etcd v3: ``etcd://[user:password@]host[:port][?options]``.

Query options (all optional; read by :mod:`stovepipe_etcd.options`):

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

import grpc

from stovepipe_etcd.backend import EtcdBackend
from stovepipe_etcd.client import EtcdClient
from stovepipe_etcd.layout import Layout
from stovepipe_etcd.options import EtcdOptions, parse_url


def _read_pem(option: str, path: str) -> bytes:
    try:
        return pathlib.Path(path).read_bytes()
    except OSError as error:
        raise ValueError(f"etcd URL option {option}: cannot read {path!r}: {error}") from None


def _credentials(options: EtcdOptions) -> grpc.ChannelCredentials | None:
    if not options.tls:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_read_pem("ca_cert", options.ca_cert) if options.ca_cert else None,
        private_key=_read_pem("cert_key", options.cert_key) if options.cert_key else None,
        certificate_chain=_read_pem("cert_cert", options.cert_cert) if options.cert_cert else None,
    )


def open_backend(url: str) -> EtcdBackend:
    """Entry point for ``etcd://`` (see :mod:`stovepipe_etcd.options`). Raises
    ``ValueError`` for a malformed URL.

    Connects lazily: the first call reaches the server, unless the URL names a user, whose
    login happens here (and raises ``Unavailable`` if the server cannot be reached).
    """
    options = parse_url(url)
    client = EtcdClient(
        options.target,
        timeout=options.timeout,
        credentials=_credentials(options),
        user=options.user,
        password=options.password,
    )
    try:
        client.authenticate()
    except BaseException:
        client.close()
        raise
    return EtcdBackend(client, Layout(options.prefix.encode()))


__all__ = ["EtcdBackend", "open_backend"]
