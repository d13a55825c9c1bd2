"""Faults on real backends, for tests and benchmarks: private database servers on free
loopback ports that can be paused (SIGSTOP) and resumed, and a load of concurrent Ingest
callers against a ``stovepipe serve`` while one is paused.

The servers are started with ``mirakuru`` (a development dependency, imported when a server
is asked for) from the ``redis-server``, ``etcd`` and ``mariadbd`` binaries on ``PATH``, each
with its data in a directory of the caller's, and stopped (resumed first) on exit.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import multiprocessing
import multiprocessing.connection
import os
import pathlib
import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]

from stovepipe.client import StovepipeClient
from stovepipe.conformance.servers import find_binary, free_port, new_executor
from stovepipe.v1 import stovepipe_pb2 as pb

STOVEPIPE_SERVICE = "stovepipe.v1.Stovepipe"


@dataclasses.dataclass
class PrivateServer:
    """A database server process of the caller's own; ``url`` is its storage URL."""

    name: str
    url: str
    pid: int
    restart_with: Any = dataclasses.field(default=None, repr=False)
    """The process's executor (mirakuru), for :meth:`restart`."""

    def kill(self) -> None:
        """Kill the process (SIGKILL: no clean shutdown, as in a crash); its data directory
        and port stay for :meth:`start`."""
        executor = self._executor()
        with contextlib.suppress(ProcessLookupError):
            self.resume()  # a stopped process is killed all the same; its successor runs
        executor.kill(wait=True, sig=signal.SIGKILL)

    def start(self) -> None:
        """Start the process again after :meth:`kill`, on the same data directory and port;
        returns once it accepts connections (60 s at most, else mirakuru's
        ``TimeoutExpired``)."""
        executor = self._executor()
        executor.start()
        process = executor.process
        assert process is not None
        self.pid = process.pid

    def restart(self) -> None:
        """:meth:`kill`, then :meth:`start`."""
        self.kill()
        self.start()

    def _executor(self) -> Any:
        if self.restart_with is None:
            raise RuntimeError(f"this {self.name} server cannot be restarted")
        return self.restart_with

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): connections stay open, nothing answers."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Let the process run again (SIGCONT)."""
        os.kill(self.pid, signal.SIGCONT)


def _binary(name: str) -> str:
    path = find_binary(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed (not on PATH)")
    return path


@contextlib.contextmanager
def _running(name: str, command: list[str], port: int, url: str) -> Iterator[PrivateServer]:
    executor = new_executor(command, port=port, timeout=60)
    executor.start()
    process = executor.process
    assert process is not None
    server = PrivateServer(name, url, process.pid, executor)
    try:
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            server.resume()  # a stopped process would not see SIGTERM
        executor.stop()


@contextlib.contextmanager
def private_redis(directory: pathlib.Path, *, append_only: bool = False) -> Iterator[PrivateServer]:
    """A ``redis-server``, without persistence unless ``append_only`` (then every write is
    in the append-only file before it is answered: ``appendfsync always``, so a restart after
    SIGKILL keeps it); URL ``redis://127.0.0.1:PORT/0``."""
    port = free_port()
    persistence = ("--appendonly", "yes", "--appendfsync", "always") if append_only else ()
    command = [
        _binary("redis-server"),
        *("--bind", "127.0.0.1", "--port", str(port), "--dir", str(directory)),
        *("--save", "", "--appendonly", "no"),
        *persistence,
    ]
    with _running("redis", command, port, f"redis://127.0.0.1:{port}/0") as server:
        yield server


@contextlib.contextmanager
def private_etcd(directory: pathlib.Path) -> Iterator[PrivateServer]:
    """A one-member ``etcd`` cluster; URL ``etcd://127.0.0.1:PORT``."""
    port, peer_port = free_port(), free_port()
    peer = f"http://127.0.0.1:{peer_port}"
    command = [
        _binary("etcd"),
        *("--name", "private", "--data-dir", str(directory / "etcd")),
        *("--listen-client-urls", f"http://127.0.0.1:{port}"),
        *("--advertise-client-urls", f"http://127.0.0.1:{port}"),
        *("--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer),
        *("--initial-cluster", f"private={peer}"),
    ]
    with _running("etcd", command, port, f"etcd://127.0.0.1:{port}") as server:
        yield server


@contextlib.contextmanager
def private_mariadb(directory: pathlib.Path) -> Iterator[PrivateServer]:
    """A ``mariadbd`` with a fresh data directory and the schema applied; URL
    ``mysql://root@127.0.0.1:PORT/stovepipe``."""
    port = free_port()
    data = directory / "mariadb"
    subprocess.run(
        [
            _binary("mariadb-install-db"),
            "--no-defaults",
            f"--datadir={data}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    command = [
        _binary("mariadbd"),
        "--no-defaults",
        f"--datadir={data}",
        f"--socket={directory / 'mariadb.sock'}",
        f"--pid-file={directory / 'mariadb.pid'}",
        "--bind-address=127.0.0.1",
        f"--port={port}",
        "--skip-grant-tables",
        "--innodb-buffer-pool-size=32M",
        *(["--user=root"] if os.geteuid() == 0 else []),
    ]
    url = f"mysql://root@127.0.0.1:{port}/stovepipe"
    with _running("mysql", command, port, url) as server:
        import pymysql

        connection = pymysql.connect(host="127.0.0.1", port=port, user="root")
        with connection, connection.cursor() as cursor:
            cursor.execute("CREATE DATABASE IF NOT EXISTS stovepipe")
        from stovepipe_mysql.migrations import migrate

        migrate(url)
        yield server


PRIVATE_SERVERS = {"mysql": private_mariadb, "redis": private_redis, "etcd": private_etcd}
"""Each network backend's private server, by name."""


# --- a frozen backend under load ----------------------------------------------------------


@dataclasses.dataclass
class FreezeFigures:
    """What callers saw while a backend was frozen; times in seconds."""

    call_seconds: list[float]
    """How long each Ingest started during the freeze took to be answered, however."""
    outcomes: collections.Counter[str]
    """Those Ingests' outcomes: ``OK`` or a status name."""
    ping_seconds: list[float]
    health_seconds: list[float]
    """Ping and health Check (``""`` and the Stovepipe service, alternately) meanwhile."""
    probe_failures: int
    """Ping or health calls that failed (their own 1 s deadline included)."""
    not_serving_seen: bool
    """Whether the health service reported the Stovepipe service NOT_SERVING meanwhile."""
    recovery_seconds: float | None
    """From resuming the backend to the first Ingest answered OK (``None``: never)."""

    @staticmethod
    def quantile(samples: list[float], q: float) -> float:
        """The ``q`` quantile of ``samples`` (nearest rank); NaN without samples."""
        if not samples:
            return float("nan")
        ordered = sorted(samples)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))]

    def summary(self) -> dict[str, float]:
        """p50, p99 and max of Ingest; max of Ping and health; in milliseconds."""
        ms = 1000.0
        return {
            "call_p50_ms": self.quantile(self.call_seconds, 0.5) * ms,
            "call_p99_ms": self.quantile(self.call_seconds, 0.99) * ms,
            "call_max_ms": max(self.call_seconds, default=float("nan")) * ms,
            "ping_max_ms": max(self.ping_seconds, default=float("nan")) * ms,
            "ping_median_ms": statistics.median(self.ping_seconds or [float("nan")]) * ms,
            "health_max_ms": max(self.health_seconds, default=float("nan")) * ms,
        }


def _first_request(client: StovepipeClient, queue: str) -> str:
    """The id Ingest answers for ``queue``, asked until the server answers (bounded: 30 s)."""
    end = time.monotonic() + 30
    while True:
        try:
            return str(client.Ingest(pb.IngestRequest(queue=queue), timeout=5).id)
        except grpc.RpcError:
            if time.monotonic() > end:
                raise
            time.sleep(0.1)


def _callers(
    address: str,
    queue: str,
    callers: int,
    deadline: float,
    freeze: Any,
    stop: Any,
    results: multiprocessing.connection.Connection,
) -> None:
    """In a process of its own: ``callers`` threads calling back to back (with ``deadline``),
    waiting out the server's retry hint after a refusal: half call Ingest, half GetRequest of
    the queue's first request, which reads the storage every time (an unchanged head's Ingest
    is answered from the server's cache, so it alone would not reach a frozen backend). Sends
    back the ``(seconds, outcome)`` of every call started while ``freeze`` was set."""
    samples: list[tuple[float, str]] = []
    lock = threading.Lock()
    channels = [grpc.insecure_channel(address) for _ in range(8)]
    first = _first_request(StovepipeClient(channels[0]), queue)

    def call(number: int) -> None:
        client = StovepipeClient(channels[number % len(channels)])
        end = time.monotonic() + 600  # bounded whatever happens
        while not stop.is_set() and time.monotonic() < end:
            frozen = freeze.is_set()
            start = time.monotonic()
            pause = 0.0
            try:
                if number % 2:
                    client.GetRequest(pb.GetRequestRequest(id=first), timeout=deadline)
                else:
                    client.Ingest(pb.IngestRequest(queue=queue), timeout=deadline)
                outcome = "OK"
            except grpc.RpcError as error:
                outcome = error.code().name
                trailing: Any = error.trailing_metadata()
                metadata = dict(trailing or ())
                pause = int(metadata.get("grpc-retry-pushback-ms", 100)) / 1000
            if frozen:
                with lock:
                    samples.append((time.monotonic() - start, outcome))
            stop.wait(min(pause, 1.0) if pause else 0.01)

    threads = [threading.Thread(target=call, args=(n,), daemon=True) for n in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=deadline + 30)
    results.send(samples)
    for channel in channels:
        channel.close()


def freeze_under_load(
    address: str,
    backend: PrivateServer,
    *,
    queue: str = "q",
    callers: int = 200,
    deadline: float = 2.0,
    freeze_seconds: float = 6.0,
    recovery_timeout: float = 30.0,
) -> FreezeFigures:
    """``callers`` concurrent Ingest and GetRequest callers (another process) against the server at
    ``address`` while ``backend`` is frozen for ``freeze_seconds``; Ping and health are
    timed from this process throughout. Then the backend is resumed and the time until an
    Ingest succeeds again is measured."""
    context = multiprocessing.get_context("spawn")
    freeze, stop = context.Event(), context.Event()
    receiver, sender = context.Pipe(duplex=False)
    load = context.Process(
        target=_callers, args=(address, queue, callers, deadline, freeze, stop, sender)
    )
    load.start()
    ping: list[float] = []
    health_times: list[float] = []
    failures = 0
    not_serving = False
    with grpc.insecure_channel(address) as channel:
        client = StovepipeClient(channel)
        health = health_pb2_grpc.HealthStub(channel)
        client.Ping(pb.PingRequest(), timeout=10)
        time.sleep(2.0)  # the callers are up and calling
        backend.pause()
        freeze.set()
        try:
            end = time.monotonic() + freeze_seconds
            turn = 0
            while time.monotonic() < end:
                turn += 1
                service = "" if turn % 2 else STOVEPIPE_SERVICE
                try:
                    start = time.monotonic()
                    client.Ping(pb.PingRequest(), timeout=1)
                    ping.append(time.monotonic() - start)
                    start = time.monotonic()
                    request = health_pb2.HealthCheckRequest(service=service)
                    status = health.Check(request, timeout=1).status
                    health_times.append(time.monotonic() - start)
                    not_serving |= status == health_pb2.HealthCheckResponse.NOT_SERVING
                except grpc.RpcError:
                    failures += 1
                time.sleep(0.02)
        finally:
            freeze.clear()
            backend.resume()
        resumed = time.monotonic()
        recovery: float | None = None
        while time.monotonic() - resumed < recovery_timeout:
            try:
                client.Ingest(pb.IngestRequest(queue=queue), timeout=deadline)
                recovery = time.monotonic() - resumed
                break
            except grpc.RpcError:
                time.sleep(0.1)
    stop.set()
    samples: list[tuple[float, str]] = receiver.recv() if receiver.poll(deadline + 60) else []
    load.join(timeout=30)
    if load.is_alive():
        load.kill()
    return FreezeFigures(
        call_seconds=[seconds for seconds, _ in samples],
        outcomes=collections.Counter(outcome for _, outcome in samples),
        ping_seconds=ping,
        health_seconds=health_times,
        probe_failures=failures,
        not_serving_seen=not_serving,
        recovery_seconds=recovery,
    )
