"""Fixtures for the MySQL backend's own tests: the server URL, scratch databases, a TCP proxy.

The server comes from ``STOVEPIPE_TEST_MYSQL_URL``, else the conformance plugin starts a
throwaway one for the session (``stovepipe_mysql.throwaway_server``). With neither the tests
skip, except under ``CI=true``, where a missing server is a failure.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Iterator

import pymysql
import pytest
from pymysql.constants import CLIENT
from stovepipe_mysql.migrations import migrate, schema_files
from stovepipe_mysql.options import parse_url

from stovepipe.conformance.plugin import server_url
from stovepipe.storage import Storage, open_storage


@pytest.fixture(scope="session")
def mysql_url(request: pytest.FixtureRequest) -> str:
    """The test server's URL, with the schema applied."""
    url = server_url(request.config, "mysql")
    migrate(url)
    return url


def with_options(url: str, **options: object) -> str:
    """``url`` with query options added or replaced."""
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    query.update({name: str(value).lower() for name, value in options.items()})
    return parts._replace(query=urllib.parse.urlencode(query)).geturl()


def with_address(url: str, host: str, port: int, database: str | None = None) -> str:
    """``url`` pointed at another host and port (and optionally another database)."""
    parts = urllib.parse.urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@{host}:{port}" if credentials else f"{host}:{port}"
    path = f"/{database}" if database is not None else parts.path
    return parts._replace(netloc=netloc, path=path).geturl()


def admin_connection(url: str) -> pymysql.connections.Connection[pymysql.cursors.Cursor]:
    """A plain PyMySQL connection to the test server, outside any storage."""
    options = parse_url(url)
    return pymysql.connect(
        host=options.host,
        port=options.port,
        user=options.user,
        password=options.password,
        autocommit=True,
    )


@pytest.fixture
def url_with(mysql_url: str) -> Callable[..., str]:
    """Builds the test server's URL with the given query options."""
    return lambda **options: with_options(mysql_url, **options)


@pytest.fixture
def storage(mysql_url: str) -> Iterator[Storage]:
    with open_storage(with_options(mysql_url, timeout=2)) as opened:
        yield opened


@pytest.fixture
def admin(mysql_url: str) -> Iterator[pymysql.connections.Connection[pymysql.cursors.Cursor]]:
    """A plain PyMySQL connection to the test server, for what the storage cannot do."""
    connection = admin_connection(mysql_url)
    yield connection
    connection.close()


@contextlib.contextmanager
def private_database(mysql_url: str, prefix: str) -> Iterator[str]:
    """The URL of a new, empty database on the test server named ``prefix`` and a random
    suffix, dropped afterwards."""
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    admin = admin_connection(mysql_url)
    try:
        with admin.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {name}")
        try:
            options = parse_url(mysql_url)
            yield with_address(mysql_url, options.host, options.port, name)
        finally:
            with admin.cursor() as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS {name}")
    finally:
        admin.close()


@pytest.fixture
def scratch_database(mysql_url: str) -> Iterator[str]:
    """The URL of a new, empty database, dropped afterwards."""
    with private_database(mysql_url, "stovepipe_scratch_") as url:
        yield url


def run_schema_file(url: str, sql: str) -> None:
    """Run one schema file as ``migrate`` does: one multi-statement batch, every result read."""
    arguments = parse_url(url).connect_arguments()
    arguments["client_flag"] |= CLIENT.MULTI_STATEMENTS
    connection = pymysql.connect(**arguments)
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
            while cursor.nextset():
                pass
    finally:
        connection.close()


@pytest.fixture
def database_of_0001(mysql_url: str) -> Iterator[str]:
    """The URL of a new database (``stovepipe_upgrade_...``) holding only the first schema
    file's tables, as a deployment made before the pipeline's stores has; dropped afterwards."""
    with private_database(mysql_url, "stovepipe_upgrade_") as url:
        (name, sql), *_ = schema_files()
        assert name == "0001_create_tables.sql"
        run_schema_file(url, sql)
        yield url


class _Link:
    """One proxied connection: client socket, server socket, and what to do with replies."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self.reply_fate: str | None = None  # None: forward; "drop": hang up; "stall": hold
        self.aborted = False

    def shut(self) -> None:
        for sock in (self.client, self.server):
            if sock is not self.client or not self.aborted:  # shutdown would send a FIN
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def abort(self) -> None:
        """Reset the client's connection: no FIN, only a RST when the relay closes it."""
        self.aborted = True
        with contextlib.suppress(OSError):
            # A zero linger time makes close() send RST; SHUT_RD sends nothing but wakes the
            # relay thread blocked reading this socket, which then closes it.
            self.client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.client.shutdown(socket.SHUT_RD)


class FaultyProxy:
    """A TCP proxy in front of the MySQL server that can lose or hold back one reply.

    ``arm(marker, fate)``: the next client packet containing ``marker`` is forwarded to the
    server, and the server's reply to it is then either never delivered while both sockets
    are closed (``"drop"``: the statement ran, the client loses the connection) or held
    back forever (``"stall"``: the client waits until its read timeout).
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._armed: tuple[bytes, str] | None = None
        self.links: list[_Link] = []
        self.fired = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, marker: bytes, fate: str) -> None:
        with self._lock:
            self._armed = (marker, fate)
            self.fired.clear()

    def upstream_ports(self) -> list[int]:
        """Local ports of the proxy's live connections to the server (its processlist HOST)."""
        ports = []
        for link in self.links:
            with contextlib.suppress(OSError):  # closed meanwhile
                ports.append(link.server.getsockname()[1])
        return ports

    def reset(self) -> None:
        """Abort every live connection with a TCP reset, as a crashed server's host would."""
        for link in self.links:
            link.abort()

    def close(self) -> None:
        """Stop listening and cut every connection, as a server that stopped would."""
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
        self._listener.close()
        for link in self.links:
            link.shut()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._upstream)
            link = _Link(client, server)
            self.links.append(link)
            threading.Thread(target=self._client_to_server, args=(link,), daemon=True).start()
            threading.Thread(target=self._server_to_client, args=(link,), daemon=True).start()

    def _client_to_server(self, link: _Link) -> None:
        try:
            while data := link.client.recv(65536):
                with self._lock:
                    if self._armed is not None and self._armed[0] in data:
                        link.reply_fate = self._armed[1]
                        self._armed = None
                link.server.sendall(data)
        except OSError:
            pass
        link.shut()

    def _server_to_client(self, link: _Link) -> None:
        try:
            while data := link.server.recv(65536):
                if link.reply_fate == "drop":
                    self.fired.set()
                    break
                if link.reply_fate == "stall":
                    self.fired.set()
                    continue
                link.client.sendall(data)
        except OSError:
            pass
        if link.reply_fate != "stall":
            link.shut()


@pytest.fixture
def proxy(mysql_url: str) -> Iterator[FaultyProxy]:
    options = parse_url(mysql_url)
    faulty = FaultyProxy(options.host, options.port)
    yield faulty
    faulty.close()


@pytest.fixture
def proxied_url(mysql_url: str, proxy: FaultyProxy) -> str:
    """The test server's URL through the proxy, one pooled connection, 2 s timeout."""
    return with_options(with_address(mysql_url, "127.0.0.1", proxy.port), timeout=2, pool_size=1)


class ScriptedServer:
    """A listener that speaks just enough of the MySQL protocol to refuse a client its way.

    For failures a real server can only be configured into (accounts bound to other hosts,
    authentication plugins, certificates): ``converse(connection)`` runs for each client.
    """

    def __init__(self, converse: Callable[[socket.socket], None]) -> None:
        self._converse = converse
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with contextlib.suppress(OSError), connection:
            self._converse(connection)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()


@pytest.fixture
def scripted_server() -> Iterator[Callable[[Callable[[socket.socket], None]], str]]:
    """Starts a :class:`ScriptedServer` with the given conversation and returns its URL."""
    servers: list[ScriptedServer] = []

    def start(converse: Callable[[socket.socket], None]) -> str:
        server = ScriptedServer(converse)
        servers.append(server)
        return f"mysql://stovepipe:secret@127.0.0.1:{server.port}/stovepipe?timeout=2"

    yield start
    for server in servers:
        server.close()
