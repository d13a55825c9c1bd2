"""The ``etcd://`` URL: its options, and the errors a malformed one gets. No server needed."""

from __future__ import annotations

import pathlib

import pytest
from stovepipe_etcd import open_backend


def test_url_defaults_to_port_2379_prefix_stovepipe_and_five_seconds() -> None:
    backend = open_backend("etcd://localhost")
    try:
        assert backend.client.target == "localhost:2379"
        assert backend.client.timeout == 5.0
        assert backend.requests._keys.prefix == b"stovepipe/"
    finally:
        backend.close()


def test_url_options_prefix_and_timeout_are_applied() -> None:
    backend = open_backend("etcd://[::1]:23790?prefix=team%2Fa%20b/&timeout=0.5")
    try:
        assert backend.client.target == "[::1]:23790"
        assert backend.client.timeout == 0.5
        assert backend.requests._keys.prefix == b"team/a b/"
    finally:
        backend.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("etcd://", "needs a host"),
        ("etcd://h:2379/path", "has a path"),
        ("etcd://h:99999", "invalid port"),
        ("etcd://h?color=red", "unknown option.s. color; known: ca_cert"),
        ("etcd://h?timeout=0", "above 0"),
        ("etcd://h?timeout=soon", "timeout must be a finite number of seconds"),
        ("etcd://h?cert_cert=/c.pem", "go together"),
        ("etcd://h?ca_cert=/nonexistent/ca.pem", "cannot read"),
    ],
)
def test_url_that_is_malformed_raises_value_error(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_backend(url)


def test_url_tls_options_read_the_pem_files(tmp_path: pathlib.Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    backend = open_backend(f"etcd://h?ca_cert={ca}")
    backend.close()
