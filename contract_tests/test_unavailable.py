"""Every backend call has a timeout: a dead server yields Unavailable promptly, never a hang.

These tests apply to backends that declare the ``network`` capability. They point the
backend at a closed port and at a listener that accepts connections but never answers, with
the contract's ``timeout`` URL option set to one second.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator

import pytest

from stovepipe.storage import Capability, Storage, Unavailable, open_storage

from .capabilities import require

PROMPTLY_SECONDS = 5.0


def _network_parts(storage: Storage, storage_url: str) -> urllib.parse.SplitResult:
    require(storage, Capability.NETWORK)
    return urllib.parse.urlsplit(storage_url)


def _pointed_at(parts: urllib.parse.SplitResult, port: int) -> str:
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@127.0.0.1:{port}" if credentials else f"127.0.0.1:{port}"
    query = urllib.parse.parse_qsl(parts.query)
    query = [(k, v) for k, v in query if k != "timeout"] + [("timeout", "1")]
    return urllib.parse.urlunsplit(
        parts._replace(netloc=netloc, query=urllib.parse.urlencode(query))
    )


@contextlib.contextmanager
def _silent_listener() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                accepted.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()
        server.close()


def _closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return int(probe.getsockname()[1])


def _assert_unavailable_promptly(url: str) -> None:
    started = time.monotonic()
    with pytest.raises(Unavailable), open_storage(url) as storage:
        storage.requests.get("any")
    elapsed = time.monotonic() - started
    assert elapsed < PROMPTLY_SECONDS, f"took {elapsed:.1f}s to report Unavailable"


def test_unavailable_promptly_when_the_server_refuses_connections(
    storage: Storage, storage_url: str
) -> None:
    parts = _network_parts(storage, storage_url)
    _assert_unavailable_promptly(_pointed_at(parts, _closed_port()))


def test_unavailable_promptly_when_the_server_never_answers(
    storage: Storage, storage_url: str
) -> None:
    parts = _network_parts(storage, storage_url)
    with _silent_listener() as port:
        _assert_unavailable_promptly(_pointed_at(parts, port))
