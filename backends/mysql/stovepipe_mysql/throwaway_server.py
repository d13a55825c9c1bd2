"""A throwaway MySQL-compatible server for the test suites, with the schema applied.

Registered under the ``stovepipe.storage.test_servers`` entry-point group as ``mysql``.
Where MariaDB (``mariadbd`` and ``mariadb-install-db``) or MySQL (``mysqld``) is installed, a
fresh data directory is initialised in a temporary directory and the server runs on a free
loopback port for the session. Otherwise MySQL 8 runs in Docker, which needs the
``testcontainers`` extra (``pip install 'stovepipe-mysql[testcontainers]'``) and a running
Docker engine; testcontainers is imported only then.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import secrets
import subprocess
import tempfile
from collections.abc import Iterator

import pymysql

from stovepipe.conformance.servers import (
    STARTUP_TIMEOUT,
    ServerUnavailable,
    find_binary,
    free_port,
    local_server,
)
from stovepipe_mysql.migrations import migrate

MYSQL_IMAGE = "mysql:8.0"
DATABASE = "stovepipe_test"
INSTALL = "install MariaDB (Debian: apt-get install mariadb-server)"


@contextlib.contextmanager
def mysql_test_server() -> Iterator[str]:
    """Start a server, create ``stovepipe_test`` with the schema, and yield its ``mysql://`` URL.

    Raises :class:`~stovepipe.conformance.servers.ServerUnavailable` naming what to install
    when neither a server binary nor testcontainers with Docker is there, or when the data
    directory cannot be initialised within ``STARTUP_TIMEOUT`` seconds.
    """
    server = find_binary("mariadbd", "mysqld")
    if server is None:
        with _container() as url:
            yield url
        return
    port = free_port()
    # A short directory name: the server's Unix socket path must fit in 107 bytes.
    with tempfile.TemporaryDirectory(prefix="stovepipe-mysql-") as scratch:
        directory = pathlib.Path(scratch)
        data = directory / "data"
        _initialise(server, data, directory)
        command = [
            server,
            "--no-defaults",
            f"--datadir={data}",
            "--bind-address=127.0.0.1",
            f"--port={port}",
            f"--socket={directory / 'mysqld.sock'}",
            f"--pid-file={directory / 'mysqld.pid'}",
            "--skip-log-bin",
            *_as_root(),
        ]
        with local_server("mysql", command, port=port, directory=directory):
            url = f"mysql://root@127.0.0.1:{port}/{DATABASE}"
            connection = pymysql.connect(host="127.0.0.1", port=port, user="root")
            try:
                with connection.cursor() as cursor:
                    cursor.execute(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
            finally:
                connection.close()
            migrate(url)
            yield url


def _as_root() -> list[str]:
    # The server refuses to run as root unless told to; any other user runs as itself.
    return ["--user=root"] if os.geteuid() == 0 else []


def _initialise(server: str, data: pathlib.Path, directory: pathlib.Path) -> None:
    """Create the system tables in ``data``, root reachable without a password."""
    install = find_binary("mariadb-install-db", "mysql_install_db")
    if install is not None:
        command = [
            install,
            "--no-defaults",
            f"--datadir={data}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            *_as_root(),
        ]
    else:  # MySQL 5.7 and later initialise through the server itself
        command = [server, "--no-defaults", f"--datadir={data}", "--initialize-insecure"]
        command += _as_root()
    log = directory / "initialise.log"
    try:
        with log.open("wb") as output:
            subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                timeout=STARTUP_TIMEOUT,
                check=True,
            )
    except (OSError, subprocess.SubprocessError) as error:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise ServerUnavailable(
            f"could not initialise a MySQL data directory with {command[0]}: {error}\n{tail}"
        ) from error


@contextlib.contextmanager
def _container() -> Iterator[str]:
    try:
        from testcontainers.community.mysql import MySqlContainer
    except ImportError as error:
        raise ServerUnavailable(
            f"{INSTALL}, or pip install 'stovepipe-mysql[testcontainers]' with Docker running"
        ) from error
    password = secrets.token_hex(8)
    try:
        container = MySqlContainer(MYSQL_IMAGE, username="root", password=password, dbname=DATABASE)
        container.start()
    except Exception as error:
        raise ServerUnavailable(
            f"{INSTALL}, or run Docker: a {MYSQL_IMAGE} container did not start: {error}"
        ) from error
    try:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(3306)
        url = f"mysql://root:{password}@{host}:{port}/{DATABASE}"
        migrate(url)
        yield url
    finally:
        container.stop()
