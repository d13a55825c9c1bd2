"""A throwaway Redis for the conformance suite: the ``stovepipe.storage.test_servers`` hook.

Needs Docker and the ``testcontainers`` extra (``pip install 'stovepipe-redis[testcontainers]'``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

REDIS_IMAGE = "redis:7.4.1"


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """Start Redis in a container and yield its storage URL; remove the container on exit.

    Raises ``RuntimeError`` naming what is missing when testcontainers or Docker is not there.
    """
    try:
        from testcontainers.community.redis import RedisContainer
    except ImportError as error:
        raise RuntimeError(
            "a throwaway Redis needs testcontainers: "
            "pip install 'stovepipe-redis[testcontainers]' (and a running Docker engine)"
        ) from error
    try:
        container = RedisContainer(REDIS_IMAGE)
        container.start()
    except Exception as error:
        raise RuntimeError(
            f"could not start a Redis container ({REDIS_IMAGE}); is Docker running? {error}"
        ) from error
    try:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(container.port)
        yield f"redis://{host}:{port}/0"
    finally:
        container.stop()
