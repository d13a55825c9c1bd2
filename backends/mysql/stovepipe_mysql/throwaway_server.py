"""A throwaway MySQL 8 server for the conformance suite, for machines with Docker.

Registered under the ``stovepipe.storage.test_servers`` entry-point group as ``mysql``.
Needs the ``testcontainers`` extra (``pip install 'stovepipe-mysql[testcontainers]'``) and a
running Docker engine; testcontainers is imported only when a server is asked for.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator

from stovepipe_mysql.migrations import migrate

MYSQL_IMAGE = "mysql:8.0"


@contextlib.contextmanager
def mysql_test_server() -> Iterator[str]:
    """Start MySQL 8 in a container, apply the schema, and yield its ``mysql://`` URL."""
    try:
        from testcontainers.community.mysql import MySqlContainer
    except ImportError as error:
        raise RuntimeError(
            "a throwaway MySQL server needs testcontainers: "
            f"pip install 'stovepipe-mysql[testcontainers]' ({error})"
        ) from error
    password = secrets.token_hex(8)
    try:
        container = MySqlContainer(
            MYSQL_IMAGE, username="root", password=password, dbname="stovepipe_test"
        )
        container.start()
    except Exception as error:
        raise RuntimeError(
            f"could not start a {MYSQL_IMAGE} container; is Docker running? ({error})"
        ) from error
    try:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(3306)
        url = f"mysql://root:{password}@{host}:{port}/stovepipe_test"
        migrate(url)
        yield url
    finally:
        container.stop()
