"""A small thread-safe pool of PyMySQL connections.

Hand-written rather than DBUtils' PooledDB on purpose: DBUtils' "steady" connections reopen
a lost connection and run the failed statement again on their own, which would retry a
counter increment or a conditional update whose first attempt may have committed. Here a
lost connection is simply discarded, and the backend alone decides what is safe to retry.
``pool_size`` permits in a :class:`queue.SimpleQueue` bound the connections open at once (a
blocking, timed hand-over in C); idle connections wait on a stack, so a lightly loaded pool
keeps reusing its most recent connection, warm on both ends, instead of rotating through all.
"""

from __future__ import annotations

import contextlib
import queue
import select
from collections.abc import Callable
from typing import Any

import pymysql
from pymysql.cursors import Cursor

from stovepipe.storage.errors import StorageError, Unavailable


class PooledConnection:
    """One open connection with its reusable cursor."""

    __slots__ = ("_poll", "connection", "cursor")

    def __init__(self, connection: pymysql.connections.Connection[Any]) -> None:
        self.connection = connection
        self.cursor: Cursor = connection.cursor()
        self._poll = select.poll()
        self._poll.register(connection._sock, select.POLLIN | select.POLLPRI)  # type: ignore[attr-defined]

    def closed_by_server(self) -> bool:
        """True if the server has closed or written to this idle connection.

        An idle connection has nothing to read unless the server hung up (restart, KILL,
        ``wait_timeout``), so one readiness poll tells a dead connection from a live one
        without a round trip, before any statement is sent on it.
        """
        return bool(self._poll.poll(0))

    def close(self) -> None:
        """Close the connection; never raises."""
        # Already closed, or the goodbye could not be sent: the socket is shut either way.
        with contextlib.suppress(pymysql.Error):
            self.connection.close()


class ConnectionPool:
    """At most ``size`` connections, opened on demand and handed to one thread at a time."""

    def __init__(self, connect: Callable[[], PooledConnection], size: int, timeout: float) -> None:
        self._connect = connect
        self._size = size
        self._timeout = timeout
        self._permits: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(size):
            self._permits.put(None)
        # Only ever touched by list.append and list.pop, each atomic, by permit holders.
        self._idle: list[PooledConnection] = []
        self._closed = False

    def acquire(self) -> PooledConnection:
        """A live connection for the caller alone; give it back with release or discard."""
        if self._closed:
            raise StorageError("mysql storage is closed")
        try:
            self._permits.get(timeout=self._timeout)
        except queue.Empty:
            raise Unavailable(
                f"mysql: all {self._size} pooled connections stayed busy for {self._timeout}s"
            ) from None
        while True:
            try:
                pooled = self._idle.pop()
            except IndexError:
                return self._open_with_permit()
            if not pooled.closed_by_server():
                return pooled
            pooled.close()

    def release(self, pooled: PooledConnection) -> None:
        """Give back a connection that is still usable."""
        self._idle.append(pooled)
        self._permits.put(None)
        if self._closed:
            self._close_idle()

    def discard(self, pooled: PooledConnection) -> None:
        """Close a connection that failed and give back its permit."""
        pooled.close()
        self._permits.put(None)

    def replace(self, pooled: PooledConnection) -> PooledConnection:
        """Close a connection that failed and open a new one under the same permit."""
        pooled.close()
        return self._open_with_permit()

    def _open_with_permit(self) -> PooledConnection:
        try:
            return self._connect()
        except BaseException:
            self._permits.put(None)
            raise

    def close(self) -> None:
        """Close idle connections now and busy ones when they are released. Idempotent."""
        self._closed = True
        self._close_idle()

    def _close_idle(self) -> None:
        while True:
            try:
                pooled = self._idle.pop()
            except IndexError:
                return
            pooled.close()
