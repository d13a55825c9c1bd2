"""Ingest over gRPC on the embedded default (SQLite): latency and throughput by concurrency.

    python -m benchmarks.bench_service [--calls N] [--storage-url URL]

The server runs in a process of its own (so clients and server do not share an interpreter
lock) with two queues: ``moving``, whose head advances on every ``latest()`` call, so each
Ingest admits a real new head (lookup, counter, claim, create, publish); and ``steady``,
whose head never changes, the poller's common case (one lookup, one read, publish). Each
client is a thread with a channel of its own. ``Ping``, which touches no backend, is measured
in the same run at the same concurrency: the floor of any RPC on this server, shown in the
"raw" columns, with Ingest's median as a multiple of it.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import multiprocessing
import multiprocessing.connection
import pathlib
import statistics
import tempfile
import threading
import time
from collections.abc import Callable

import grpc

from benchmarks.timing import Latency, print_comparison
from stovepipe.client import StovepipeClient
from stovepipe.sourcecontrol.fake import FakeSourceControl
from stovepipe.v1 import stovepipe_pb2 as pb

CONCURRENCY = (1, 8, 32)
WARMUP = 20


class AdvancingSource(FakeSourceControl):
    """A fake source whose head moves to a new commit on every ``latest()``."""

    def __init__(self) -> None:
        super().__init__(["c0"], name="moving")
        self._next = itertools.count(1)

    def latest(self) -> str:
        return self.push(f"c{next(self._next)}")


def serve(storage_url: str, reply: multiprocessing.connection.Connection) -> None:
    """The server process: serve both queues until the parent closes the pipe."""
    import logging

    from stovepipe.server import StovepipeServer
    from stovepipe.sourcecontrol import QueueMap
    from stovepipe.storage import open_storage

    logging.basicConfig(level=logging.WARNING)
    server = StovepipeServer(
        open_storage(storage_url),
        QueueMap({"moving": AdvancingSource(), "steady": FakeSourceControl(["c1"], name="s")}),
        listen="127.0.0.1:0",
        max_workers=64,
    )
    server.start()
    reply.send(server.address)
    with contextlib.suppress(EOFError):
        reply.recv()  # returns (or raises EOFError) when the parent is done
    server.stop(grace=1)


def run_clients(
    address: str, clients: int, calls_per_client: int, call: Callable[[StovepipeClient], object]
) -> tuple[Latency, float]:
    """``clients`` threads, each with its own channel, make ``calls_per_client`` calls after a
    warm-up; return per-call latency over all of them and calls per second."""
    barrier = threading.Barrier(clients + 1)
    samples: list[list[float]] = [[] for _ in range(clients)]

    def client(index: int) -> None:
        with grpc.insecure_channel(address) as channel:
            stub = StovepipeClient(channel)
            for _ in range(WARMUP):
                call(stub)
            barrier.wait()
            mine = samples[index]
            for _ in range(calls_per_client):
                start = time.perf_counter_ns()
                call(stub)
                mine.append((time.perf_counter_ns() - start) / 1000)
            barrier.wait()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    barrier.wait()
    elapsed = time.perf_counter() - start
    for thread in threads:
        thread.join()
    every = sorted(sample for per_client in samples for sample in per_client)
    latency = Latency(
        count=len(every),
        p50_us=every[len(every) // 2],
        p99_us=every[min(len(every) - 1, int(len(every) * 0.99))],
        mean_us=statistics.fmean(every),
    )
    return latency, len(every) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1600, help="calls per row (default 1600)")
    parser.add_argument("--storage-url", help="default: a fresh SQLite file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        storage_url = args.storage_url or f"sqlite:///{pathlib.Path(tmp) / 'bench.db'}"
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        server = context.Process(target=serve, args=(storage_url, child), daemon=True)
        server.start()
        address: str = parent.recv()
        print(f"Stovepipe server on {address}, storage {storage_url}")

        ping: Callable[[StovepipeClient], object] = lambda stub: stub.Ping(  # noqa: E731
            pb.PingRequest(), timeout=30
        )
        operations: list[tuple[str, Callable[[StovepipeClient], object]]] = [
            ("Ingest (new head)", lambda s: s.Ingest(pb.IngestRequest(queue="moving"), timeout=30)),
            (
                "Ingest (same head)",
                lambda s: s.Ingest(pb.IngestRequest(queue="steady"), timeout=30),
            ),
        ]
        throughput: list[tuple[int, str, float]] = []
        for clients in CONCURRENCY:
            per_client = max(args.calls // clients, 10)
            floor, floor_rate = run_clients(address, clients, per_client, ping)
            throughput.append((clients, "Ping", floor_rate))
            rows = []
            for name, call in operations:
                latency, rate = run_clients(address, clients, per_client, call)
                rows.append((name, latency, floor))
                throughput.append((clients, name, rate))
            print_comparison(f"{clients} concurrent client(s); raw = Ping, same run", rows)

        print("\nThroughput (calls per second, all clients together)")
        print(f"{'clients':>8}  {'operation':<22}{'calls/s':>10}")
        for clients, name, rate in throughput:
            print(f"{clients:>8}  {name:<22}{rate:>10.0f}")
        parent.close()
        server.join(timeout=10)


if __name__ == "__main__":
    main()
