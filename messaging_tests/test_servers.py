"""``stovepipe serve`` and ``stovepipe worker`` processes sharing one durable messaging queue:
ingest on one server, process on any; every request processed, none twice to completion."""

from __future__ import annotations

import collections
import pathlib
import re
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures

import grpc
import pytest

from stovepipe.client import StovepipeClient
from stovepipe.controller.ingest import IngestController
from stovepipe.messaging import TOPIC_PROCESS
from stovepipe.messaging.brokered import BrokeredMessaging
from stovepipe.messaging.registry import open_messaging
from stovepipe.sourcecontrol import QueueMap
from stovepipe.sourcecontrol.fake import FakeSourceControl
from stovepipe.storage import open_storage
from stovepipe.testing import ServeProcesses, stovepipe_command
from stovepipe.v1 import stovepipe_pb2 as pb

from .conftest import url_with

QUEUES = 40
TIMEOUT = 30.0
# The buildsignal stage logs this line once it has written a request's outcome.
PROCESSED = re.compile(r"request (request/\S+) succeeded")


@pytest.fixture
def own_messaging_url(durable_messaging_url: str, tmp_path: pathlib.Path) -> Iterator[str]:
    """The queue under test in a namespace of this test's own, emptied at the end: the
    servers publish to the fixed topic ``process``, which other runs on the same server
    use too."""
    parts = urllib.parse.urlsplit(durable_messaging_url)
    if parts.scheme == "sqlite":
        yield f"sqlite:///{tmp_path / 'queue.db'}"
    elif parts.scheme in ("redis", "rediss"):
        prefix = f"stovepipe:test-{uuid.uuid4().hex[:12]}:"
        url = url_with(durable_messaging_url, prefix=prefix)
        yield url
        queue = open_messaging(url)
        try:
            assert isinstance(queue, BrokeredMessaging)
            client = queue.broker._client  # type: ignore[attr-defined]
            for name in client.scan_iter(match=prefix + "*"):
                client.delete(name)
        finally:
            queue.stop()
    elif parts.scheme == "mysql":
        import pymysql

        database = f"stovepipe_test_{uuid.uuid4().hex[:12]}"
        connection = pymysql.connect(
            host=parts.hostname,
            port=parts.port or 3306,
            user=urllib.parse.unquote(parts.username or "root"),
            password=urllib.parse.unquote(parts.password or ""),
            autocommit=True,
        )
        with connection, connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {database}")
            try:
                yield urllib.parse.urlunsplit(parts._replace(path=f"/{database}"))
            finally:
                cursor.execute(f"DROP DATABASE {database}")
    else:
        yield durable_messaging_url


@pytest.fixture
def empty_messaging_url(own_messaging_url: str) -> str:
    """:func:`own_messaging_url`, checked to hold no message of the ``process`` topic."""
    queue = open_messaging(own_messaging_url)
    try:
        assert isinstance(queue, BrokeredMessaging)
        assert queue.backlog(TOPIC_PROCESS) == 0, "the queue holds messages of an earlier run"
    finally:
        queue.stop()
    return own_messaging_url


@pytest.fixture
def processes(tmp_path: pathlib.Path) -> Iterator[ServeProcesses]:
    spawned = ServeProcesses(tmp_path)
    yield spawned
    spawned.kill_all()


def write_config(tmp_path: pathlib.Path, messaging_url: str) -> pathlib.Path:
    """Fake queues ``q0``..``q39`` (one commit each, built by a fake runner that succeeds),
    SQLite storage shared by the processes."""
    lines = [
        f'storage_url = "sqlite:///{tmp_path / "stovepipe.db"}"',
        f'messaging_url = "{messaging_url}"',
        'log_level = "info"',
    ]
    for n in range(QUEUES):
        lines += [f'[queues."q{n}"]', 'type = "fake"', f'commits = ["c{n}"]']
        lines += [f'[queues."q{n}".build]', 'type = "fake"']
    path = tmp_path / "stovepipe.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def ingest_all(address: str) -> list[str]:
    """Ingest every queue once, from 8 client threads at a time; the request ids."""
    with grpc.insecure_channel(address) as channel:
        client = StovepipeClient(channel)
        with futures.ThreadPoolExecutor(8) as pool:
            return list(
                pool.map(
                    lambda n: client.Ingest(pb.IngestRequest(queue=f"q{n}"), timeout=TIMEOUT).id,
                    range(QUEUES),
                )
            )


def processed(logs: Sequence[str]) -> list[collections.Counter[str]]:
    """Per process, how often each request id was processed to completion."""
    return [collections.Counter(PROCESSED.findall(log)) for log in logs]


def wait_until_processed(
    ids: list[str], read_logs: Callable[[], Sequence[str]]
) -> list[collections.Counter[str]]:
    """Wait until every id was processed somewhere, and a moment more; the counts."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        counts = processed(read_logs())
        if set(ids) <= set().union(*counts):
            time.sleep(1.0)  # would a duplicate still come?
            return processed(read_logs())
        assert time.monotonic() < deadline, f"unprocessed: {set(ids) - set().union(*counts)}"
        time.sleep(0.1)


def test_two_servers_on_one_queue_ingest_on_one_process_on_either_each_request_once(
    empty_messaging_url: str, processes: ServeProcesses, tmp_path: pathlib.Path
) -> None:
    config = write_config(tmp_path, empty_messaging_url)
    # One after the other: the first creates the storage file's schema.
    first = processes.serve(["--config", str(config)], cwd=tmp_path)
    second = processes.serve(["--config", str(config)], cwd=tmp_path)

    ids = ingest_all(first.address)

    assert sorted(ids) == sorted(f"request/q{n}/1" for n in range(QUEUES))
    counts = wait_until_processed(ids, lambda: [first.output(), second.output()])
    total = sum(counts, collections.Counter())
    assert set(total) == set(ids), "every ingested request was processed"
    assert all(times == 1 for times in total.values()), f"processed twice: {total}"
    assert first.stop() == 0, first.output()
    assert second.stop() == 0, second.output()


def test_a_worker_process_processes_what_another_process_ingests_and_stops_gracefully(
    empty_messaging_url: str, tmp_path: pathlib.Path
) -> None:
    config = write_config(tmp_path, empty_messaging_url)
    worker_log = tmp_path / "worker.log"
    with worker_log.open("wb") as sink:
        worker = subprocess.Popen(
            [*stovepipe_command(), "worker", "--config", str(config)],
            cwd=tmp_path,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        # Ingest here, in a process that publishes but consumes nothing.
        sources = QueueMap(
            {f"q{n}": FakeSourceControl([f"c{n}"], name=f"q{n}") for n in range(QUEUES)}
        )
        publisher = open_messaging(empty_messaging_url)
        with open_storage(f"sqlite:///{tmp_path / 'stovepipe.db'}") as storage:
            ingest = IngestController(storage, sources, publisher)
            ids = [ingest.ingest(f"q{n}").id for n in range(QUEUES)]
        publisher.stop(timeout=5)

        (counts,) = wait_until_processed(ids, lambda: [worker_log.read_text()])
        assert set(counts) == set(ids)
        assert all(times == 1 for times in counts.values()), f"processed twice: {counts}"
        assert "stovepipe worker running the pipeline" in worker_log.read_text()
        worker.terminate()
        assert worker.wait(TIMEOUT) == 0, worker_log.read_text()
        assert "stopped" in worker_log.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(TIMEOUT)


def test_a_worker_refuses_an_in_process_queue_no_server_could_reach(
    tmp_path: pathlib.Path,
) -> None:
    config = tmp_path / "stovepipe.toml"
    config.write_text('[queues."q0"]\ntype = "fake"\ncommits = ["c0"]\n', encoding="utf-8")
    result = subprocess.run(
        [*stovepipe_command(), "worker", "--config", str(config), "--storage-url", "memory://"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 2
    assert "needs a messaging queue shared with the servers" in result.stderr
