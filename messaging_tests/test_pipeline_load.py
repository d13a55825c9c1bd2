"""Two ``stovepipe serve`` processes running the whole pipeline on one MySQL database or one
Redis (storage and messaging both on that engine) under load: 8 callers ingest a git ref that
keeps moving, alternating between the servers, for :data:`DURATION` seconds.

Rules: the queue's ``in_flight`` never exceeds its ``max_concurrent`` (sampled from storage
every few milliseconds, and checked by the builds themselves, which count their running
peers), it ends at 0, and every request ends terminal. The test prints the counts.

Each run works in a namespace of its own (a fresh MySQL database with the schema applied by
``stovepipe migrate``, or a fresh Redis key prefix), removed at the end.
"""

from __future__ import annotations

import collections
import dataclasses
import pathlib
import re
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator

import grpc
import pytest

from stovepipe.client import StovepipeClient
from stovepipe.controller.queues import request_id, request_number
from stovepipe.entity import RequestState
from stovepipe.storage import NotFound, Storage, open_storage
from stovepipe.testing import GitRepository, ServeProcesses, run_cli
from stovepipe.v1 import stovepipe_pb2 as pb

from .conftest import NETWORK_TARGETS, _resolve, _target_id, _targets, url_with

DURATION = 60.0
"""Seconds the callers ingest."""
CALLERS = 8
MAX_CONCURRENT = 2
QUEUE = "project/main"
COMMIT_EVERY = 0.25
"""Seconds between two new heads of the ref."""
BUILD_SECONDS = 0.5
"""Seconds each build's command takes: longer than two heads apart, so heads wait for slots."""
CALL_EVERY = 0.1
"""Seconds a caller waits between two calls, as a poller does. Each Ingest of a head still
waiting publishes it to the process stage again, so callers in a busy loop would bury each
new head under copies of the old ones, and nothing would build while they called."""
SAMPLE_EVERY = 0.002
"""Seconds between two reads of the queue's ``in_flight``."""
SETTLE = 60.0
"""Bound, in seconds, on the wait for every request to end once the callers stop."""
RPC_TIMEOUT = 10.0
BUILD_ID = re.compile(r"[0-9a-f]{32}")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The network engines the run covers (``--messaging-url`` narrows them, as for the suite)."""
    if "engine_target" in metafunc.fixturenames:
        targets = [t for t in _targets(metafunc.config) if _target_id(t) in NETWORK_TARGETS]
        metafunc.parametrize("engine_target", targets, ids=[_target_id(t) for t in targets])


@dataclasses.dataclass(frozen=True)
class Backend:
    """Where the servers keep their state and pass their messages."""

    storage_url: str
    messaging_url: str


@pytest.fixture
def backend(engine_target: str, request: pytest.FixtureRequest) -> Iterator[Backend]:
    """A namespace of this test's own on the engine under test, removed at the end."""
    url = _resolve(engine_target, request)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "mysql":
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
                own = urllib.parse.urlunsplit(parts._replace(path=f"/{database}"))
                migrated = run_cli("migrate", own, timeout=60)
                assert migrated.returncode == 0, migrated.stderr
                yield Backend(own, own)
            finally:
                cursor.execute(f"DROP DATABASE {database}")
    else:
        import redis

        # Storage keys start with a store's tag, the messaging queue's under "mq:".
        prefix = f"stovepipe:test-load-{uuid.uuid4().hex[:12]}:"
        try:
            yield Backend(url_with(url, prefix=prefix), url_with(url, prefix=f"{prefix}mq:"))
        finally:
            client = redis.Redis.from_url(url.partition("?")[0], socket_timeout=10)
            with client:
                for name in client.scan_iter(match=prefix + "*", count=1000):
                    client.delete(name)


@pytest.fixture
def servers(backend: Backend, tmp_path: pathlib.Path) -> Iterator[ServeProcesses]:
    """``stovepipe serve`` processes, killed at teardown (before the namespace is removed)."""
    spawned = ServeProcesses(tmp_path)
    yield spawned
    spawned.kill_all()


def write_config(tmp_path: pathlib.Path, backend: Backend, repo: GitRepository) -> pathlib.Path:
    """The queue ``project/main`` on ``repo``, each head built by a command that records how
    many builds run beside it, at most :data:`MAX_CONCURRENT` at once."""
    running = tmp_path / "running"
    running.mkdir()
    # Each build marks itself running, counts the marks, and clears its mark when done.
    command = (
        f"touch {running}/$STOVEPIPE_HEAD_SHA; "
        f"ls {running} | wc -l >> {tmp_path}/peers; "
        f"sleep {BUILD_SECONDS}; rm -f {running}/$STOVEPIPE_HEAD_SHA"
    )
    path = tmp_path / "stovepipe.toml"
    path.write_text(
        "\n".join(
            [
                f'storage_url = "{backend.storage_url}"',
                f'messaging_url = "{backend.messaging_url}"',
                f'builds_dir = "{tmp_path / "builds"}"',
                'log_level = "debug"',  # the process stage logs a request waiting for a slot
                f'[queues."{QUEUE}"]',
                'type = "git"',
                f'path = "{repo.path}"',
                'ref = "main"',
                f'[queues."{QUEUE}".build]',
                'type = "command"',
                f'command = "{command}"',
                "timeout = 60",
                f"max_concurrent = {MAX_CONCURRENT}",
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    return path


class InFlightSampler(threading.Thread):
    """Reads the queue's ``in_flight`` every :data:`SAMPLE_EVERY` seconds until stopped;
    ``counts`` maps each value read to how often it was read."""

    def __init__(self, storage: Storage) -> None:
        super().__init__(name="in-flight-sampler", daemon=True)
        self._storage = storage
        self.stop = threading.Event()
        self.counts: collections.Counter[int] = collections.Counter()
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.stop.wait(SAMPLE_EVERY):
            try:
                self.counts[self._storage.queues.get(QUEUE).in_flight] += 1
            except NotFound:
                continue  # no ingest yet
            except Exception as error:
                self.errors.append(repr(error))

    @property
    def highest(self) -> int:
        """The highest ``in_flight`` read, 0 before the first read."""
        return max(self.counts, default=0)


class Callers:
    """:data:`CALLERS` threads calling Ingest, each alternating between the servers, until
    :meth:`stop`; ``seen`` holds the ids answered, ``outcomes`` counts the calls by status."""

    def __init__(self, clients: list[StovepipeClient]) -> None:
        self._clients = clients
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.seen: set[str] = set()
        self.outcomes: collections.Counter[str] = collections.Counter()
        self._threads = [
            threading.Thread(target=self._call, args=(n,), name=f"caller-{n}", daemon=True)
            for n in range(CALLERS)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> list[str]:
        """Stop calling; wait (bounded) for the calls under way; the callers still running."""
        self._stop.set()
        for thread in self._threads:
            if thread.ident is not None:
                thread.join(RPC_TIMEOUT + 5)
        return [thread.name for thread in self._threads if thread.is_alive()]

    def _call(self, offset: int) -> None:
        calls = offset
        while not self._stop.is_set():
            client = self._clients[calls % len(self._clients)]
            calls += 1
            try:
                response: pb.IngestResponse = client.Ingest(
                    pb.IngestRequest(queue=QUEUE), timeout=RPC_TIMEOUT
                )
            except grpc.RpcError as error:
                with self._lock:
                    self.outcomes[error.code().name] += 1
            else:
                with self._lock:
                    self.outcomes["OK"] += 1
                    self.seen.add(response.id)
            self._stop.wait(CALL_EVERY)


def advance_until(stop: threading.Event, repo: GitRepository, heads: list[str]) -> None:
    """Commit a new head every :data:`COMMIT_EVERY` seconds until ``stop`` is set."""
    while not stop.wait(COMMIT_EVERY):
        heads.append(repo.commit(f"head {len(heads)}"))


def live_requests(storage: Storage, ids: set[str]) -> set[str]:
    """Those of ``ids`` that are not terminal (``accepted`` or ``processing``)."""
    return {i for i in ids if not storage.requests.get(i).state.terminal}


def stored_request_ids(storage: Storage, highest: int) -> set[str]:
    """Every request of the queue numbered up to ``highest`` (numbers can skip)."""
    ids = set()
    for number in range(1, highest + 1):
        try:
            ids.add(storage.requests.get(request_id(QUEUE, number)).id)
        except NotFound:
            continue
    return ids


def what_became_of(storage: Storage, request: str, logs: list[str]) -> str:
    """The request's stored state and the lines of ``logs`` that name it (the first and last
    few of many)."""
    named = re.compile(re.escape(request) + r"\b")
    lines = sorted(line for log in logs for line in log.splitlines() if named.search(line))
    if len(lines) > 12:
        lines[6:-3] = [f"... {len(lines) - 9} more ..."]
    return f"{request} is {storage.requests.get(request).state}:\n  " + "\n  ".join(lines)


def test_two_servers_under_eight_callers_keep_in_flight_within_max_concurrent_and_end_every_request(
    backend: Backend, servers: ServeProcesses, tmp_path: pathlib.Path
) -> None:
    repo = GitRepository(tmp_path / "project")
    heads = [repo.commit("first")]
    config = write_config(tmp_path, backend, repo)
    first, second = servers.serve_many(2, ["--config", str(config)], cwd=tmp_path)
    channels = [grpc.insecure_channel(s.address) for s in (first, second)]
    clients = [StovepipeClient(channel) for channel in channels]
    storage = open_storage(backend.storage_url)
    sampler = InFlightSampler(storage)
    callers = Callers(clients)
    committing = threading.Event()
    committer = threading.Thread(
        target=advance_until, args=(committing, repo, heads), name="committer", daemon=True
    )
    try:
        sampler.start()
        started = time.monotonic()
        callers.start()
        committer.start()
        time.sleep(DURATION)
        committing.set()
        assert not callers.stop(), "callers did not stop"
        committer.join(RPC_TIMEOUT)
        ingesting = time.monotonic() - started

        # Every request stored (also one whose caller saw no answer) must end terminal.
        latest = storage.queues.get(QUEUE).latest_request_id
        highest = max(request_number(i) for i in [latest, *callers.seen])
        requests = stored_request_ids(storage, highest) | callers.seen
        live = set(requests)
        deadline = time.monotonic() + SETTLE
        while True:
            live = live_requests(storage, live)
            in_flight = storage.queues.get(QUEUE).in_flight
            if (not live and in_flight == 0) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        settled = time.monotonic() - started - ingesting
        time.sleep(0.5)  # a late slot taken now would still be seen
        sampler.stop.set()
        sampler.join(5)

        states = collections.Counter(storage.requests.get(i).state for i in requests)
        final: pb.GetQueueResponse = clients[0].GetQueue(
            pb.GetQueueRequest(queue=QUEUE), timeout=RPC_TIMEOUT
        )
        builds = [p for p in (tmp_path / "builds").iterdir() if BUILD_ID.fullmatch(p.name)]
        peers_file = tmp_path / "peers"
        peers = [int(n) for n in peers_file.read_text().split()] if peers_file.exists() else []
        logs = [first.output(), second.output()]
        print(
            f"\n{_target_id(backend.storage_url)}: {len(requests)} requests by final state "
            f"{dict(sorted((str(s), n) for s, n in states.items()))}; {len(builds)} builds; "
            f"max in_flight observed {sampler.highest} of max_concurrent {MAX_CONCURRENT} "
            f"(samples by value {dict(sorted(sampler.counts.items()))}); at most "
            f"{max(peers, default=0)} builds "
            f"running at once; final in_flight {final.queue.in_flight}; {len(heads)} heads "
            f"committed; Ingest calls by status {dict(callers.outcomes)}; sampler errors "
            f"{len(sampler.errors)}; ingested for {ingesting:.1f} s, settled "
            f"{settled:.1f} s later; ERROR lines in the server logs "
            f"{[log.count(' ERROR ') for log in logs]} (in {tmp_path})"
        )

        assert sampler.highest <= MAX_CONCURRENT, f"in_flight reached {sampler.highest}"
        assert max(peers, default=0) <= MAX_CONCURRENT, f"builds running at once: {peers}"
        # Else the run proves nothing about the bound.
        assert sampler.highest == MAX_CONCURRENT, "the load never took every slot"
        assert not live, "requests that never ended, with what the servers logged of them:\n" + (
            "\n".join(what_became_of(storage, i, logs) for i in sorted(live)[:5])
        )
        assert final.queue.in_flight == 0
        assert all(state.terminal for state in states), states
        assert RequestState.SUCCEEDED in states, "no build ever succeeded"
        assert set(callers.outcomes) == {"OK"}, f"Ingest failed: {callers.outcomes}"
        assert not sampler.errors, sampler.errors[:5]
        assert first.stop() == 0, first.output()[-5000:]
        assert second.stop() == 0, second.output()[-5000:]
    finally:
        committing.set()
        callers.stop()
        sampler.stop.set()
        sampler.join(5)
        for channel in channels:
            channel.close()
        storage.close()
