"""Failure handling: timeouts, dead servers, killed connections, and the retry policy.

A :class:`FaultyProxy` (see conftest) sits between the storage and the server and loses or
holds back the reply to one chosen statement, so each case of the policy happens for real:
the statement reached the server, and the client never heard back.
"""

from __future__ import annotations

import datetime
import importlib.util
import ipaddress
import pathlib
import socket
import ssl
import struct
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from stovepipe_mysql.pool import PooledConnection

from stovepipe.entity import Build, BuildStatus, Fact, Queue, Request, RequestState
from stovepipe.storage import (
    AlreadyExists,
    Storage,
    StorageError,
    Unavailable,
    open_storage,
)

TIMEOUT = 2.0  # the proxied URL's timeout option


def unique(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4().hex}"


def request(
    request_id: str, *, uri: str = "git://remote/repo/main/abc", version: int = 1
) -> Request:
    return Request(
        id=request_id, queue="monorepo/main", uri=uri, state=RequestState.ACCEPTED, version=version
    )


def marker(value: str) -> bytes:
    """How ``value`` appears in a statement on the wire (PyMySQL sends bytes as hex)."""
    return value.encode().hex().encode()


@pytest.fixture
def proxied(proxied_url: str) -> Iterator[Storage]:
    with open_storage(proxied_url) as opened:
        yield opened


@pytest.fixture
def direct(storage: Storage) -> Storage:
    """The same database, not through the proxy: to see what really was stored."""
    return storage


def test_create_whose_reply_is_lost_after_commit_is_not_a_false_already_exists(
    proxied: Storage, direct: Storage, proxy: Any
) -> None:
    created = request(unique("request/"))
    proxy.arm(marker(created.id), "drop")
    proxied.requests.create(created)
    assert proxy.fired.is_set()
    assert direct.requests.get(created.id) == created


def test_create_retried_after_a_lost_reply_still_reports_another_writers_row(
    proxied: Storage, direct: Storage, proxy: Any
) -> None:
    first = request(unique("request/"), uri="first")
    direct.requests.create(first)
    proxy.arm(marker(first.id), "drop")
    with pytest.raises(AlreadyExists):
        proxied.requests.create(request(first.id, uri="second"))
    assert proxy.fired.is_set()
    assert direct.requests.get(first.id) == first


def hang_up_after_the_idle_check(proxied: Storage, proxy: Any, monkeypatch: Any) -> None:
    """Reset the pooled connection so that its next statement cannot even be sent.

    The server's host aborts the connection in the window between the pool's idle check and
    the send, so the send fails (error 2006) and the statement certainly never left.
    """
    idle = proxied._backend._database._pool._idle  # type: ignore[attr-defined]
    assert len(idle) == 1
    proxy.reset()
    deadline = time.monotonic() + 5
    while not idle[0].closed_by_server() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert idle[0].closed_by_server()
    monkeypatch.setattr(PooledConnection, "closed_by_server", lambda self: False)


def test_create_whose_attempt_was_never_sent_reports_another_writers_identical_row(
    proxied: Storage, direct: Storage, proxy: Any, monkeypatch: Any
) -> None:
    created = request(unique("request/"))
    proxied.counter.next(unique("request/"))  # opens the pool's one connection
    direct.requests.create(created)  # another writer wins with the identical row
    hang_up_after_the_idle_check(proxied, proxy, monkeypatch)
    with pytest.raises(AlreadyExists):
        proxied.requests.create(created)


def test_uri_create_whose_attempt_was_never_sent_reports_another_writers_identical_mapping(
    proxied: Storage, direct: Storage, proxy: Any, monkeypatch: Any
) -> None:
    queue, uri, request_id = unique("queue/"), unique("git://"), unique("request/")
    proxied.counter.next(unique("request/"))
    direct.request_uris.create(queue, uri, request_id)
    hang_up_after_the_idle_check(proxied, proxy, monkeypatch)
    with pytest.raises(AlreadyExists):
        proxied.request_uris.create(queue, uri, request_id)


def test_uri_create_whose_reply_is_lost_after_commit_is_not_a_false_already_exists(
    proxied: Storage, direct: Storage, proxy: Any
) -> None:
    queue, uri, request_id = unique("queue/"), unique("git://"), unique("request/")
    proxy.arm(marker(request_id), "drop")
    proxied.request_uris.create(queue, uri, request_id)
    assert proxy.fired.is_set()
    assert direct.request_uris.get_id_by_uri(queue, uri) == request_id


def test_uri_create_retried_after_a_lost_reply_still_reports_the_first_mapping(
    proxied: Storage, direct: Storage, proxy: Any
) -> None:
    queue, uri = unique("queue/"), unique("git://")
    direct.request_uris.create(queue, uri, "request/first")
    proxy.arm(marker("request/second"), "drop")
    with pytest.raises(AlreadyExists):
        proxied.request_uris.create(queue, uri, "request/second")
    assert proxy.fired.is_set()
    assert direct.request_uris.get_id_by_uri(queue, uri) == "request/first"


def test_counter_whose_reply_is_lost_skips_a_number_but_never_repeats_one(
    proxied: Storage, direct: Storage, proxy: Any
) -> None:
    domain = unique("request/")
    assert proxied.counter.next(domain) == 1
    proxy.arm(marker(domain), "drop")
    assert proxied.counter.next(domain) == 3  # 2 was taken by the attempt whose reply was lost
    assert proxy.fired.is_set()
    assert direct.counter.next(domain) == 4


def test_update_whose_reply_is_lost_is_unavailable_never_a_false_version_mismatch(
    proxied: Storage, direct: Storage, proxy: Any
) -> None:
    stored = request(unique("request/"))
    direct.requests.create(stored)
    proxy.arm(marker(stored.id), "drop")
    with pytest.raises(Unavailable, match="may or may not have been applied"):
        proxied.requests.update(request(stored.id, uri="new"), old_version=1, new_version=2)
    assert direct.requests.get(stored.id) == request(stored.id, uri="new", version=2)
    # The storage recovers on a new connection.
    proxied.requests.update(request(stored.id, uri="newer"), old_version=2, new_version=3)
    assert direct.requests.get(stored.id).uri == "newer"


def test_fact_create_whose_reply_is_lost_after_commit_is_not_a_false_already_exists(
    proxied: Storage, direct: Storage, proxy: Any
) -> None:
    # The retry reads the stored fact back and compares it, floats included, with its own.
    fact = Fact(unique("queue/"), "git://r/1", "", 1 / 3, unique("request/"), 1_700_000_000.25)
    proxy.arm(marker(fact.request_id), "drop")
    proxied.facts.create(fact)
    assert proxy.fired.is_set()
    assert direct.facts.get(fact.queue, fact.uri, fact.project) == fact


def test_build_create_retried_after_a_lost_reply_still_reports_another_writers_row(
    proxied: Storage, direct: Storage, proxy: Any
) -> None:
    first = Build(unique("build/"), "request/first", BuildStatus.ACCEPTED, "", 1)
    direct.builds.create(first)
    proxy.arm(marker("request/second"), "drop")
    with pytest.raises(AlreadyExists):
        proxied.builds.create(Build(first.id, "request/second", BuildStatus.ACCEPTED, "", 1))
    assert proxy.fired.is_set()
    assert direct.builds.get(first.id) == first


def test_queue_update_whose_reply_is_lost_is_unavailable_never_a_false_version_mismatch(
    proxied: Storage, direct: Storage, proxy: Any
) -> None:
    name = unique("queue/")
    direct.queues.create(Queue(name))
    proxy.arm(marker(name), "drop")
    with pytest.raises(Unavailable, match="may or may not have been applied"):
        proxied.queues.update(Queue(name, in_flight=1), old_version=1, new_version=2)
    assert direct.queues.get(name) == Queue(name, in_flight=1, version=2)


def test_read_whose_reply_is_lost_is_retried(proxied: Storage, direct: Storage, proxy: Any) -> None:
    stored = request(unique("request/"))
    direct.requests.create(stored)
    proxy.arm(marker(stored.id), "drop")
    assert proxied.requests.get(stored.id) == stored
    assert proxy.fired.is_set()


def test_read_whose_reply_never_comes_is_unavailable_after_one_timeout_not_retried(
    proxied: Storage, direct: Storage, proxy: Any
) -> None:
    stored = request(unique("request/"))
    direct.requests.create(stored)
    proxy.arm(marker(stored.id), "stall")
    started = time.monotonic()
    with pytest.raises(Unavailable, match="timed out"):
        proxied.requests.get(stored.id)
    elapsed = time.monotonic() - started
    # Bounded by one timeout: a retry, or a second wait, would take two.
    assert TIMEOUT - 0.2 < elapsed < 2 * TIMEOUT - 0.2
    assert proxied.requests.get(stored.id) == stored


def test_connection_killed_by_the_server_while_idle_is_replaced_before_any_statement(
    proxied: Storage, direct: Storage, proxy: Any, admin: Any
) -> None:
    stored = request(unique("request/"))
    proxied.requests.create(stored)
    (port,) = proxy.upstream_ports()
    with admin.cursor() as cursor:
        cursor.execute("SELECT ID, HOST FROM information_schema.PROCESSLIST")
        (connection_id,) = [row[0] for row in cursor.fetchall() if row[1].endswith(f":{port}")]
        cursor.execute(f"KILL {int(connection_id)}")
    deadline = time.monotonic() + 5
    while port in proxy.upstream_ports() and time.monotonic() < deadline:
        time.sleep(0.01)
    # An update is not retried once sent, so it succeeds only if the dead connection was
    # noticed and replaced before the statement went out.
    proxied.requests.update(request(stored.id, uri="after kill"), old_version=1, new_version=2)
    assert direct.requests.get(stored.id).uri == "after kill"
    assert port not in proxy.upstream_ports()


def test_unavailable_promptly_when_the_server_goes_away_under_an_open_storage(
    proxied: Storage, proxy: Any
) -> None:
    domain = unique("request/")
    assert proxied.counter.next(domain) == 1
    proxy.close()  # listener and every connection gone: as if the server stopped
    started = time.monotonic()
    with pytest.raises(Unavailable):
        proxied.counter.next(domain)
    assert time.monotonic() - started < TIMEOUT - 0.2  # refused, not timed out


def test_wait_for_a_free_pooled_connection_is_bounded_by_the_timeout(proxied: Storage) -> None:
    pool = proxied._backend._database._pool  # type: ignore[attr-defined]
    held = pool.acquire()  # the only connection (pool_size=1), as a long call would hold it
    try:
        started = time.monotonic()
        with pytest.raises(Unavailable, match="busy"):
            proxied.counter.next(unique("request/"))
        elapsed = time.monotonic() - started
    finally:
        pool.release(held)
    # Bounded by one timeout: a retry, or a second wait, would take two.
    assert TIMEOUT - 0.2 < elapsed < 2 * TIMEOUT - 0.2
    assert proxied.counter.next(unique("request/")) == 1


def test_wrong_credentials_are_a_storage_error_not_unavailable(
    url_with: Callable[..., str], mysql_url: str
) -> None:
    wrong = mysql_url.replace("://", f"://nobody_{unique()[:8]}:wrong@", 1)
    if wrong.count("@") > 1:  # the URL had credentials already: replace them instead
        wrong = "mysql://nobody:wrong@" + mysql_url.split("@", 1)[1]
    with pytest.raises(StorageError) as raised:
        open_storage(wrong)
    assert not isinstance(raised.value, Unavailable)


def test_tls_options_refuse_a_server_that_does_not_offer_tls(
    url_with: Callable[..., str], storage: Storage
) -> None:
    with pytest.raises(StorageError, match=r"SSL|TLS") as raised:
        open_storage(url_with(ssl_verify=False))
    assert not isinstance(raised.value, Unavailable)


# Capability flags of the MySQL client/server protocol.
_PROTOCOL_41 = 0x200
_SSL = 0x800
_SECURE_CONNECTION = 0x8000
_PLUGIN_AUTH = 0x80000


def mysql_packet(sequence: int, payload: bytes) -> bytes:
    """One protocol packet: 3-byte little-endian length, sequence number, payload."""
    return struct.pack("<I", len(payload))[:3] + bytes([sequence]) + payload


def error_packet(sequence: int, code: int, message: str) -> bytes:
    return mysql_packet(sequence, b"\xff" + struct.pack("<H", code) + message.encode())


def handshake_packet(*, tls: bool = False) -> bytes:
    """A MariaDB-style initial handshake offering mysql_native_password (and TLS if asked)."""
    capabilities = _PROTOCOL_41 | _SECURE_CONNECTION | _PLUGIN_AUTH | (_SSL if tls else 0)
    payload = (
        b"\x0a5.5.5-10.11.0-MariaDB\x00"
        + struct.pack("<I", 1)  # connection id
        + b"scramble"
        + b"\x00"
        + struct.pack("<HBHH", capabilities & 0xFFFF, 45, 2, capabilities >> 16)
        + bytes([21])
        + bytes(10)
        + b"-scramble-12\x00"
        + b"mysql_native_password\x00"
    )
    return mysql_packet(0, payload)


def read_packet(connection: socket.socket) -> bytes:
    header = connection.recv(4, socket.MSG_WAITALL)
    if len(header) < 4:
        return b""
    return connection.recv(int.from_bytes(header[:3], "little"), socket.MSG_WAITALL)


def switch_authentication_to(plugin: bytes) -> Callable[[socket.socket], None]:
    """A conversation in which the server asks the client to authenticate with ``plugin``."""

    def converse(connection: socket.socket) -> None:
        connection.sendall(handshake_packet())
        read_packet(connection)  # the client's handshake response
        connection.sendall(
            mysql_packet(2, b"\xfe" + plugin + b"\x00" + b"0123456789" * 3 + b"\x00")
        )
        read_packet(connection)

    return converse


def refuse_with(
    code: int, message: str, *, before_handshake: bool
) -> Callable[[socket.socket], None]:
    """A conversation in which the server refuses the client with error ``code``."""

    def converse(connection: socket.socket) -> None:
        if before_handshake:
            connection.sendall(error_packet(0, code, message))
            return
        connection.sendall(handshake_packet())
        read_packet(connection)
        connection.sendall(error_packet(2, code, message))

    return converse


def test_authentication_the_driver_cannot_perform_is_a_storage_error_not_a_leaked_exception(
    scripted_server: Callable[..., str],
) -> None:
    if importlib.util.find_spec("nacl") is not None:
        pytest.skip("PyNaCl is installed, so the driver can perform ed25519 authentication")
    url = scripted_server(switch_authentication_to(b"client_ed25519"))
    with pytest.raises(StorageError, match="pynacl") as raised:
        open_storage(url)
    assert type(raised.value) is StorageError


@pytest.mark.parametrize(
    ("converse", "reason"),
    [
        (refuse_with(1130, "Host '127.0.0.1' is not allowed", before_handshake=True), "1130"),
        (
            refuse_with(1251, "Client does not support authentication", before_handshake=False),
            "1251",
        ),
        (switch_authentication_to(b"auth_gssapi_client"), "2059"),
    ],
    ids=["host not allowed", "authentication protocol unsupported", "unknown auth plugin"],
)
def test_permanent_connection_refusals_are_storage_errors_not_unavailable(
    scripted_server: Callable[..., str], converse: Callable[[socket.socket], None], reason: str
) -> None:
    with pytest.raises(StorageError, match=reason) as raised:
        open_storage(scripted_server(converse))
    assert not isinstance(raised.value, Unavailable)


def test_server_certificate_that_fails_verification_is_a_storage_error_not_unavailable(
    scripted_server: Callable[..., str], tmp_path: pathlib.Path
) -> None:
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(*self_signed_certificate(tmp_path))

    def converse(connection: socket.socket) -> None:
        connection.sendall(handshake_packet(tls=True))
        read_packet(connection)  # the client's request to switch to TLS
        with server_tls.wrap_socket(connection, server_side=True):
            pass  # the client rejects the certificate during the handshake

    with pytest.raises(StorageError, match="certificate") as raised:
        open_storage(scripted_server(converse) + "&ssl_verify=true")
    assert not isinstance(raised.value, Unavailable)


def self_signed_certificate(directory: pathlib.Path) -> tuple[str, str]:
    """Files of a certificate for 127.0.0.1 that no trusted CA signed, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    certificate_file, key_file = directory / "server.pem", directory / "server.key"
    certificate_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(certificate_file), str(key_file)
