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
from collections.abc import Callable, Iterator

import pytest

from stovepipe.storage import Capability, Storage, Unavailable, open_storage

from .capabilities import require
from .proxy import Proxy, proxy_to

PROMPTLY_SECONDS = 5.0
DEFAULT_PORTS = {"mysql": 3306, "redis": 6379, "rediss": 6379, "etcd": 2379}


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


def _server_address(parts: urllib.parse.SplitResult) -> tuple[str, int]:
    if parts.port is None and parts.scheme not in DEFAULT_PORTS:
        pytest.skip(f"{parts.scheme}:// URL without a port: give one to test mid-session faults")
    return parts.hostname or "127.0.0.1", parts.port or DEFAULT_PORTS[parts.scheme]


HUNG_SECONDS = 2 * PROMPTLY_SECONDS
"""How long a mid-session call may block before the test calls it hung (and fails)."""


def _bounded_call(call: Callable[[], object]) -> tuple[BaseException | None, float]:
    """Run ``call`` in a thread for at most :data:`HUNG_SECONDS`: what it raised (``None`` if
    it returned) and how long it took; fails the test, naming the rule, when it is still
    blocked then."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as error:
            outcome.append(error)
        else:
            outcome.append(None)

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)  # a hung call must not hold the run
    thread.start()
    thread.join(HUNG_SECONDS)
    elapsed = time.monotonic() - started
    if thread.is_alive():
        pytest.fail(
            f"still blocked after {elapsed:.0f} s: the backend's timeout must bound every call "
            "on an open session, not only the connect (rule: every call has a timeout)"
        )
    return outcome[0], elapsed


def _mid_session(
    storage: Storage, storage_url: str, ns: str, fault: Callable[[Proxy], None]
) -> None:
    """Open the backend through a proxy, make a call that succeeds, apply ``fault`` to the
    proxy, then check that each kind of call raises Unavailable promptly."""
    parts = _network_parts(storage, storage_url)
    with (
        proxy_to(*_server_address(parts)) as proxy,
        open_storage(_pointed_at(parts, proxy.port)) as through,
    ):
        through.counter.next(f"{ns}/warm")  # the session is up: connected, authenticated
        fault(proxy)
        calls: dict[str, Callable[[], object]] = {
            "get": lambda: through.requests.get(f"{ns}/missing"),
            "create": lambda: through.request_uris.create(f"{ns}/q", "git://u", f"{ns}/id"),
            "counter": lambda: through.counter.next(f"{ns}/c"),
        }
        for name, call in calls.items():
            raised, elapsed = _bounded_call(call)
            if not isinstance(raised, Unavailable):
                what = "returned" if raised is None else f"raised {raised!r}"
                pytest.fail(
                    f"{name} {what} once the server failed mid-session: it must raise "
                    "Unavailable (rule: driver exceptions are mapped on every statement, "
                    "not only on connect)"
                )
            assert elapsed < PROMPTLY_SECONDS, f"{name} took {elapsed:.1f}s to be Unavailable"


def test_unavailable_promptly_when_the_server_goes_silent_mid_session(
    storage: Storage, storage_url: str, ns: str
) -> None:
    _mid_session(storage, storage_url, ns, Proxy.go_silent)


def test_unavailable_when_the_server_resets_connections_mid_session(
    storage: Storage, storage_url: str, ns: str
) -> None:
    _mid_session(storage, storage_url, ns, Proxy.reset)
