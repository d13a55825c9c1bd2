"""User/password login and TLS, each against a private etcd this module starts and stops.

They need the ``etcd`` binary (and ``openssl`` for the certificates); without them the tests
are skipped, or fail when the ``CI`` environment variable is set.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator

import pytest

from stovepipe.storage import NotFound, StorageError, Unavailable, open_storage

TOKEN_TTL_SECONDS = 1


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        reason = f"needs the {tool} executable"
        if _in_ci():
            pytest.fail(f"{reason} (CI is set: the etcd backend's tests must run)")
        pytest.skip(reason)
    return path


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return int(probe.getsockname()[1])


def _wait_until_serving(url: str, log: pathlib.Path) -> None:
    """Until a read through the backend gets an answer (NotFound), at most 20 seconds."""
    deadline = time.monotonic() + 20
    while True:
        try:
            with open_storage(url) as storage:
                storage.requests.get("probe")
        except NotFound:
            return
        except Unavailable:
            if time.monotonic() > deadline:
                raise AssertionError(f"etcd did not start:\n{log.read_text()[-2000:]}") from None
            time.sleep(0.1)


@contextlib.contextmanager
def _private_etcd(scheme: str, *flags: str) -> Iterator[tuple[int, pathlib.Path]]:
    """A single-member etcd on loopback with its own data directory; yields (port, dir)."""
    etcd = _require("etcd")
    with tempfile.TemporaryDirectory() as tmp:
        directory = pathlib.Path(tmp)
        client, peer = _free_port(), _free_port()
        log = directory / "etcd.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [
                    etcd,
                    "--name=private",
                    f"--data-dir={directory / 'data'}",
                    f"--listen-client-urls={scheme}://127.0.0.1:{client}",
                    f"--advertise-client-urls={scheme}://127.0.0.1:{client}",
                    f"--listen-peer-urls=http://127.0.0.1:{peer}",
                    f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                    f"--initial-cluster=private=http://127.0.0.1:{peer}",
                    *flags,
                ],
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        try:
            yield client, directory
        finally:
            process.terminate()
            process.wait(timeout=10)


def _post(port: int, path: str, body: dict[str, str]) -> None:
    """A call to etcd's JSON gateway (the test's own setup; the backend speaks gRPC)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v3/{path}", data=json.dumps(body).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


@pytest.fixture(scope="module")
def auth_etcd_port() -> Iterator[int]:
    """An etcd with authentication on: user root, password "s3cret:/@", short-lived tokens."""
    with _private_etcd("http", f"--auth-token-ttl={TOKEN_TTL_SECONDS}") as (port, directory):
        _wait_until_serving(f"etcd://127.0.0.1:{port}", directory / "etcd.log")
        _post(port, "auth/user/add", {"name": "root", "password": "s3cret:/@"})
        _post(port, "auth/user/grant", {"user": "root", "role": "root"})
        _post(port, "auth/enable", {})
        yield port


def test_user_and_password_in_the_url_log_in(auth_etcd_port: int) -> None:
    url = f"etcd://root:s3cret%3A%2F%40@127.0.0.1:{auth_etcd_port}"
    with open_storage(url) as storage:
        assert storage.counter.next("logged-in") == 1


def test_an_expired_token_is_renewed_and_the_call_succeeds(auth_etcd_port: int) -> None:
    url = f"etcd://root:s3cret%3A%2F%40@127.0.0.1:{auth_etcd_port}"
    with open_storage(url) as storage:
        assert storage.counter.next("renewed") == 1
        time.sleep(TOKEN_TTL_SECONDS + 2)  # the server drops the idle token
        assert storage.counter.next("renewed") == 2


def test_a_wrong_password_is_a_storage_error_at_open_not_unavailable(auth_etcd_port: int) -> None:
    with pytest.raises(StorageError, match="invalid user ID or password") as raised:
        open_storage(f"etcd://root:wrong@127.0.0.1:{auth_etcd_port}")
    assert not isinstance(raised.value, Unavailable)


def test_no_credentials_on_a_cluster_with_authentication_is_a_storage_error(
    auth_etcd_port: int,
) -> None:
    with (
        open_storage(f"etcd://127.0.0.1:{auth_etcd_port}") as storage,
        pytest.raises(StorageError, match="user name is empty") as raised,
    ):
        storage.requests.get("r")
    assert not isinstance(raised.value, Unavailable)


def _openssl(*args: str, cwd: pathlib.Path) -> None:
    subprocess.run([_require("openssl"), *args], cwd=cwd, check=True, capture_output=True)


def _make_certificates(directory: pathlib.Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by it."""
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
        "-keyout", "ca.key", "-out", "ca.pem", cwd=directory,
    )  # fmt: skip
    for name, extension in (
        ("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        (directory / f"{name}.ext").write_text(extension + "\n")
        _openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=directory,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem",
            cwd=directory,
        )  # fmt: skip


@pytest.fixture(scope="module")
def tls_etcd() -> Iterator[tuple[int, pathlib.Path]]:
    """An etcd serving TLS that requires a client certificate signed by the test CA."""
    with tempfile.TemporaryDirectory() as tmp:
        certificates = pathlib.Path(tmp)
        _make_certificates(certificates)
        with _private_etcd(
            "https",
            f"--cert-file={certificates / 'server.pem'}",
            f"--key-file={certificates / 'server.key'}",
            "--client-cert-auth",
            f"--trusted-ca-file={certificates / 'ca.pem'}",
        ) as (port, directory):
            url = _tls_url(port, certificates)
            _wait_until_serving(url, directory / "etcd.log")
            yield port, certificates


def _tls_url(port: int, certificates: pathlib.Path) -> str:
    return (
        f"etcd://127.0.0.1:{port}?ca_cert={certificates / 'ca.pem'}"
        f"&cert_cert={certificates / 'client.pem'}&cert_key={certificates / 'client.key'}"
    )


def test_tls_with_a_client_certificate_works(tls_etcd: tuple[int, pathlib.Path]) -> None:
    port, certificates = tls_etcd
    with open_storage(_tls_url(port, certificates)) as storage:
        assert storage.counter.next("over-tls") == 1


def test_tls_without_the_client_certificate_is_refused(tls_etcd: tuple[int, pathlib.Path]) -> None:
    port, certificates = tls_etcd
    url = f"etcd://127.0.0.1:{port}?ca_cert={certificates / 'ca.pem'}&timeout=2"
    with open_storage(url) as storage, pytest.raises(StorageError):
        storage.counter.next("over-tls")


def test_plaintext_to_a_tls_server_is_unavailable_promptly(
    tls_etcd: tuple[int, pathlib.Path],
) -> None:
    port, _ = tls_etcd
    started = time.monotonic()
    with open_storage(f"etcd://127.0.0.1:{port}?timeout=1") as storage, pytest.raises(Unavailable):
        storage.counter.next("plain")
    assert time.monotonic() - started < 5
