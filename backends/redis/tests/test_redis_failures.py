"""A server that dies or falls silent while in use: ``Unavailable`` within the timeout, then
recovery once it is back. A small TCP relay between the backend and the real server plays
the failing network."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator

import pytest

from stovepipe.entity import Build, BuildStatus, Fact, Queue, Request, RequestState
from stovepipe.storage import Unavailable, open_storage


class _Relay:
    """Forwards 127.0.0.1:<port> to the server; can go silent (swallow bytes) or go away."""

    def __init__(self, server: tuple[str, int]) -> None:
        self._server = server
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._forwarding = threading.Event()
        self._forwarding.set()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client = self._listener.accept()[0]
                upstream = socket.create_connection(self._server, timeout=5)
            except OSError:
                return
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if self._forwarding.is_set():
                    target.sendall(data)

    def go_silent(self) -> None:
        self._forwarding.clear()

    def speak_again(self) -> None:
        self._forwarding.set()

    def go_away(self) -> None:
        # shutdown wakes the accept() blocked in the other thread; close alone would not.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


@pytest.fixture
def relay(redis_url: str) -> Iterator[_Relay]:
    parts = urllib.parse.urlsplit(redis_url)
    relay = _Relay((parts.hostname or "127.0.0.1", parts.port or 6379))
    try:
        yield relay
    finally:
        relay.go_away()


@pytest.fixture
def relayed_url(redis_url: str, relay: _Relay, prefix: str) -> str:
    """The server's URL through the relay, with ``timeout=1``."""
    parts = urllib.parse.urlsplit(redis_url)
    query = urllib.parse.urlencode({"timeout": "1", "prefix": prefix})
    return urllib.parse.urlunsplit(parts._replace(netloc=f"127.0.0.1:{relay.port}", query=query))


def _request(version: int = 1) -> Request:
    return Request("request/q/1", "q", "git://r/main/0", RequestState.ACCEPTED, version)


def _unavailable_within(seconds: float, operation: Callable[[], object]) -> None:
    started = time.monotonic()
    with pytest.raises(Unavailable):
        operation()
    elapsed = time.monotonic() - started
    assert elapsed < seconds, f"took {elapsed:.1f}s to report Unavailable"


@pytest.mark.usefixtures("raw")  # deletes the test's keys afterwards
def test_a_server_that_falls_silent_mid_use_is_unavailable_within_the_timeout_then_recovers(
    relay: _Relay, relayed_url: str
) -> None:
    with open_storage(relayed_url) as storage:
        storage.requests.create(_request())
        relay.go_silent()
        _unavailable_within(3, lambda: storage.requests.get("request/q/1"))
        _unavailable_within(3, lambda: storage.counter.next("request/q"))
        _unavailable_within(
            3, lambda: storage.requests.update(_request(), old_version=1, new_version=2)
        )
        relay.speak_again()
        storage.requests.update(_request(), old_version=1, new_version=2)
        assert storage.requests.get("request/q/1").version == 2


@pytest.mark.usefixtures("raw")
def test_a_server_that_goes_away_mid_use_is_unavailable_promptly(
    relay: _Relay, relayed_url: str
) -> None:
    with open_storage(relayed_url) as storage:
        storage.requests.create(_request())
        relay.go_away()
        _unavailable_within(2, lambda: storage.requests.get("request/q/1"))
        _unavailable_within(
            2, lambda: storage.requests.update(_request(), old_version=1, new_version=2)
        )
        _unavailable_within(2, lambda: storage.request_uris.create("q", "u", "request/q/1"))


@pytest.mark.usefixtures("raw")
def test_queues_builds_facts_on_a_server_that_falls_silent_are_unavailable_then_recover(
    relay: _Relay, relayed_url: str
) -> None:
    queue = Queue("q")
    build = Build("build/1", "request/q/1", BuildStatus.ACCEPTED, "", 1)
    fact = Fact("q", "git://r/main/0", "", 0.0, "request/q/1", 1.0)
    with open_storage(relayed_url) as storage:
        storage.queues.create(queue)
        storage.builds.create(build)
        relay.go_silent()
        operations: list[Callable[[], object]] = [
            lambda: storage.queues.create(Queue("other")),
            lambda: storage.queues.get("q"),
            lambda: storage.queues.update(queue, old_version=1, new_version=2),
            lambda: storage.builds.create(Build("build/2", "r", BuildStatus.ACCEPTED, "", 1)),
            lambda: storage.builds.get("build/1"),
            lambda: storage.builds.update(build, old_version=1, new_version=2),
            lambda: storage.facts.create(fact),
            lambda: storage.facts.get("q", "git://r/main/0", ""),
        ]
        for operation in operations:
            _unavailable_within(3, operation)
        relay.speak_again()
        storage.queues.update(queue, old_version=1, new_version=2)
        storage.builds.update(build, old_version=1, new_version=2)
        storage.facts.create(fact)
        assert storage.queues.get("q").version == 2
        assert storage.builds.get("build/1").version == 2
        assert storage.facts.get("q", "git://r/main/0", "") == fact
