"""An acknowledgement sent while the messaging engine restarts is not lost: the engine is
killed (SIGKILL, as in a crash) while a handler is finishing, the handler returns while the
engine is down, the engine starts again on the same data, and the message, handled once, is
acknowledged: nothing is redelivered.

Each test runs its own server (:mod:`stovepipe.fault_testing`), never a shared one."""

from __future__ import annotations

import contextlib
import pathlib
import shutil
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from stovepipe.conformance.plugin import unreachable
from stovepipe.fault_testing import PrivateServer, private_mariadb, private_redis
from stovepipe.messaging.contract import Message
from stovepipe.messaging.registry import InspectableMessaging, open_messaging

from .conftest import url_with

BOUND = 60.0
"""Seconds any wait of these tests may take: a broken implementation fails, never hangs."""
VISIBILITY_TIMEOUT = 60.0
"""Longer than the restart: a redelivery can only come from a lost acknowledgement."""
AFTER_ACK = 3.0
"""Seconds the consumer keeps running after the acknowledgement: a redelivery would show."""


def _server(binary: str) -> None:
    if shutil.which(binary) is None and shutil.which(binary, path="/usr/sbin:/sbin") is None:
        unreachable(f"{binary} is not installed")


@contextlib.contextmanager
def _mariadb(directory: pathlib.Path) -> Iterator[PrivateServer]:
    pytest.importorskip("stovepipe_mysql")
    _server("mariadbd")
    with private_mariadb(directory) as server:
        yield server


@contextlib.contextmanager
def _redis(directory: pathlib.Path) -> Iterator[PrivateServer]:
    pytest.importorskip("stovepipe_redis")
    _server("redis-server")
    with private_redis(directory, append_only=True) as server:
        yield server


ENGINES: dict[str, Callable[[pathlib.Path], contextlib.AbstractContextManager[PrivateServer]]]
ENGINES = {"mysql": _mariadb, "redis": _redis}


def _wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not condition():
        assert time.monotonic() < deadline, f"not within {BOUND} s: {what}"
        time.sleep(0.05)


def _backlog(queue: InspectableMessaging, topic: str) -> int | None:
    """The backlog, or ``None`` while the engine does not answer."""
    try:
        return queue.backlog(topic)
    except Exception:
        return None


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_an_ack_sent_across_an_engine_restart_is_not_lost_and_the_message_runs_once(
    engine: str, tmp_path: pathlib.Path
) -> None:
    with ENGINES[engine](tmp_path) as server:
        url = url_with(
            server.url,
            visibility_timeout=VISIBILITY_TIMEOUT,
            workers=2,
            backoff=0.05,
            max_backoff=0.5,
            poll_interval=0.05,
        )
        queue = open_messaging(url)
        topic = "restart"
        handled: list[tuple[str, int]] = []
        finishing = threading.Event()
        finish = threading.Event()

        def handler(message: Message) -> None:
            handled.append((message.message_id, message.attempt))
            finishing.set()
            # Bounded: a test whose engine never goes down must not keep the worker.
            assert finish.wait(BOUND), "the handler was never let finish"

        queue.subscribe(topic, handler)
        queue.publish(topic, "k", b"payload", message_id="the-one")
        queue.start()
        try:
            assert finishing.wait(BOUND), "the message was never delivered"
            server.kill()
            finish.set()  # the handler returns and its worker acknowledges: the engine is down
            time.sleep(1.0)  # the acknowledgement meets the dead engine, at least once
            server.start()
            _wait(lambda: _backlog(queue, topic) == 0, "the message acknowledged")
            time.sleep(AFTER_ACK)
            assert handled == [("the-one", 1)]
            assert queue.backlog(topic) == 0
            assert queue.dead_letters(topic) == []
        finally:
            finish.set()
            queue.stop(timeout=BOUND)
