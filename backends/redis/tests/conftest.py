"""Fixtures for the Redis backend's own tests: a real server, a key prefix per test.

The server's URL comes from ``STOVEPIPE_TEST_REDIS_URL``, else from the backend's
throwaway-server hook (Docker). With neither, the tests are skipped, except when ``CI`` is
set (to anything but ``false``, ``0`` or ``no``): then they fail, as CI must cover Redis.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import socket
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis

from stovepipe.storage import Storage, open_storage


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def _unreachable(reason: str) -> None:
    if _in_ci():
        pytest.fail(f"{reason} (CI is set: the Redis backend must be covered)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The base URL of a real Redis server (no query options)."""
    url = os.environ.get("STOVEPIPE_TEST_REDIS_URL")
    if url:
        yield url
        return
    from stovepipe_redis.testing import redis_server

    with contextlib.ExitStack() as stack:
        try:
            server_url = stack.enter_context(redis_server())
        except Exception as error:
            _unreachable(f"no Redis: STOVEPIPE_TEST_REDIS_URL is unset and {error}")
        yield server_url


@pytest.fixture(scope="session")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, pathlib.Path]]:
    """A private ``redis-server`` speaking only TLS, with a self-signed certificate.

    Yields its ``rediss://`` URL (no options) and the certificate that verifies it.
    """
    missing = [tool for tool in ("redis-server", "openssl") if shutil.which(tool) is None]
    if missing:
        _unreachable(f"a TLS Redis needs {' and '.join(missing)} on PATH")
    directory = tmp_path_factory.mktemp("tls-redis")
    certificate, key = directory / "server.crt", directory / "server.key"
    openssl = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1"
    names = "-addext subjectAltName=IP:127.0.0.1"
    subprocess.run(
        [*openssl.split(), *names.split(), "-keyout", str(key), "-out", str(certificate)],
        check=True,
        capture_output=True,
    )
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    paths = {"--dir": directory, "--tls-cert-file": certificate, "--tls-key-file": key}
    paths["--tls-ca-cert-file"] = certificate
    options = f"--port 0 --tls-port {port} --bind 127.0.0.1 --tls-auth-clients no --appendonly no"
    server = subprocess.Popen(
        ["redis-server", *options.split(), "--save", ""]
        + [part for flag, path in paths.items() for part in (flag, str(path))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    _unreachable(f"redis-server with TLS did not start (exit {server.poll()})")
                time.sleep(0.05)
        yield f"rediss://127.0.0.1:{port}/0", certificate
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def prefix() -> str:
    """A key prefix no other test uses."""
    return f"stovepipe-test-{uuid.uuid4().hex}:"


@pytest.fixture
def raw(redis_url: str, prefix: str) -> Iterator[redis.Redis]:
    """A plain redis-py client on the test database; deletes the test's keys afterwards."""
    client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        yield client
        keys = list(client.scan_iter(match=prefix.encode() + b"*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


UrlWith = Callable[..., str]


@pytest.fixture
def url_with(redis_url: str, prefix: str) -> UrlWith:
    """Builds the server's URL with query options; ``prefix`` defaults to the test's."""

    def build(**options: str) -> str:
        options.setdefault("prefix", prefix)
        parts = urllib.parse.urlsplit(redis_url)
        query = urllib.parse.parse_qsl(parts.query) + list(options.items())
        return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))

    return build


@pytest.fixture
def storage(url_with: UrlWith, raw: redis.Redis) -> Iterator[Storage]:
    """A storage on the test server whose keys all start with the test's prefix."""
    with open_storage(url_with()) as opened:
        yield opened
