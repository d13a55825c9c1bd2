"""The standard gRPC surface around the service: health, reflection, client deadlines."""

from __future__ import annotations

import pathlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any, NoReturn, cast

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from grpc_reflection.v1alpha import (  # type: ignore[import-untyped]
    reflection_pb2,
    reflection_pb2_grpc,
)

from stovepipe.service import StovepipeServicer
from stovepipe.sourcecontrol.fake import FakeSourceControl
from stovepipe.storage import open_storage
from stovepipe.testing import Running, StartServer
from stovepipe.v1 import stovepipe_pb2 as pb

TIMEOUT = 10


def storage_operations(running: Running, store: str, operation: str, outcome: str) -> float:
    """How many times the server has run a storage operation with that outcome."""
    value = running.server.metrics.registry.get_sample_value(
        "stovepipe_storage_operations_total",
        {"store": store, "operation": operation, "outcome": outcome},
    )
    return value or 0.0


def test_health_reports_serving_for_the_server_and_the_service(start_server: StartServer) -> None:
    running = start_server({})
    health = health_pb2_grpc.HealthStub(running.channel)
    for service in ("", "stovepipe.v1.Stovepipe"):
        response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
        assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_health_watchers_see_not_serving_when_shutdown_begins(start_server: StartServer) -> None:
    running = start_server({})
    health = health_pb2_grpc.HealthStub(running.channel)
    updates = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
    assert next(updates).status == health_pb2.HealthCheckResponse.SERVING
    stopping = threading.Thread(target=running.server.stop, kwargs={"grace": 2})
    stopping.start()
    assert next(updates).status == health_pb2.HealthCheckResponse.NOT_SERVING
    updates.cancel()  # the watch is an in-flight call too: end it so the drain ends
    stopping.join(timeout=TIMEOUT)


def test_reflection_lists_the_stovepipe_service(start_server: StartServer) -> None:
    running = start_server({})
    reflection = reflection_pb2_grpc.ServerReflectionStub(running.channel)
    responses = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=TIMEOUT
    )
    names = {
        service.name
        for response in responses
        for service in response.list_services_response.service
    }
    assert {"stovepipe.v1.Stovepipe", "grpc.health.v1.Health"} <= names


def test_reflection_describes_the_ingest_method(start_server: StartServer) -> None:
    running = start_server({})
    reflection = reflection_pb2_grpc.ServerReflectionStub(running.channel)
    request = reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="stovepipe.v1.Stovepipe"
    )
    (response,) = reflection.ServerReflectionInfo(iter([request]), timeout=TIMEOUT)
    assert response.file_descriptor_response.file_descriptor_proto


def test_grpc_drops_a_call_whose_deadline_expired_while_queued_before_the_servicer_sees_it(
    start_server: StartServer, tmp_path: pathlib.Path
) -> None:
    """One worker thread, busy with an ingest stuck on a write lock; a second call with a short
    deadline waits in the queue past its deadline. gRPC cancels it before dispatch: it never
    reaches the servicer (not even the interceptor), so it touches no storage. The servicer's
    own deadline check is shown by the unit tests of ``_run`` below."""
    path = tmp_path / "locked.db"
    open_storage(f"sqlite:///{path}").close()
    running = start_server(
        {"q": FakeSourceControl(["c1"], name="q")},
        storage_url=f"sqlite:///{path}?timeout=10",
        max_workers=1,
    )
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    first: list[str] = []
    busy = threading.Thread(
        target=lambda: first.append(
            running.client.Ingest(pb.IngestRequest(queue="q"), timeout=TIMEOUT).id
        )
    )
    busy.start()
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:  # until the first call is inside storage
        if storage_operations(running, "request_uris", "get_id_by_uri", "NotFound"):
            break
        time.sleep(0.01)

    with pytest.raises(grpc.RpcError) as caught:
        running.client.Ingest(pb.IngestRequest(queue="q"), timeout=0.3)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The worker stays busy a while longer, so that gRPC has taken in the cancellation before
    # the thread is free for the expired call, however slow the machine.
    time.sleep(1.0)
    holder.execute("ROLLBACK")
    holder.close()
    busy.join(timeout=TIMEOUT)
    # The one worker thread takes calls in arrival order: once a later call has been answered,
    # the expired one has been run or dropped.
    running.client.Ping(pb.PingRequest(), timeout=TIMEOUT)

    assert first == ["request/q/1"]
    # One ingest ran: one lookup, one counter draw. The expired call never started.
    assert storage_operations(running, "request_uris", "get_id_by_uri", "NotFound") == 1
    assert storage_operations(running, "counter", "next", "ok") == 1
    handled = running.server.metrics.registry.get_sample_value(
        "stovepipe_grpc_server_handling_seconds_count",
        {"grpc_service": "stovepipe.v1.Stovepipe", "grpc_method": "Ingest"},
    )
    assert handled == 1


def test_a_call_within_its_deadline_completes(start_server: StartServer) -> None:
    running = start_server({"q": FakeSourceControl(["c1"], name="q")})
    response = running.client.Ingest(pb.IngestRequest(queue="q"), timeout=5)
    assert response.id == "request/q/1"


class Aborted(Exception):
    """What ``ServicerContext.abort`` raises: it ends the handler."""


class StubContext:
    """A servicer context with a fixed time remaining that records the status it aborts with."""

    def __init__(self, remaining: float | None) -> None:
        self.remaining = remaining
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    def time_remaining(self) -> float | None:
        return self.remaining

    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        self.aborted = (code, details)
        raise Aborted


@pytest.mark.parametrize("remaining", [0.0, -1.0])
def test_the_servicer_answers_deadline_exceeded_and_does_no_work_once_the_deadline_passed(
    remaining: float,
) -> None:
    context = StubContext(remaining)
    work_done: list[str] = []
    with pytest.raises(Aborted):
        StovepipeServicer._run(
            cast(grpc.ServicerContext, context), lambda: work_done.append("ingest")
        )
    assert context.aborted is not None
    assert context.aborted[0] == grpc.StatusCode.DEADLINE_EXCEEDED
    assert work_done == []


@pytest.mark.parametrize("remaining", [None, 0.5])
def test_the_servicer_does_the_work_while_time_remains_or_without_a_deadline(
    remaining: float | None,
) -> None:
    context = StubContext(remaining)
    assert StovepipeServicer._run(cast(grpc.ServicerContext, context), lambda: "done") == "done"
    assert context.aborted is None


def test_ping_health_and_reflection_always_have_a_thread(start_server: StartServer) -> None:
    """Idle reflection streams, more of them than the server has threads, each holding its
    call open without sending: Ping, health and a fresh reflection call still answer."""
    max_workers = 4
    running = start_server({}, max_workers=max_workers)
    reflection = reflection_pb2_grpc.ServerReflectionStub(running.channel)
    release = threading.Event()

    def idle() -> Iterator[reflection_pb2.ServerReflectionRequest]:
        release.wait(TIMEOUT)  # sends nothing until the test ends
        return
        yield  # a generator that yields nothing

    holders = [
        reflection.ServerReflectionInfo(idle(), timeout=TIMEOUT) for _ in range(3 * max_workers)
    ]
    try:
        deadline = time.monotonic() + TIMEOUT
        while running.server.streams.in_use < running.server.streams.limit:
            assert time.monotonic() < deadline, "the idle streams never reached the server"
            time.sleep(0.01)
        running.client.Ping(pb.PingRequest(), timeout=3)
        health = health_pb2_grpc.HealthStub(running.channel)
        response = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=3)
        assert response.status == health_pb2.HealthCheckResponse.SERVING
        refused = [holder for holder in holders if _ended_with(holder, 3)]
        assert refused, "no idle stream beyond the limit was refused"
        assert {holder.code() for holder in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    finally:
        release.set()
        for holder in holders:
            holder.cancel()


def _ended_with(call: Any, timeout: float) -> bool:
    """Whether ``call`` has ended, waiting up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if call.done():
            return True
        time.sleep(0.02)
    return False
