"""A throwaway Redis for the test suites: the ``stovepipe.storage.test_servers`` hook.

Where ``redis-server`` is installed it runs on a free loopback port for the session, without
persistence. Otherwise Redis runs in Docker, which needs the ``testcontainers`` extra
(``pip install 'stovepipe-redis[testcontainers]'``) and a running Docker engine.
"""

from __future__ import annotations

import contextlib
import pathlib
import tempfile
from collections.abc import Iterator

from stovepipe.conformance.servers import ServerUnavailable, find_binary, free_port, local_server

REDIS_IMAGE = "redis:7.4.1"
INSTALL = "install redis-server (Debian: apt-get install redis-server)"


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """Start a Redis and yield its storage URL (``redis://127.0.0.1:PORT/0``); stop it after.

    Raises :class:`~stovepipe.conformance.servers.ServerUnavailable` naming what to install
    when neither ``redis-server`` nor testcontainers with Docker is there.
    """
    binary = find_binary("redis-server")
    if binary is None:
        with _container() as url:
            yield url
        return
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="stovepipe-redis-") as scratch:
        directory = pathlib.Path(scratch)
        command = [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", scratch]
        command += ["--save", "", "--appendonly", "no"]
        with local_server("redis-server", command, port=port, directory=directory):
            yield f"redis://127.0.0.1:{port}/0"


@contextlib.contextmanager
def _container() -> Iterator[str]:
    try:
        from testcontainers.community.redis import RedisContainer
    except ImportError as error:
        raise ServerUnavailable(
            f"{INSTALL}, or pip install 'stovepipe-redis[testcontainers]' with Docker running"
        ) from error
    try:
        container = RedisContainer(REDIS_IMAGE)
        container.start()
    except Exception as error:
        raise ServerUnavailable(
            f"{INSTALL}, or run Docker: a {REDIS_IMAGE} container did not start: {error}"
        ) from error
    try:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(container.port)
        yield f"redis://{host}:{port}/0"
    finally:
        container.stop()
