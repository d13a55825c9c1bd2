"""Fixtures for the Redis backend's own tests: a real server, a key prefix per test.

The server's URL comes from ``STOVEPIPE_TEST_REDIS_URL``, else from the backend's
throwaway-server hook (``redis-server`` if installed, else Docker), through the conformance
plugin. With neither, the tests are skipped, except when ``CI`` is set (to anything but
``false``, ``0`` or ``no``): then they fail, as CI must cover Redis.
"""

from __future__ import annotations

import contextlib
import pathlib
import shutil
import subprocess
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import redis.connection
from stovepipe_redis import RedisBackend, open_backend

from stovepipe.conformance.plugin import server_url, unreachable
from stovepipe.conformance.servers import (
    ServerUnavailable,
    find_binary,
    free_port,
    local_server,
)
from stovepipe.storage import Storage, open_storage


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> str:
    """The base URL of a real Redis server (no query options)."""
    return server_url(request.config, "redis")


@contextlib.contextmanager
def _private_redis_server(directory: pathlib.Path, port: int, options: list[str]) -> Iterator[None]:
    """Run ``redis-server`` on 127.0.0.1:``port`` (no persistence) until the block ends."""
    binary = find_binary("redis-server")
    if binary is None:
        unreachable("a private Redis needs redis-server on PATH")
    defaults = ["--bind", "127.0.0.1", "--dir", str(directory), "--appendonly", "no", "--save", ""]
    command = [binary, *defaults, *options]
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(
                local_server("redis-server", command, port=port, directory=directory)
            )
        except ServerUnavailable as error:
            unreachable(f"a private redis-server did not start: {error}")
        yield


@pytest.fixture(scope="session")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, pathlib.Path]]:
    """A private ``redis-server`` speaking only TLS, with a self-signed certificate.

    Yields its ``rediss://`` URL (no options) and the certificate that verifies it.
    """
    if shutil.which("openssl") is None:
        unreachable("a TLS Redis needs openssl on PATH")
    directory = tmp_path_factory.mktemp("tls-redis")
    certificate, key = directory / "server.crt", directory / "server.key"
    openssl = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1"
    names = "-addext subjectAltName=IP:127.0.0.1"
    subprocess.run(
        [*openssl.split(), *names.split(), "-keyout", str(key), "-out", str(certificate)],
        check=True,
        capture_output=True,
    )
    port = free_port()
    paths = {"--tls-cert-file": certificate, "--tls-key-file": key}
    paths["--tls-ca-cert-file"] = certificate
    options = f"--port 0 --tls-port {port} --tls-auth-clients no".split()
    options += [part for flag, path in paths.items() for part in (flag, str(path))]
    with _private_redis_server(directory, port, options):
        yield f"rediss://127.0.0.1:{port}/0", certificate


@pytest.fixture(scope="session")
def private_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A plain ``redis-server`` of these tests' own, for what must not touch a shared one
    (flushing its script cache). Yields its ``redis://`` URL (no options)."""
    port = free_port()
    with _private_redis_server(tmp_path_factory.mktemp("redis"), port, ["--port", str(port)]):
        yield f"redis://127.0.0.1:{port}/0"


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


@pytest.fixture
def backend(url_with: Callable[..., str], raw: redis.Redis) -> Iterator[RedisBackend]:
    """The backend itself (not wrapped in Storage), to read its watch-conflict count."""
    opened = open_backend(url_with())
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """Counts what every redis-py connection sends: one send, one round trip."""
    sent = [0]
    send: Callable[..., None] = redis.connection.Connection.send_packed_command

    def counting_send(self: redis.connection.Connection, *args: Any, **kwargs: Any) -> None:
        sent[0] += 1
        send(self, *args, **kwargs)

    monkeypatch.setattr(redis.connection.Connection, "send_packed_command", counting_send)

    def taken() -> int:
        count, sent[0] = sent[0], 0
        return count

    return taken
