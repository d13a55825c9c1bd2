"""A throwaway etcd for the test suites: the ``stovepipe.storage.test_servers`` hook.

Where ``etcd`` is installed it runs as a single member on free loopback ports for the session,
its data in a temporary directory. Otherwise it runs in Docker, which needs the
``testcontainers`` extra (``pip install 'stovepipe-etcd[testcontainers]'``) and a reachable
Docker engine.
"""

from __future__ import annotations

import contextlib
import pathlib
import tempfile
from collections.abc import Iterator

from stovepipe.conformance.servers import ServerUnavailable, find_binary, free_port, local_server

IMAGE = "gcr.io/etcd-development/etcd:v3.5.17"
"""The official etcd image, pinned; docker-compose.yml runs the same one."""

INSTALL = "install etcd (Debian: apt-get install etcd-server)"
_CLIENT_PORT = 2379
_COMMAND = [
    "/usr/local/bin/etcd",
    "--name=stovepipe-test",
    "--data-dir=/tmp/etcd-data",
    f"--listen-client-urls=http://0.0.0.0:{_CLIENT_PORT}",
    f"--advertise-client-urls=http://127.0.0.1:{_CLIENT_PORT}",
    "--listen-peer-urls=http://127.0.0.1:2380",
    "--initial-advertise-peer-urls=http://127.0.0.1:2380",
    "--initial-cluster=stovepipe-test=http://127.0.0.1:2380",
]


@contextlib.contextmanager
def etcd_server() -> Iterator[str]:
    """Start a single-member etcd; yield its ``etcd://127.0.0.1:PORT`` URL; stop it after.

    Raises :class:`~stovepipe.conformance.servers.ServerUnavailable` naming what to install
    when neither ``etcd`` nor testcontainers with Docker is there.
    """
    binary = find_binary("etcd")
    if binary is None:
        with _container() as url:
            yield url
        return
    client, peer = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="stovepipe-etcd-") as scratch:
        command = [
            binary,
            "--name=stovepipe-test",
            f"--data-dir={scratch}/data",
            f"--listen-client-urls=http://127.0.0.1:{client}",
            f"--advertise-client-urls=http://127.0.0.1:{client}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=stovepipe-test=http://127.0.0.1:{peer}",
        ]
        with local_server(
            "etcd", command, port=client, directory=pathlib.Path(scratch), health_path="/health"
        ):
            yield f"etcd://127.0.0.1:{client}"


@contextlib.contextmanager
def _container() -> Iterator[str]:
    try:
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.wait_strategies import HttpWaitStrategy
    except ImportError as error:
        raise ServerUnavailable(
            f"{INSTALL}, or pip install 'stovepipe-etcd[testcontainers]' with Docker running"
        ) from error
    try:
        container = DockerContainer(IMAGE)  # connects to the Docker engine
    except Exception as error:
        raise ServerUnavailable(f"{INSTALL}, or run Docker: {error}") from error
    container.with_command(_COMMAND).with_exposed_ports(_CLIENT_PORT).waiting_for(
        HttpWaitStrategy(_CLIENT_PORT, "/health").for_response_predicate(
            lambda body: '"health":"true"' in body
        )
    )
    try:
        container.start()
    except Exception as error:  # the pull failed, or etcd never became healthy
        with contextlib.suppress(Exception):
            container.stop()
        raise ServerUnavailable(
            f"{INSTALL}, or run Docker: the {IMAGE} container did not start: {error}"
        ) from error
    try:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(_CLIENT_PORT)
        yield f"etcd://{host}:{port}"
    finally:
        container.stop()
