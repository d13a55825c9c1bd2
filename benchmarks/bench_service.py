"""The service's benchmark of record: a real ``stovepipe serve`` per backend, over gRPC.

    python -m benchmarks.bench_service [--backends memory,sqlite,mysql,redis,etcd]
        [--clients 1,8,32] [--seconds 2] [--rounds 3] [--drain 30] [--operations same,new,get]
    python -m benchmarks.bench_service --rss 1000,20000 [--backends sqlite]

Each backend runs with its default messaging (``memory://`` in process, SQLite, MySQL and
Redis on the same engine; etcd, which has none, with a SQLite file beside it), serving git
queues built by a fake runner (so every admitted head flows through the whole pipeline):
``bench/steady``, whose head never moves
(the poller's common case), and one ``bench/new-<n>`` per client, whose head the client moves
to a fresh commit before each timed call (so every Ingest admits a new head). The steady
queue's first head is building (an hour-long fake build holds its one build slot) and its
head is a second commit, ``accepted`` and waiting for the slot: the case where an ingest of
an unchanged head may publish it again. Operations:

* ``Ping``, which touches no backend: the floor of any call on this server;
* ``Ingest (same head)``, ``Ingest (new head)`` and ``GetRequest`` (of the steady head's
  request).

Clients are threads of this process, each with a channel of its own. At each client count the
operations run in rounds, interleaved (Ping, same head, new head, GetRequest, then again), for
``--seconds`` each; an operation's throughput is divided by Ping's over the same rounds. Per
call the table gives p50 and p99 latency, the server process's CPU (user + system, from
``/proc/<pid>/stat``), and storage operations (from ``stovepipe_storage_operations_total``
on the server's ``/metrics``; the pipeline's own operations during the segment included, so
a new head's figure is its whole cost). ``errors`` counts failed calls (``UNAVAILABLE``
included); a client told to retry later (``grpc-retry-pushback-ms``) waits as told, as a
poller would. When the load stops, the messaging backlog (messages published and not yet
acknowledged) is read, and again until it drains or ``--drain`` seconds pass; on the durable
queues the steady queue's running build keeps one message there (its next status check), so
the figures are above the backlog before the load. Then the unchanged head alone is loaded
(the most clients, ``--seconds`` times ``--rounds``) and the backlog it leaves is printed
apart: new heads' pipeline traffic is expected to queue, the unchanged head's is not.

``--rss`` runs a single server with ingest-only queues (the fake runner keeps every build in
memory) and ingests new heads, printing the server's resident memory after each count given.

Shared servers are used through names of their own (a MySQL database, key prefixes on Redis
and etcd), removed afterwards; their addresses come from ``STOVEPIPE_BENCH_MYSQL``,
``STOVEPIPE_BENCH_REDIS`` and ``STOVEPIPE_BENCH_ETCD`` (defaults: 127.0.0.1 on the usual
ports). Figures are printed; nothing is asserted.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import dataclasses
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence

import grpc
import pygit2
from prometheus_client.parser import text_string_to_metric_families

from stovepipe.client import StovepipeClient
from stovepipe.messaging.contract import TOPIC_BUILD, TOPIC_BUILDSIGNAL, TOPIC_PROCESS, TOPIC_RECORD
from stovepipe.service import RETRY_PUSHBACK_KEY
from stovepipe.v1 import stovepipe_pb2 as pb

BACKENDS = ("memory", "sqlite", "mysql", "redis", "etcd")
OPERATIONS = ("Ping", "Ingest (same head)", "Ingest (new head)", "GetRequest")
TOPICS = (TOPIC_PROCESS, TOPIC_BUILD, TOPIC_BUILDSIGNAL, TOPIC_RECORD)
WARMUP = 3
CALL_TIMEOUT = 30.0
STEADY = "bench/steady"
MYSQL = os.environ.get("STOVEPIPE_BENCH_MYSQL", "mysql://root@127.0.0.1:3306")
REDIS = os.environ.get("STOVEPIPE_BENCH_REDIS", "redis://127.0.0.1:6379/0")
ETCD = os.environ.get("STOVEPIPE_BENCH_ETCD", "etcd://127.0.0.1:2379")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass
class Totals:
    """What one operation accumulated over its segments at one client count."""

    latencies_us: list[float] = dataclasses.field(default_factory=list)
    elapsed: float = 0.0
    cpu_seconds: float = 0.0
    storage_operations: float = 0.0
    errors: int = 0
    codes: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    details: dict[str, str] = dataclasses.field(default_factory=dict)
    """Per status, the details of the first failed call."""

    @property
    def rate(self) -> float:
        return len(self.latencies_us) / self.elapsed if self.elapsed else 0.0

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies_us)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


@dataclasses.dataclass
class Row:
    backend: str
    clients: int
    operation: str
    totals: Totals
    ping: Totals


# -- the deployments: each backend with its default messaging, under names of our own ------


@contextlib.contextmanager
def deployment(backend: str, directory: pathlib.Path, tag: str) -> Iterator[tuple[str, str]]:
    """Yield ``(storage_url, messaging_url)`` for ``backend``; remove what it stored afterwards.
    An empty queue URL means the default that goes with the storage."""
    if backend == "memory":
        yield "memory://", ""
    elif backend == "sqlite":
        yield f"sqlite:///{directory / 'bench.db'}", ""
    elif backend == "mysql":
        import pymysql

        parts = urllib.parse.urlsplit(MYSQL)
        database = f"stovepipe_bench_{tag}"

        def connect() -> pymysql.Connection[pymysql.cursors.Cursor]:
            return pymysql.connect(
                host=parts.hostname or "127.0.0.1",
                port=parts.port or 3306,
                user=urllib.parse.unquote(parts.username or "root"),
                password=urllib.parse.unquote(parts.password or ""),
            )

        with contextlib.closing(connect()) as connection, connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE `{database}`")
        try:
            url = f"{MYSQL.rstrip('/')}/{database}"
            stovepipe = pathlib.Path(sys.executable).with_name("stovepipe")
            subprocess.run([str(stovepipe), "migrate", url], check=True, capture_output=True)
            yield url, ""
        finally:
            with contextlib.closing(connect()) as connection, connection.cursor() as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS `{database}`")
    elif backend == "redis":
        import redis

        prefix = f"stovepipe-bench-{tag}:"
        storage_url = f"{REDIS}?prefix={urllib.parse.quote(prefix)}"
        messaging_url = f"{REDIS}?prefix={urllib.parse.quote(prefix + 'mq:')}"
        try:
            yield storage_url, messaging_url
        finally:
            client = redis.Redis.from_url(REDIS)
            for key in client.scan_iter(match=f"{prefix}*", count=1000):
                client.delete(key)
            client.close()
    elif backend == "etcd":
        prefix = f"/stovepipe-bench-{tag}/"
        try:
            # etcd has no messaging engine, and serve refuses the in-process one beside a
            # durable storage: the queue is a SQLite file of the server's.
            yield (
                f"{ETCD}?prefix={urllib.parse.quote(prefix)}",
                f"sqlite:///{directory / 'queue.db'}",
            )
        finally:
            _etcd_delete_prefix(prefix)
    else:
        raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")


def _etcd_delete_prefix(prefix: str) -> None:
    """Delete every key under ``prefix`` through etcd's JSON gateway."""
    parts = urllib.parse.urlsplit(ETCD)
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    body = json.dumps(
        {
            "key": base64.b64encode(prefix.encode()).decode(),
            "range_end": base64.b64encode(end.encode()).decode(),
        }
    ).encode()
    url = f"http://{parts.hostname}:{parts.port or 2379}/v3/kv/deleterange"
    with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=10) as answer:
        answer.read()


# -- the repository and the server -----------------------------------------------------------


def make_repository(path: pathlib.Path, new_queues: int) -> None:
    """A bare repository with one commit and the branches ``steady`` and ``new-<n>``."""
    repository = pygit2.init_repository(str(path), bare=True)
    signature = pygit2.Signature("bench", "bench@example.com")
    tree = repository.TreeBuilder().write()
    root = repository.create_commit(None, signature, signature, "root", tree, [])
    for name in ["steady", *(f"new-{n}" for n in range(new_queues))]:
        repository.create_reference_direct(f"refs/heads/{name}", root, False)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def write_config(
    path: pathlib.Path,
    storage_url: str,
    messaging_url: str,
    repository: pathlib.Path,
    new_queues: int,
    listen: str,
    metrics_listen: str,
    builds: bool = True,
) -> None:
    """A configuration serving the steady queue and ``new_queues`` moving ones, each built by
    a fake runner (``builds``) or ingest-only."""
    lines = [
        f"listen = {json.dumps(listen)}",
        f"metrics_listen = {json.dumps(metrics_listen)}",
        f"storage_url = {json.dumps(storage_url)}",
        'log_level = "warning"',
        f"builds_dir = {json.dumps(str(path.parent / 'builds'))}",
    ]
    if messaging_url:
        lines.append(f"messaging_url = {json.dumps(messaging_url)}")
    for queue, ref in [
        (STEADY, "steady"),
        *((f"bench/new-{n}", f"new-{n}") for n in range(new_queues)),
    ]:
        lines += [
            "",
            f"[queues.{json.dumps(queue)}]",
            'type = "git"',
            f"path = {json.dumps(str(repository))}",
            f"ref = {json.dumps(ref)}",
        ]
        if builds:
            lines += [
                "",
                f"[queues.{json.dumps(queue)}.build]",
                'type = "fake"',
                'outcome = "succeeded"',
                # The steady queue's first build holds its slot for the whole run.
                f"duration = {3600 if queue == STEADY else 0}",
            ]
    path.write_text("\n".join(lines) + "\n")


class Server:
    """A ``stovepipe serve`` process and what it exports."""

    def __init__(self, config: pathlib.Path, listen: str, metrics: str, log: pathlib.Path) -> None:
        self.address = listen
        self._metrics_url = f"http://{metrics}/metrics"
        stovepipe = pathlib.Path(sys.executable).with_name("stovepipe")
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [str(stovepipe), "serve", "--config", str(config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        with grpc.insecure_channel(listen) as channel:
            stub = StovepipeClient(channel)
            while True:
                try:
                    stub.Ping(pb.PingRequest(), timeout=2)
                    break
                except grpc.RpcError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        self.stop()
                        tail = log.read_text(errors="replace")[-2000:]
                        raise RuntimeError(f"the server did not start:\n{tail}") from None
                    time.sleep(0.2)

    def cpu_seconds(self) -> float:
        """User plus system CPU the server process has used so far."""
        fields = pathlib.Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1]
        utime, stime = fields.split()[11:13]
        return (int(utime) + int(stime)) / CLOCK_TICKS

    def rss_bytes(self) -> int:
        for line in pathlib.Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def samples(self, name: str) -> float:
        """The sum of every sample of metric family ``name`` (without ``_total``)."""
        with urllib.request.urlopen(self._metrics_url, timeout=10) as answer:
            text = answer.read().decode()
        total = 0.0
        for family in text_string_to_metric_families(text):
            if family.name == name:
                total += sum(
                    sample.value
                    for sample in family.samples
                    if not sample.name.endswith("_created")
                )
        return total

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()


# -- the clients -----------------------------------------------------------------------------


class NewHeads:
    """Moves a client's own branch to a fresh commit before each of its calls."""

    def __init__(self, repository: pathlib.Path, index: int, branch: str = "") -> None:
        self._repository = pygit2.Repository(str(repository))
        self._ref = f"refs/heads/{branch or f'new-{index}'}"
        self._signature = pygit2.Signature("bench", "bench@example.com")
        self._tree = self._repository.TreeBuilder().write()
        self._count = 0

    def advance(self) -> None:
        reference = self._repository.references[self._ref]
        parent = reference.target
        self._count += 1
        commit = self._repository.create_commit(
            None, self._signature, self._signature, f"c{self._count}", self._tree, [parent]
        )
        reference.set_target(commit)


def operation(
    name: str, index: int, repository: pathlib.Path, steady_id: str
) -> tuple[Callable[[StovepipeClient], object], NewHeads | None]:
    """Client ``index``'s call for operation ``name``, and its new heads if it needs them."""
    if name == "Ping":
        ping = pb.PingRequest()
        return lambda stub: stub.Ping(ping, timeout=CALL_TIMEOUT), None
    if name == "Ingest (same head)":
        steady = pb.IngestRequest(queue=STEADY)
        return lambda stub: stub.Ingest(steady, timeout=CALL_TIMEOUT), None
    if name == "Ingest (new head)":
        moving = pb.IngestRequest(queue=f"bench/new-{index}")
        return lambda stub: stub.Ingest(moving, timeout=CALL_TIMEOUT), NewHeads(repository, index)
    if name == "GetRequest":
        get = pb.GetRequestRequest(id=steady_id)
        return lambda stub: stub.GetRequest(get, timeout=CALL_TIMEOUT), None
    raise ValueError(f"unknown operation {name!r}")


def retry_hint(error: grpc.RpcError) -> float:
    """Seconds a refused call was told to wait (``grpc-retry-pushback-ms``), 0 without one."""
    trailing = getattr(error, "trailing_metadata", None)
    metadata = (trailing() if callable(trailing) else None) or ()
    for key, value in metadata:
        if key == RETRY_PUSHBACK_KEY:
            return int(value) / 1000
    return 0.0


def run_segment(
    server: Server,
    clients: int,
    seconds: float,
    name: str,
    repository: pathlib.Path,
    steady_id: str,
    totals: Totals,
) -> None:
    """``clients`` threads call ``name`` for ``seconds`` after a warm-up; add to ``totals``."""
    samples: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    codes: list[collections.Counter[str]] = [collections.Counter() for _ in range(clients)]
    details: dict[str, str] = {}
    deadline = [0.0]
    before: list[float] = []

    def begin() -> None:
        # Runs once every client has warmed up, before any is released.
        before[:] = [server.cpu_seconds(), server.samples("stovepipe_storage_operations")]
        deadline[0] = time.perf_counter() + seconds
        before.append(time.perf_counter())

    barrier = threading.Barrier(clients + 1)
    start_barrier = threading.Barrier(clients + 1, action=begin)

    def client(index: int) -> None:
        with grpc.insecure_channel(server.address) as channel:
            stub = StovepipeClient(channel)
            call, heads = operation(name, index, repository, steady_id)
            mine = samples[index]
            try:
                for _ in range(WARMUP):
                    if heads is not None:
                        heads.advance()
                    with contextlib.suppress(grpc.RpcError):
                        call(stub)
            finally:
                start_barrier.wait()
            while time.perf_counter() < deadline[0]:
                if heads is not None:
                    heads.advance()
                start = time.perf_counter_ns()
                try:
                    call(stub)
                except grpc.RpcError as error:
                    errors[index] += 1
                    codes[index][error.code().name] += 1
                    details.setdefault(error.code().name, error.details() or "")
                    time.sleep(retry_hint(error))  # as a well-behaved poller would
                    continue
                mine.append((time.perf_counter_ns() - start) / 1000)
            barrier.wait()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    start_barrier.wait(timeout=10 * CALL_TIMEOUT)
    barrier.wait(timeout=seconds + 5 * CALL_TIMEOUT)
    cpu, operations, start = before
    totals.elapsed += time.perf_counter() - start
    totals.cpu_seconds += server.cpu_seconds() - cpu
    totals.storage_operations += server.samples("stovepipe_storage_operations") - operations
    for thread in threads:
        thread.join()
    totals.latencies_us.extend(sample for per_client in samples for sample in per_client)
    totals.errors += sum(errors)
    for counted in codes:
        totals.codes.update(counted)
    for code, detail in details.items():
        totals.details.setdefault(code, detail)


def waiting_head(address: str, repository: pathlib.Path) -> str:
    """Admit the steady queue's first head, wait until it is building, then move the queue
    to a second head, which waits for the build slot; return that request's id."""
    steady = pb.IngestRequest(queue=STEADY)
    with grpc.insecure_channel(address) as channel:
        stub = StovepipeClient(channel)
        building = stub.Ingest(steady, timeout=CALL_TIMEOUT).id
        deadline = time.monotonic() + 60
        while (
            stub.GetRequest(pb.GetRequestRequest(id=building), timeout=CALL_TIMEOUT).request.state
            != pb.REQUEST_STATE_PROCESSING
        ):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{building} did not start building within 60 s")
            time.sleep(0.05)
        NewHeads(repository, 0, branch="steady").advance()
        return stub.Ingest(steady, timeout=CALL_TIMEOUT).id


def backlog_reader(messaging_url: str, server: Server) -> Callable[[], float | None]:
    """Read the backlog from the engine itself where the messaging is durable (the server's
    gauge refreshes only every few seconds); ``None`` for the in-process queue."""
    if messaging_url and not messaging_url.startswith("memory:"):
        from stovepipe.messaging.registry import open_messaging

        messaging = open_messaging(messaging_url)
        broker = getattr(messaging, "broker", None)
        if broker is not None and hasattr(broker, "backlog"):
            return lambda: float(sum(broker.backlog(topic) for topic in TOPICS))
    # The in-process queue: its gauge lags by up to 10 s, too coarse for a drain; no figure.
    return lambda: None


def drained(
    read_backlog: Callable[[], float | None], baseline: float, drain: float
) -> tuple[float | None, float]:
    """Read the backlog until it is back to ``baseline`` or ``drain`` seconds pass; the last
    reading (``None``: no gauge) and the seconds waited."""
    started = time.monotonic()
    remaining = read_backlog()
    while remaining is not None and remaining > baseline and time.monotonic() - started < drain:
        time.sleep(0.5)
        remaining = read_backlog()
    return remaining, time.monotonic() - started


def describe_backlog(
    left: float | None, remaining: float | None, baseline: float, waited: float
) -> str:
    """The backlog when the load stopped, above ``baseline``, and how it drained."""
    if left is None or remaining is None:
        return "no backlog gauge (in-process messaging)"
    above = left - baseline
    if above <= 0:
        return "all operations: 0 messages"
    if remaining <= baseline:
        return f"all operations: {above:.0f} messages, drained in {waited:.1f} s"
    still = remaining - baseline
    return f"all operations: {above:.0f} messages, {still:.0f} left after {waited:.0f} s"


def bench_backend(
    backend: str,
    clients_list: Sequence[int],
    seconds: float,
    rounds: int,
    drain: float,
    operations: Sequence[str] = OPERATIONS,
) -> tuple[list[Row], str]:
    tag = uuid.uuid4().hex[:10]
    new_queues = max(clients_list)
    with tempfile.TemporaryDirectory() as tmp, deployment(backend, pathlib.Path(tmp), tag) as urls:
        directory = pathlib.Path(tmp)
        storage_url, messaging_url = urls
        repository = directory / "repo.git"
        make_repository(repository, new_queues)
        listen, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        config = directory / "stovepipe.toml"
        write_config(config, storage_url, messaging_url, repository, new_queues, listen, metrics)
        server = Server(config, listen, metrics, directory / "server.log")
        try:
            steady_id = waiting_head(listen, repository)
            from stovepipe.messaging.registry import default_messaging_url

            read_backlog = backlog_reader(
                messaging_url or default_messaging_url(storage_url), server
            )
            # The steady queue's running build keeps its status check pending throughout.
            time.sleep(1.0)
            baseline = read_backlog() or 0.0
            rows: list[Row] = []
            for clients in clients_list:
                totals = {name: Totals() for name in operations}
                for _ in range(rounds):
                    for name in operations:
                        run_segment(
                            server, clients, seconds, name, repository, steady_id, totals[name]
                        )
                rows += [
                    Row(backend, clients, name, totals[name], totals["Ping"]) for name in operations
                ]
            left = read_backlog()
            remaining, waited = drained(read_backlog, baseline, drain)
            backlog = describe_backlog(left, remaining, baseline, waited)
            # The unchanged head alone, once the pipeline is quiet: what it leaves behind is
            # its own, not new heads' traffic still flowing.
            if left is not None:
                before = read_backlog() or 0.0
                alone = max(clients_list)
                run_segment(
                    server, alone, seconds * rounds, OPERATIONS[1], repository, steady_id, Totals()
                )
                after = read_backlog() or 0.0
                backlog += (
                    f"; unchanged head alone ({alone} clients, {seconds * rounds:g} s): "
                    f"{after - before:+.0f} messages"
                )
                if remaining is not None and remaining > baseline:
                    backlog += " (the pipeline was still draining)"
        finally:
            server.stop()
    return rows, backlog


def print_table(rows: Sequence[Row], backlogs: dict[str, str]) -> None:
    header = (
        f"{'backend':<8}{'clients':>8}  {'operation':<20}{'calls/s':>9}{'x Ping':>8}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'CPU ms':>8}{'st.ops':>8}{'errors':>7}"
    )
    print("\nPer call: CPU = server CPU, st.ops = storage operations; x Ping = throughput ratio")
    print(header)
    print("-" * len(header))
    last = ""
    for row in rows:
        if last and row.backend != last:
            print(f"{'':<8}{'':>8}  backlog when the load stopped: {backlogs[last]}")
        last = row.backend
        totals = row.totals
        calls = len(totals.latencies_us) or float("nan")
        ratio = totals.rate / row.ping.rate if row.ping.rate else float("nan")
        print(
            f"{row.backend:<8}{row.clients:>8}  {row.operation:<20}{totals.rate:>9.0f}"
            f"{ratio:>8.2f}{totals.percentile(0.5) / 1000:>9.2f}"
            f"{totals.percentile(0.99) / 1000:>9.2f}{totals.cpu_seconds / calls * 1000:>8.2f}"
            f"{totals.storage_operations / calls:>8.2f}{totals.errors:>7}"
        )
    if last:
        print(f"{'':<8}{'':>8}  backlog when the load stopped: {backlogs[last]}")
    failed = [row for row in rows if row.totals.codes]
    if failed:
        print("\nErrors by status:")
        for row in failed:
            codes = ", ".join(f"{code} {count}" for code, count in row.totals.codes.most_common())
            print(f"{row.backend:<8}{row.clients:>8}  {row.operation:<20}{codes}")
            for code, detail in row.totals.details.items():
                print(f"{'':<18}{code}, the first: {detail}")


def bench_rss(backend: str, counts: Sequence[int], clients: int) -> None:
    """Ingest new heads on one server; print its resident memory at each count."""
    tag = uuid.uuid4().hex[:10]
    with tempfile.TemporaryDirectory() as tmp, deployment(backend, pathlib.Path(tmp), tag) as urls:
        directory = pathlib.Path(tmp)
        repository = directory / "repo.git"
        make_repository(repository, clients)
        listen, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        config = directory / "stovepipe.toml"
        # Ingest-only: the fake runner keeps every build in memory, which is not under test.
        write_config(config, *urls, repository, clients, listen, metrics, builds=False)
        server = Server(config, listen, metrics, directory / "server.log")
        try:
            print(f"\nServer RSS by new heads ingested ({backend}, {clients} clients)")
            print(f"{'new heads':>10}{'RSS MiB':>10}")
            print(f"{0:>10}{server.rss_bytes() / 2**20:>10.1f}")
            done = 0
            for target in sorted(counts):
                each = (target - done + clients - 1) // clients

                def client(index: int, calls: int = each) -> None:
                    heads = NewHeads(repository, index)
                    request = pb.IngestRequest(queue=f"bench/new-{index}")
                    with grpc.insecure_channel(listen) as channel:
                        stub = StovepipeClient(channel)
                        for _ in range(calls):
                            heads.advance()
                            stub.Ingest(request, timeout=CALL_TIMEOUT)

                threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                done += each * clients
                print(f"{done:>10}{server.rss_bytes() / 2**20:>10.1f}", flush=True)
        finally:
            server.stop()


def _numbers(text: str) -> list[int]:
    try:
        numbers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of whole numbers: {text!r}") from None
    if not numbers or min(numbers) < 1:
        raise argparse.ArgumentTypeError(f"give numbers of at least 1, not {text!r}")
    return numbers


def _positive(kind: type[int] | type[float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(f"must be above 0, not {text!r}")
        return value

    return parse


def _backends(text: str) -> list[str]:
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in BACKENDS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown backend {unknown[0] if unknown else text!r}; known: {', '.join(BACKENDS)}"
        )
    return chosen


SHORT = {"ping": "Ping", "same": OPERATIONS[1], "new": OPERATIONS[2], "get": "GetRequest"}
"""``--operations`` names: ``ping``, ``same`` (head), ``new`` (head), ``get``."""


def _operations(text: str) -> list[str]:
    chosen = {part.strip() for part in text.split(",") if part.strip()}
    unknown = chosen - set(SHORT)
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown operation {sorted(unknown)[0]!r}; known: {', '.join(SHORT)}"
        )
    return [name for short, name in SHORT.items() if short == "ping" or short in chosen]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--backends", type=_backends, default=list(BACKENDS), help="comma-separated"
    )
    parser.add_argument("--clients", type=_numbers, default=[1, 8, 32], help="e.g. 1,8,32")
    parser.add_argument(
        "--seconds", type=_positive(float), default=2.0, help="per operation and round"
    )
    parser.add_argument("--rounds", type=_positive(int), default=3, help="interleaved rounds")
    parser.add_argument(
        "--drain", type=_positive(float), default=30.0, help="seconds to wait for drain"
    )
    parser.add_argument(
        "--operations",
        type=_operations,
        default=list(OPERATIONS),
        help=f"comma-separated, of {', '.join(SHORT)} (Ping always runs: the ratios' base)",
    )
    parser.add_argument("--rss", type=_numbers, help="new-head counts: measure memory instead")
    args = parser.parse_args()
    backends: list[str] = args.backends
    if args.rss:
        for backend in backends:
            bench_rss(backend, args.rss, clients=4)
        return
    print(
        f"stovepipe serve per backend; clients {args.clients}, {args.rounds} rounds of "
        f"{args.seconds:g} s per operation; {os.cpu_count()} CPUs"
    )
    rows: list[Row] = []
    backlogs: dict[str, str] = {}
    for backend in backends:
        found, backlogs[backend] = bench_backend(
            backend, args.clients, args.seconds, args.rounds, args.drain, args.operations
        )
        rows += found
        print(f"{backend}: done", file=sys.stderr, flush=True)
    print_table(rows, backlogs)


if __name__ == "__main__":
    main()
