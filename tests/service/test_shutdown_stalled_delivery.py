"""A server stopping while a delivery is stalled in its handler (a write waiting on a locked
SQLite file) leaves the storage open for it: closing connections under a running thread can
crash the process."""

from __future__ import annotations

import pathlib
import threading

from stovepipe.messaging import Message
from stovepipe.messaging.inprocess import InProcessMessaging
from stovepipe.metrics import Metrics
from stovepipe.server import StovepipeServer
from stovepipe.sourcecontrol import QueueMap
from stovepipe.storage import NotFound, open_storage

TIMEOUT = 10.0


def test_stop_keeps_the_storage_open_for_a_delivery_still_running(tmp_path: pathlib.Path) -> None:
    messaging = InProcessMessaging()
    server = StovepipeServer(
        open_storage(f"sqlite:///{tmp_path / 'stovepipe.db'}"),
        QueueMap({}),
        listen="127.0.0.1:0",
        messaging=messaging,
        metrics=Metrics(process_metrics=False),
    )
    started, release, finished = threading.Event(), threading.Event(), threading.Event()
    outcome: list[BaseException | None] = []

    def stalled_write(message: Message) -> None:
        started.set()
        release.wait(TIMEOUT)
        try:
            server.storage.requests.get("request/q/1")  # the storage it still uses
        except NotFound as error:
            outcome.append(None if "closed" not in str(error) else error)
        except BaseException as error:
            outcome.append(error)
        finally:
            finished.set()

    messaging.subscribe("stall", stalled_write)
    server.start()
    messaging.publish("stall", "k", b"x")
    assert started.wait(TIMEOUT)
    assert server.stop(grace=0.2) is False, "a delivery was still running"
    release.set()
    assert finished.wait(TIMEOUT)
    assert outcome == [None], "the storage was closed under the running delivery"
    server.storage.close()


def test_stop_closes_the_storage_once_every_delivery_ended(tmp_path: pathlib.Path) -> None:
    server = StovepipeServer(
        open_storage(f"sqlite:///{tmp_path / 'stovepipe.db'}"),
        QueueMap({}),
        listen="127.0.0.1:0",
        metrics=Metrics(process_metrics=False),
    )
    server.start()
    assert server.stop(grace=2.0) is True
