"""What an idle ``stovepipe serve`` asks of its engines, for tests and benchmarks.

Each network engine counts the requests it answered, and the count is read from the engine
itself, so whatever sends them (storage, messaging, health of connections) is counted:

* MySQL/MariaDB: ``SHOW GLOBAL STATUS LIKE 'Questions'`` (statements run for clients);
* Redis: ``MONITOR``, which shows each command a client sent and, marked ``lua``, each one a
  script ran: requests are the former (round trips), the latter are counted apart;
* etcd: ``grpc_server_msg_received_total`` on its ``/metrics`` (every gRPC message received,
  those of streams such as lease keep-alives included).

A reading of MySQL (or Redis's ``INFO``) is itself one request: :class:`EngineCounter`
subtracts its own.
The counts are of a private server (:mod:`stovepipe.fault_testing`) that nothing else uses.
"""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import socket
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from prometheus_client.parser import text_string_to_metric_families

from stovepipe.client import StovepipeClient
from stovepipe.fault_testing import PRIVATE_SERVERS, PrivateServer
from stovepipe.messaging.registry import default_messaging_url
from stovepipe.testing import GitRepository, ServeProcesses
from stovepipe.v1 import stovepipe_pb2 as pb

IDLE_REQUESTS_PER_SECOND_LIMIT = 5.0
START_UP_SECONDS = 3.0
"""Seconds after the server answers before the first idle window opens."""
"""The most requests per second an idle server may send its engines, all of them together."""


class EngineCounter:
    """Reads the number of requests ``server`` has answered, less this counter's own readings."""

    def __init__(self, server: PrivateServer) -> None:
        self._server = server
        self._readings = 0
        parts = urllib.parse.urlsplit(server.url)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port
        self._read: Callable[[], int]
        self._close: Callable[[], None] = lambda: None
        if server.name == "mysql":
            import pymysql

            connection = pymysql.connect(host=self._host, port=self._port or 3306, user="root")
            self._close = connection.close

            def questions() -> int:
                with connection.cursor() as cursor:
                    cursor.execute("SHOW GLOBAL STATUS LIKE 'Questions'")
                    row: Any = cursor.fetchone()
                return int(row[1])

            self._read, self._own_per_reading = questions, 1
        elif server.name == "redis":
            import redis

            client = redis.Redis(host=self._host, port=self._port or 6379)
            self._close = client.close

            def commands() -> int:
                # Scripts' commands included: a rough count, used only to see that work counts.
                stats: Any = client.info("stats")
                return int(stats["total_commands_processed"])

            self._read, self._own_per_reading = commands, 1
        elif server.name == "etcd":
            url = f"http://{self._host}:{self._port}/metrics"

            def messages() -> int:
                with urllib.request.urlopen(url, timeout=10) as answer:
                    text = answer.read().decode()
                return int(
                    sum(
                        sample.value
                        for family in text_string_to_metric_families(text)
                        if family.name == "grpc_server_msg_received"
                        for sample in family.samples
                        if sample.name.endswith("_total")
                    )
                )

            # Read over HTTP, not gRPC: a reading is not counted.
            self._read, self._own_per_reading = messages, 0
        else:
            raise ValueError(f"no request counter for {server.name!r}")

    def window(self, seconds: float) -> tuple[float, float]:
        """Requests per second over the next ``seconds``, and for Redis the commands its
        scripts ran per second (else 0)."""
        if self._server.name == "redis":
            return self._monitor(seconds)
        start, began = self.read(), time.monotonic()
        time.sleep(seconds)
        return (self.read() - start) / (time.monotonic() - began), 0.0

    def _monitor(self, seconds: float) -> tuple[float, float]:
        requests = scripted = 0
        with socket.create_connection((self._host, self._port or 6379), timeout=0.5) as link:
            link.sendall(b"MONITOR\r\n")
            began = time.monotonic()
            end = began + seconds
            buffer = b""
            while time.monotonic() < end:
                try:
                    chunk = link.recv(65536)
                except TimeoutError:
                    continue
                if not chunk:
                    break
                buffer += chunk
                *lines, buffer = buffer.split(b"\r\n")
                for line in lines:
                    if b"] " not in line:
                        continue  # +OK, the answer to MONITOR itself
                    if b" lua] " in line:
                        scripted += 1
                    else:
                        requests += 1
            elapsed = time.monotonic() - began
        return requests / elapsed, scripted / elapsed

    def read(self) -> int:
        """Requests answered so far, this counter's earlier readings not included."""
        value = self._read()
        own = self._readings * self._own_per_reading
        self._readings += 1
        return value - own

    def close(self) -> None:
        self._close()


@dataclasses.dataclass(frozen=True)
class IdleFigures:
    """Requests per second an idle server sent its engine, in two windows of ``seconds``."""

    engine: str
    seconds: float
    after_start: float
    """Idle from start-up (the server answered its first call)."""
    after_work: float
    """Idle after a burst of new heads went through the whole pipeline."""
    during_work: float = 0.0
    """Requests per second during the burst: the counter counts (it is not stuck at 0)."""
    scripted_after_start: float = 0.0
    scripted_after_work: float = 0.0
    """Redis: the commands its scripts ran per second meanwhile (not requests: no round
    trip each)."""


def _wait_drained(messaging_url: str, timeout: float) -> None:
    """Wait until no message is left on any of the pipeline's topics (the last ones of a
    request are settled after its final state is stored), at most ``timeout`` seconds."""
    from stovepipe.messaging.contract import (
        TOPIC_BUILD,
        TOPIC_BUILDSIGNAL,
        TOPIC_PROCESS,
        TOPIC_RECORD,
    )
    from stovepipe.messaging.registry import open_messaging

    messaging = open_messaging(messaging_url)
    try:
        deadline = time.monotonic() + timeout
        topics = (TOPIC_PROCESS, TOPIC_BUILD, TOPIC_BUILDSIGNAL, TOPIC_RECORD)
        while any(messaging.backlog(topic) for topic in topics):
            if time.monotonic() > deadline:
                raise TimeoutError(f"messages were left after {timeout} s")
            time.sleep(0.1)
    finally:
        messaging.stop(timeout=5)


def _wait_settled(stub: StovepipeClient, ids: list[str], timeout: float) -> None:
    """Wait until every request of ``ids`` is in a final state, at most ``timeout`` seconds."""
    final = {
        pb.REQUEST_STATE_SUCCEEDED,
        pb.REQUEST_STATE_FAILED,
        pb.REQUEST_STATE_SUPERSEDED,
        pb.REQUEST_STATE_CANCELLED,
    }
    deadline = time.monotonic() + timeout
    for request_id in ids:
        while True:
            answer = stub.GetRequest(pb.GetRequestRequest(id=request_id), timeout=10)
            if answer.request.state in final:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"request {request_id} did not settle in {timeout} s")
            time.sleep(0.1)


@contextlib.contextmanager
def idle_server(
    engine: str, directory: pathlib.Path
) -> Iterator[tuple[PrivateServer, str, GitRepository, str]]:
    """A private server of ``engine`` and a ``stovepipe serve`` on it (storage and its default
    messaging) with one git queue, ``idle``, built by a fake runner; yields the engine, the
    server's address, the queue's repository and the messaging URL."""
    repository = GitRepository(directory / "project")
    repository.commit("root")
    with PRIVATE_SERVERS[engine](directory) as server:
        config = directory / "stovepipe.toml"
        # etcd has no messaging engine: its queue is a SQLite file, which sends etcd nothing.
        messaging_url = (
            f"sqlite:///{directory / 'queue.db'}"
            if engine == "etcd"
            else default_messaging_url(server.url)
        )
        config.write_text(
            f'storage_url = "{server.url}"\nmessaging_url = "{messaging_url}"\n'
            + f'builds_dir = "{directory / "builds"}"\n'
            f'[queues."idle"]\ntype = "git"\npath = "{repository.path}"\nref = "main"\n'
            '[queues."idle".build]\ntype = "fake"\noutcome = "succeeded"\nduration = 0\n',
            encoding="utf-8",
        )
        processes = ServeProcesses(directory)
        try:
            serve = processes.serve(["--config", str(config)], cwd=directory)
            yield server, serve.address, repository, messaging_url
        finally:
            processes.kill_all()


def measure_idle(engine: str, seconds: float = 10.0, heads: int = 10) -> IdleFigures:
    """Start a private ``engine`` server and a ``stovepipe serve`` on it; count the requests
    it sends the engine over ``seconds`` idle after start-up, then over ``seconds`` idle after
    ``heads`` new heads were ingested and built (the build's messages all settled)."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = pathlib.Path(tmp)
        with idle_server(engine, directory) as (server, address, repository, messaging_url):
            counter = EngineCounter(server)
            try:
                # One-off set-up at start-up (Redis creates its 64 consumer groups on the first
                # claim) is not idling: the window opens once it is done.
                time.sleep(START_UP_SECONDS)
                after_start, scripted_after_start = counter.window(seconds)
                before, began = counter.read(), time.monotonic()
                with grpc.insecure_channel(address) as channel:
                    stub = StovepipeClient(channel)
                    ids = []
                    for n in range(heads):
                        repository.commit(f"change {n}")
                        ids.append(stub.Ingest(pb.IngestRequest(queue="idle"), timeout=10).id)
                    _wait_settled(stub, ids, timeout=60)
                _wait_drained(messaging_url, timeout=60)
                during_work = (counter.read() - before) / (time.monotonic() - began)
                after_work, scripted_after_work = counter.window(seconds)
            finally:
                counter.close()
    return IdleFigures(
        engine,
        seconds,
        after_start,
        after_work,
        during_work,
        scripted_after_start,
        scripted_after_work,
    )


def measure_all(engines: list[str], seconds: float) -> list[IdleFigures]:
    """:func:`measure_idle` for each engine, one after another."""
    return [measure_idle(engine, seconds) for engine in engines]
