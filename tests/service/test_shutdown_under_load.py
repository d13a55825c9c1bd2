"""SIGTERM on a real ``stovepipe serve``: health says NOT_SERVING while the listener still
answers (for ``shutdown_delay``), and no call is CANCELLED while the server drains."""

from __future__ import annotations

import collections
import concurrent.futures
import pathlib
import signal
import threading
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]

from stovepipe.client import StovepipeClient
from stovepipe.testing import ServeProcess, ServeProcesses
from stovepipe.v1 import stovepipe_pb2 as pb

TIMEOUT = 20.0
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING


def write_config(directory: pathlib.Path) -> pathlib.Path:
    config = directory / "stovepipe.toml"
    config.write_text(
        f'storage_url = "sqlite:///{directory / "stovepipe.db"}?timeout=30"\n'
        "grace_period = 10\n"
        '[queues."q"]\ntype = "fake"\ncommits = ["c1"]\n',
        encoding="utf-8",
    )
    return config


def serve_many(
    processes: ServeProcesses, directory: pathlib.Path, count: int, *, shutdown_delay: float
) -> list[ServeProcess]:
    """``count`` servers sharing one SQLite file in ``directory``."""
    arguments = ["--config", str(write_config(directory)), "--shutdown-delay", str(shutdown_delay)]
    return processes.serve_many(count, arguments, cwd=directory)


DELAY = 3.0
"""Seconds of ``shutdown_delay``."""


def test_shutdown_delay_health_reports_not_serving_after_sigterm_before_the_listener_closes(
    processes: ServeProcesses, tmp_path: pathlib.Path
) -> None:
    (server,) = serve_many(processes, tmp_path, 1, shutdown_delay=DELAY)
    seen: list[tuple[str, int]] = []
    with grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        client = StovepipeClient(channel)
        request = health_pb2.HealthCheckRequest(service="stovepipe.v1.Stovepipe")
        assert health.Check(request, timeout=TIMEOUT).status == SERVING
        signalled = time.monotonic()
        server.signal(signal.SIGTERM)
        deadline = signalled + TIMEOUT
        pinged = 0
        while time.monotonic() < deadline:
            try:
                status = health.Check(request, timeout=2).status
            except grpc.RpcError as error:
                seen.append(("closed", error.code().value[0]))
                break
            seen.append(("health", status))
            # Still serving: the listener is open and calls are answered. Only in the first
            # half of the delay, which ends at the earliest 3 s after the signal was sent: a
            # Ping sent at its very end is refused, rightly.
            if status == NOT_SERVING and time.monotonic() - signalled < DELAY / 2:
                assert client.Ping(pb.PingRequest(), timeout=2).version
                pinged += 1
            time.sleep(0.05)
        assert pinged, f"health never said NOT_SERVING in the first {DELAY / 2:g} s: {seen}"
    assert server.popen.wait(timeout=TIMEOUT) == 0, server.output()
    statuses = [value for kind, value in seen if kind == "health"]
    assert NOT_SERVING in statuses, seen
    # Once NOT_SERVING, never SERVING again; then the listener closes.
    assert SERVING not in statuses[statuses.index(NOT_SERVING) :], seen
    assert seen[-1][0] == "closed", seen
    assert "NOT_SERVING" in server.output()


RUNS = 20
AT_ONCE = 2
"""Servers SIGTERMed at the same time, each under its own load."""
CALLERS = 8


def load_until_closed(
    address: str, request_id: str, stop: threading.Event, answered: threading.Event
) -> collections.Counter[str]:
    """``CALLERS`` threads calling Ingest and GetRequest back to back until ``stop`` is set
    or the server refuses them all; the count of each outcome (``OK`` or a status name)."""
    outcomes: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def call(number: int) -> None:
        with grpc.insecure_channel(address) as channel:
            client = StovepipeClient(channel)
            refused = 0
            end = time.monotonic() + TIMEOUT  # bounded whatever the server does
            while not stop.is_set() and refused < 3 and time.monotonic() < end:
                try:
                    if number % 2:
                        client.Ingest(pb.IngestRequest(queue="q"), timeout=5)
                    else:
                        client.GetRequest(pb.GetRequestRequest(id=request_id), timeout=5)
                    outcome = "OK"
                except grpc.RpcError as error:
                    outcome = error.code().name
                    refused += outcome == "UNAVAILABLE"
                with lock:
                    outcomes[outcome] += 1
                if outcome == "OK":
                    answered.set()

    threads = [threading.Thread(target=call, args=(n,)) for n in range(CALLERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=TIMEOUT + 10)
    assert not any(thread.is_alive() for thread in threads)
    return outcomes


def one_sigterm_under_load(server: ServeProcess) -> collections.Counter[str]:
    """SIGTERM ``server`` while callers keep it busy; the outcomes of their calls."""
    with grpc.insecure_channel(server.address) as channel:
        client = StovepipeClient(channel)
        request_id = client.Ingest(pb.IngestRequest(queue="q"), timeout=TIMEOUT).id
    stop, answered = threading.Event(), threading.Event()
    outcomes: collections.Counter[str] = collections.Counter()
    loader = threading.Thread(
        target=lambda: outcomes.update(
            load_until_closed(server.address, request_id, stop, answered)
        )
    )
    loader.start()
    # Calls in flight: the first has been answered (however slowly the callers start).
    assert answered.wait(TIMEOUT), "no call was answered before the signal"
    time.sleep(0.05)
    server.signal(signal.SIGTERM)
    status = server.popen.wait(timeout=TIMEOUT)
    stop.set()
    loader.join(timeout=TIMEOUT + 15)
    assert not loader.is_alive()
    assert status == 0, server.output()
    return outcomes


def test_twenty_sigterms_under_load_cancel_no_call(
    processes: ServeProcesses, tmp_path: pathlib.Path
) -> None:
    totals: collections.Counter[str] = collections.Counter()
    for round_ in range(RUNS // AT_ONCE):
        directory = tmp_path / f"round-{round_}"
        directory.mkdir()
        servers = serve_many(processes, directory, AT_ONCE, shutdown_delay=0.3)
        with concurrent.futures.ThreadPoolExecutor(AT_ONCE) as pool:
            futures = [pool.submit(one_sigterm_under_load, server) for server in servers]
            runs = [future.result(timeout=TIMEOUT * 3) for future in futures]
        for outcomes in runs:
            assert outcomes["OK"] > 0, runs  # the load was real
            assert outcomes["CANCELLED"] == 0, (round_, runs)
            totals.update(outcomes)
    # Only answers and, once the server is stopping, UNAVAILABLE.
    assert set(totals) <= {"OK", "UNAVAILABLE"}, totals
