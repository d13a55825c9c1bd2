"""A TCP proxy to a backend's server that can go silent or reset its connections at will,
to show what a backend does when its server fails in the middle of a session."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator


class Proxy:
    """Forwards 127.0.0.1:``port`` to ``(host, server_port)``, byte for byte, until told
    otherwise: :meth:`go_silent` stops forwarding (connections stay open, nothing moves) and
    :meth:`reset` resets every connection, and every new one as soon as it is accepted."""

    def __init__(self, host: str, server_port: int) -> None:
        self._target = (host, server_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._silent = threading.Event()
        self._resetting = threading.Event()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def go_silent(self) -> None:
        self._silent.set()

    def reset(self) -> None:
        self._resetting.set()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for connection in sockets:
            _reset(connection)

    def close(self) -> None:
        self._stop.set()
        self.reset()
        for thread in self._threads:
            thread.join(timeout=5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                continue
            if self._resetting.is_set():
                _reset(client)
                continue
            try:
                server = socket.create_connection(self._target, timeout=5)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                thread = threading.Thread(target=self._pump, args=(source, sink), daemon=True)
                thread.start()
                self._threads.append(thread)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        source.settimeout(0.1)
        while not self._stop.is_set():
            try:
                data = source.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                with contextlib.suppress(OSError):
                    sink.shutdown(socket.SHUT_WR)
                return
            while self._silent.is_set() and not self._stop.is_set():
                self._stop.wait(0.1)  # hold the bytes: the peer waits for an answer forever
            with contextlib.suppress(OSError):
                sink.sendall(data)


def _reset(connection: socket.socket) -> None:
    """Close with a TCP reset rather than an orderly FIN."""
    with contextlib.suppress(OSError):
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()


@contextlib.contextmanager
def proxy_to(host: str, port: int) -> Iterator[Proxy]:
    """A :class:`Proxy` to ``host:port``, closed on exit."""
    proxy = Proxy(host, port)
    try:
        yield proxy
    finally:
        proxy.close()
