"""Ingest is idempotent on (queue, uri) under real races: threads against one server, and
two server processes sharing one SQLite file."""

from __future__ import annotations

import contextlib
import pathlib
import threading
from collections.abc import Callable

import grpc

from stovepipe.client import StovepipeClient
from stovepipe.sourcecontrol.fake import FakeSourceControl
from stovepipe.storage import NotFound, open_storage
from stovepipe.testing import ServeProcesses, StartServer
from stovepipe.v1 import stovepipe_pb2 as pb

TIMEOUT = 30


def race(racers: int, call: Callable[[int], str]) -> list[str]:
    """Run ``call(i)`` on ``racers`` threads released together; return every result."""
    barrier = threading.Barrier(racers)
    results: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        barrier.wait()
        try:
            result = call(i)
        except BaseException as error:
            with lock:
                errors.append(error)
            return
        with lock:
            results.append(result)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return results


def stored_request_ids(storage_url: str, queue: str, candidates: int) -> list[str]:
    """The ids ``request/<queue>/1..candidates`` that have a request row."""
    found = []
    with open_storage(storage_url) as storage:
        for n in range(1, candidates + 1):
            with contextlib.suppress(NotFound):
                found.append(storage.requests.get(f"request/{queue}/{n}").id)
    return found


def test_32_concurrent_ingests_of_one_new_head_return_one_id_and_create_one_request(
    start_server: StartServer, tmp_path: pathlib.Path
) -> None:
    source = FakeSourceControl(["c1"], name="q")
    # A loaded machine can hold SQLite's write lock longer than the default 5 s wait.
    storage_url = f"sqlite:///{tmp_path / 'races.db'}?timeout=30"
    running = start_server({"q": source}, storage_url=storage_url, max_workers=32)
    first = running.client.Ingest(pb.IngestRequest(queue="q"), timeout=TIMEOUT)
    assert first.id == "request/q/1"
    source.push("c2")  # a new head, which all 32 callers report at once

    ids = race(32, lambda _: running.client.Ingest(pb.IngestRequest(queue="q"), timeout=TIMEOUT).id)

    assert len(ids) == 32
    assert len(set(ids)) == 1
    winner = ids[0]
    assert winner != first.id
    # Losers drew numbers from the counter but wrote no row: exactly one request per head.
    assert stored_request_ids(running.storage_url, "q", candidates=40) == [first.id, winner]


def test_two_server_processes_sharing_one_sqlite_file_race_the_same_head_and_agree_on_one_id(
    processes: ServeProcesses, tmp_path: pathlib.Path
) -> None:
    database = tmp_path / "shared.db"
    config = tmp_path / "stovepipe.toml"
    config.write_text(
        f'storage_url = "sqlite:///{database}?timeout=30"\n'
        '[queues."q"]\ntype = "fake"\ncommits = ["c1"]\n',
        encoding="utf-8",
    )
    servers = processes.serve_many(2, ["--config", str(config)], cwd=tmp_path)
    channels = [grpc.insecure_channel(server.address) for server in servers]
    clients = [StovepipeClient(channel) for channel in channels]
    try:
        for client in clients:  # connected before the race starts
            client.Ping(pb.PingRequest(), timeout=TIMEOUT)
        ids = race(
            16,
            lambda i: clients[i % 2].Ingest(pb.IngestRequest(queue="q"), timeout=TIMEOUT).id,
        )
    finally:
        for channel in channels:
            channel.close()
    assert set(ids) == {ids[0]}
    assert stored_request_ids(f"sqlite:///{database}", "q", candidates=20) == [ids[0]]
    for server in servers:
        assert server.stop() == 0, server.output()
