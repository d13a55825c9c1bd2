"""The ``etcd://`` URL: its options, and the errors a malformed one gets; how failed calls
are mapped. No server needed."""

from __future__ import annotations

import pathlib

import grpc
import pytest
from stovepipe_etcd import open_backend
from stovepipe_etcd.client import mapped_error

from stovepipe import resilience
from stovepipe.storage import Unavailable


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


class _Failed(grpc.RpcError, grpc.Call):
    """A failed call as gRPC raises it: a status code and details."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def initial_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return ()

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...]:  # type: ignore[override]
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float:
        return 0.0

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: object) -> bool:
        return False


@pytest.mark.parametrize(
    "failure",
    [
        _Failed(grpc.StatusCode.UNKNOWN, "context deadline exceeded"),
        _Failed(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"),
    ],
)
def test_etcd_running_out_of_the_callers_time_is_a_deadline_and_its_own_is_unavailable(
    failure: _Failed,
) -> None:
    callers = mapped_error(failure, "h:2379", callers_deadline=True)
    assert isinstance(callers, resilience.DeadlineExceeded)
    own = mapped_error(failure, "h:2379", callers_deadline=False)
    assert isinstance(own, Unavailable)
    assert not isinstance(own, resilience.DeadlineExceeded)
