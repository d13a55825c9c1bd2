"""SQLite writers of one process queue on one lock per file, shared by storage and messaging.

Without it, every writer that finds the file locked sleeps in SQLite's busy handler and, under
load, runs out of its timeout: "database is locked", mapped to ``Unavailable``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from stovepipe.entity import Queue, Request, RequestState
from stovepipe.messaging.registry import open_messaging
from stovepipe.storage import Storage, Unavailable, VersionMismatch, open_storage
from stovepipe.storage.sqlite import WriterLock, writer_lock

THREADS = 32
WRITES = 40


def test_sqlite_writer_lock_is_one_per_file_by_real_path(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    path = tmp_path / "dir" / "a.db"
    (tmp_path / "link").symlink_to(tmp_path / "dir")
    lock = writer_lock(str(path))
    assert writer_lock(str(tmp_path / "link" / "a.db")) is lock
    assert writer_lock(os.path.relpath(path)) is lock
    assert writer_lock(str(tmp_path / "dir" / "b.db")) is not lock


def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait, at most ``timeout`` seconds, for ``condition``; fail if it never holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.001)


def _free_for_another_thread(lock: WriterLock) -> bool:
    """Whether another thread takes ``lock`` within half a second."""
    taken = threading.Event()

    def take() -> None:
        with contextlib.suppress(Unavailable), lock.held(timeout=0.5):
            taken.set()

    thread = threading.Thread(target=take)
    thread.start()
    thread.join(timeout=10)
    return taken.is_set()


def test_sqlite_writers_take_the_writer_lock_in_the_order_they_came() -> None:
    lock = WriterLock()
    order: list[int] = []

    def write(index: int) -> None:
        with lock.held(timeout=10):
            order.append(index)

    writers = [threading.Thread(target=write, args=(i,)) for i in range(5)]
    with lock.held(timeout=1):
        for count, thread in enumerate(writers, start=1):
            thread.start()
            _until(lambda count=count: lock.waiting == count)  # type: ignore[misc]
    for thread in writers:
        thread.join(timeout=10)
    assert order == [0, 1, 2, 3, 4]


def test_sqlite_a_writer_that_writes_again_at_once_queues_behind_the_one_waiting() -> None:
    """A delivery runs its stage's writes one after another: it must not take the lock back
    before a request's writer that was already waiting."""
    lock = WriterLock()
    order: list[str] = []

    def request_writer() -> None:
        with lock.held(timeout=10):
            order.append("request")

    waiting = threading.Thread(target=request_writer)
    with lock.held(timeout=1):
        order.append("delivery, first write")
        waiting.start()
        _until(lambda: lock.waiting == 1)
        time.sleep(0.05)  # the waiter is asleep on the lock by now, however the lock queues
    with lock.held(timeout=10):  # at once, with the GIL still held: no chance for the waiter
        order.append("delivery, second write")
    waiting.join(timeout=10)
    assert order == ["delivery, first write", "request", "delivery, second write"]


def test_sqlite_a_writer_that_waited_past_its_timeout_is_unavailable_and_leaves_the_queue() -> None:
    lock = WriterLock()
    errors: list[BaseException] = []

    def impatient() -> None:
        try:
            with lock.held(timeout=0.05):
                pass
        except BaseException as error:
            errors.append(error)

    with lock.held(timeout=1):
        thread = threading.Thread(target=impatient)
        thread.start()
        thread.join(timeout=10)
        assert lock.waiting == 0
    assert len(errors) == 1
    assert isinstance(errors[0], Unavailable)
    assert "waited 0.05 s for the write lock" in str(errors[0])
    assert _free_for_another_thread(lock)  # not handed to the writer that gave up


def test_sqlite_writer_lock_is_reentrant_in_one_thread() -> None:
    lock = WriterLock()
    with lock.held(timeout=1), lock.held(timeout=1):
        assert lock.waiting == 0
    assert _free_for_another_thread(lock)  # released as often as it was taken


def test_sqlite_storage_and_messaging_writes_wait_for_the_files_writer_lock(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    storage = open_storage(url)
    messaging = open_messaging(url)
    done: list[str] = []
    errors: list[BaseException] = []

    def write(name: str) -> None:
        try:
            if name == "storage":
                storage.counter.next("domain")
            else:
                messaging.publish("process", "key", b"payload")
            done.append(name)
        except BaseException as error:
            errors.append(error)

    try:
        with writer_lock(str(tmp_path / "shared.db")).held(timeout=5):
            writers = [threading.Thread(target=write, args=(n,)) for n in ("storage", "queue")]
            for thread in writers:
                thread.start()
            for thread in writers:
                thread.join(timeout=0.5)
            assert done == []  # both wait while this thread holds the lock
        for thread in writers:
            thread.join(timeout=10)
        assert errors == []
        assert sorted(done) == ["queue", "storage"]
    finally:
        messaging.stop(timeout=1)
        storage.close()


def test_sqlite_32_threads_writing_concurrently_see_no_database_is_locked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Storage writes of every kind and messaging publishes race on one file, from 32
    threads, with a short busy timeout: with the writers queued in the process, none fails."""
    # The URL's timeout bounds the wait in the process's queue too; 32 writers on a loaded
    # machine can queue past 0.5 s, which is not what this test is about: SQLite's busy
    # handler keeps its 0.5 s, and the queue gets a minute.
    held = WriterLock.held
    monkeypatch.setattr(WriterLock, "held", lambda self, timeout: held(self, 60.0))
    url = f"sqlite:///{tmp_path}/shared.db?timeout=0.5&synchronous=normal"
    storage: Storage = open_storage(url)
    messaging = open_messaging(f"sqlite:///{tmp_path}/shared.db?timeout=0.5")
    storage.queues.create(Queue("q"))
    start = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def writer(index: int) -> None:
        try:
            start.wait(timeout=10)
            for _ in range(WRITES):
                number = storage.counter.next("request/q")
                request = Request(
                    f"request/q/{number}", "q", f"uri{number}", RequestState.ACCEPTED, 1
                )
                storage.request_uris.create("q", request.uri, request.id)
                storage.requests.create(request)
                processing = dataclasses.replace(request, state=RequestState.PROCESSING)
                storage.requests.update(processing, old_version=1, new_version=2)
                queue = storage.queues.get("q")
                # A racer's compare-and-set may win: expected, not a lock failure.
                with contextlib.suppress(VersionMismatch):
                    storage.queues.update(
                        dataclasses.replace(queue, in_flight=queue.in_flight + 1),
                        old_version=queue.version,
                        new_version=queue.version + 1,
                    )
                messaging.publish("process", f"key{index}", b"payload")
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(THREADS)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not any(thread.is_alive() for thread in threads)
        assert errors == []
        assert storage.counter.next("request/q") == THREADS * WRITES + 1
    finally:
        messaging.stop(timeout=1)
        storage.close()
