"""A throwaway etcd in Docker for the conformance suite (``stovepipe.storage.test_servers``).

Needs the ``testcontainers`` extra (``pip install 'stovepipe-etcd[testcontainers]'``) and a
reachable Docker engine; without either it raises ``RuntimeError`` saying which is missing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

IMAGE = "gcr.io/etcd-development/etcd:v3.5.17"
"""The official etcd image, pinned; docker-compose.yml runs the same one."""

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
    """Start a single-member etcd; yield its ``etcd://`` URL; remove the container after."""
    try:
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.wait_strategies import HttpWaitStrategy
    except ImportError as error:
        raise RuntimeError(
            "an etcd test server needs testcontainers: "
            f"pip install 'stovepipe-etcd[testcontainers]' ({error})"
        ) from None
    try:
        container = DockerContainer(IMAGE)  # connects to the Docker engine
    except Exception as error:
        raise RuntimeError(f"an etcd test server needs a Docker engine: {error}") from error
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
        raise RuntimeError(f"cannot start the etcd test container {IMAGE}: {error}") from error
    try:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(_CLIENT_PORT)
        yield f"etcd://{host}:{port}"
    finally:
        container.stop()
