"""What the SQLite backend promises beyond the shared contract suite."""

from __future__ import annotations

import multiprocessing
import pathlib
import sqlite3
import time

import pytest

from stovepipe.entity import Request, RequestState
from stovepipe.storage import StorageError, Unavailable, open_storage
from stovepipe.testing import open_sqlite_files


def test_sqlite_url_with_three_slashes_is_relative_and_four_is_absolute(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with open_storage("sqlite:///data/relative.db") as storage:
        storage.counter.next("c")
    assert (tmp_path / "data" / "relative.db").exists()
    with open_storage(f"sqlite:///{tmp_path}/absolute.db") as storage:
        storage.counter.next("c")
    assert (tmp_path / "absolute.db").exists()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://host/file.db", "name a file, not a host"),
        ("sqlite://", "needs a file path"),
        ("sqlite:///x.db?cache=1", "unknown option.s. cache; known: synchronous, timeout"),
        ("sqlite:///x.db?synchronous=off", "one of full, normal"),
    ],
)
def test_sqlite_bad_urls_are_rejected_with_a_clear_error(
    url: str, message: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=message):
        open_storage(url)


def test_sqlite_is_durable_across_restarts(tmp_path: pathlib.Path) -> None:
    url = f"sqlite:///{tmp_path}/state.db"
    request = Request("request/q/1", "q", "git://o/r/q/abc", RequestState.ACCEPTED, 1)
    with open_storage(url) as storage:
        storage.requests.create(request)
        storage.request_uris.create("q", request.uri, request.id)
        assert storage.counter.next("request/q") == 1
    with open_storage(url) as storage:
        assert storage.requests.get(request.id) == request
        assert storage.request_uris.get_id_by_uri("q", request.uri) == request.id
        assert storage.counter.next("request/q") == 2


def test_sqlite_writer_blocked_past_its_timeout_gets_unavailable_promptly(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "locked.db"
    with open_storage(f"sqlite:///{path}?timeout=0.2") as storage:
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            started = time.monotonic()
            with pytest.raises(Unavailable, match="locked"):
                storage.counter.next("c")
            assert time.monotonic() - started < 4  # the 0.2 s timeout, not a hang
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert storage.counter.next("c") == 1


def test_sqlite_permanent_faults_are_storage_errors_not_unavailable(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "state.db"
    with open_storage(f"sqlite:///{path}") as storage:
        with sqlite3.connect(path) as admin:
            admin.execute("DROP TABLE counter")
        with pytest.raises(StorageError, match="no such table") as raised:
            storage.counter.next("c")
        assert not isinstance(raised.value, Unavailable)


def test_sqlite_errors_keep_the_driver_error_as_their_cause(tmp_path: pathlib.Path) -> None:
    """Driver errors are mapped once and chained, so a log of the mapped error shows SQLite's."""
    path = tmp_path / "state.db"
    with open_storage(f"sqlite:///{path}") as storage:
        with sqlite3.connect(path) as admin:
            admin.execute("DROP TABLE request")
        with pytest.raises(StorageError) as raised:
            storage.requests.get("request/q/1")
        assert isinstance(raised.value.__cause__, sqlite3.OperationalError)
        assert "no such table: request" in str(raised.value.__cause__)


def test_sqlite_unknown_stored_state_is_a_storage_error(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "state.db"
    with open_storage(f"sqlite:///{path}") as storage:
        storage.requests.create(Request("r", "q", "u", RequestState.ACCEPTED, 1))
        with sqlite3.connect(path) as admin:
            admin.execute("UPDATE request SET state = 'from-a-newer-version'")
        with pytest.raises(StorageError, match="unknown state 'from-a-newer-version'"):
            storage.requests.get("r")


def test_sqlite_processes_opening_a_new_file_at_the_same_moment_all_succeed(
    tmp_path: pathlib.Path,
) -> None:
    # Four processes open a hundred new files together, meeting at a barrier before each, so
    # they collide on every file's switch to WAL and its schema.
    processes, files = 4, [str(tmp_path / f"{n}.db") for n in range(100)]
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(processes), context.Queue()
    children = [
        context.Process(target=open_sqlite_files, args=(files, barrier, results))
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    outcomes = [results.get(timeout=120) for _ in range(processes * len(files))]
    for child in children:
        child.join(timeout=30)
    assert [o for o in outcomes if o != "opened"] == []


def test_sqlite_switch_to_wal_is_retried_while_another_connection_locks_the_file(
    tmp_path: pathlib.Path,
) -> None:
    import threading

    from stovepipe.storage.sqlite import use_wal

    path = tmp_path / "locked.sqlite"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    released = threading.Timer(0.3, holder.execute, args=("COMMIT",))
    start = time.monotonic()  # before the timer: the lock is held for 0.3 s from here at least
    released.start()
    switching = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        use_wal(switching, timeout=10)
        waited = time.monotonic() - start
        (mode,) = switching.execute("PRAGMA journal_mode").fetchone()
        assert mode == "wal"
        assert waited >= 0.2, "the file was locked: the first try cannot have succeeded"
    finally:
        released.join(timeout=10)
        switching.close()
        holder.close()


def test_sqlite_switch_to_wal_gives_up_after_its_timeout_with_the_lock_error(
    tmp_path: pathlib.Path,
) -> None:
    from stovepipe.storage.sqlite import use_wal

    path = tmp_path / "locked.sqlite"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    switching = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        start = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            use_wal(switching, timeout=0.3)
        waited = time.monotonic() - start
        assert 0.3 <= waited < 5.0
    finally:
        switching.close()
        holder.execute("COMMIT")
        holder.close()
