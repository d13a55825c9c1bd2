"""Metrics: every RPC (count by status code, latency), every storage operation (count by
outcome, latency), and the pipeline (terminal requests and builds counted, per-queue gauges
read at the scrape), scraped from the server's /metrics endpoint over HTTP or read from the
registry."""

from __future__ import annotations

import dataclasses
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stovepipe.entity import Build, BuildStatus, Fact, Queue, Request, RequestState
from stovepipe.metrics import Metrics
from stovepipe.sourcecontrol import QueueMap
from stovepipe.sourcecontrol.fake import FakeSourceControl
from stovepipe.storage import AlreadyExists, NotFound, VersionMismatch, open_storage
from stovepipe.testing import StartServer
from stovepipe.v1 import stovepipe_pb2 as pb

TIMEOUT = 10
SERVICE = "stovepipe.v1.Stovepipe"


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of ``/metrics``, by name and label set."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=TIMEOUT) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def rpc(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset({"grpc_service": SERVICE, **labels}.items())), 0.0)


def storage(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_every_rpc_is_counted_by_status_code_and_timed(start_server: StartServer) -> None:
    running = start_server({"q": FakeSourceControl(["c1"])}, metrics_listen="127.0.0.1:0")
    running.client.Ping(pb.PingRequest(), timeout=TIMEOUT)
    running.client.Ingest(pb.IngestRequest(queue="q"), timeout=TIMEOUT)
    running.client.Ingest(pb.IngestRequest(queue="q"), timeout=TIMEOUT)
    with pytest.raises(grpc.RpcError):
        running.client.Ingest(pb.IngestRequest(queue="nope"), timeout=TIMEOUT)
    with pytest.raises(grpc.RpcError):
        running.client.GetRequest(pb.GetRequestRequest(id=""), timeout=TIMEOUT)

    assert running.server.metrics_port is not None
    samples = scrape(running.server.metrics_port)
    handled = "stovepipe_grpc_server_handled_total"
    assert rpc(samples, handled, grpc_method="Ping", grpc_code="OK") == 1
    assert rpc(samples, handled, grpc_method="Ingest", grpc_code="OK") == 2
    assert rpc(samples, handled, grpc_method="Ingest", grpc_code="NOT_FOUND") == 1
    assert rpc(samples, handled, grpc_method="GetRequest", grpc_code="INVALID_ARGUMENT") == 1
    latency = "stovepipe_grpc_server_handling_seconds_count"
    assert rpc(samples, latency, grpc_method="Ingest") == 3
    assert rpc(samples, "stovepipe_grpc_server_handling_seconds_sum", grpc_method="Ingest") > 0
    assert samples[("stovepipe_grpc_server_in_flight", frozenset())] == 0


def test_every_storage_operation_is_counted_by_outcome_and_timed(start_server: StartServer) -> None:
    running = start_server({"q": FakeSourceControl(["c1"])}, metrics_listen="127.0.0.1:0")
    admitted = running.client.Ingest(pb.IngestRequest(queue="q"), timeout=TIMEOUT)  # a new head
    # The same head: answered from the mapping this server remembers, with no storage call.
    running.client.Ingest(pb.IngestRequest(queue="q"), timeout=TIMEOUT)
    running.client.GetRequest(pb.GetRequestRequest(id=admitted.id), timeout=TIMEOUT)
    with pytest.raises(grpc.RpcError):
        running.client.GetRequest(pb.GetRequestRequest(id="request/q/99"), timeout=TIMEOUT)

    assert running.server.metrics_port is not None
    samples = scrape(running.server.metrics_port)
    ops = "stovepipe_storage_operations_total"
    lookup = {"store": "request_uris", "operation": "get_id_by_uri"}
    assert storage(samples, ops, **lookup, outcome="NotFound") == 1
    assert storage(samples, ops, **lookup, outcome="ok") == 0
    assert storage(samples, ops, store="counter", operation="next", outcome="ok") == 1
    assert storage(samples, ops, store="request_uris", operation="create", outcome="ok") == 1
    assert storage(samples, ops, store="requests", operation="create", outcome="ok") == 1
    # GetRequest reads it (and the process consumer may have already).
    assert storage(samples, ops, store="requests", operation="get", outcome="NotFound") == 1
    assert storage(samples, ops, store="requests", operation="get", outcome="ok") >= 1
    seconds = "stovepipe_storage_operation_seconds_count"
    assert storage(samples, seconds, **lookup) == 1


def test_storage_instrumentation_wraps_any_storage_without_changing_its_answers() -> None:
    metrics = Metrics(process_metrics=False)
    with metrics.instrument(open_storage("memory://")) as store:
        request = Request("request/q/1", "q", "uri", RequestState.ACCEPTED, 1)
        store.requests.create(request)
        with pytest.raises(AlreadyExists):
            store.requests.create(request)
        assert store.requests.get("request/q/1") == request
        with pytest.raises(NotFound):
            store.request_uris.get_id_by_uri("q", "uri")
        assert store.counter.next("d") == 1

    def count(store: str, operation: str, outcome: str) -> float | None:
        return metrics.registry.get_sample_value(
            "stovepipe_storage_operations_total",
            {"store": store, "operation": operation, "outcome": outcome},
        )

    assert count("requests", "create", "ok") == 1
    assert count("requests", "create", "AlreadyExists") == 1
    assert count("requests", "get", "ok") == 1
    assert count("request_uris", "get_id_by_uri", "NotFound") == 1
    assert count("counter", "next", "ok") == 1


def test_the_pipeline_stores_are_instrumented_and_only_stored_terminal_changes_are_counted() -> (
    None
):
    metrics = Metrics(process_metrics=False)
    with metrics.instrument(open_storage("memory://")) as store:
        accepted = Request("request/mono/main/1", "mono/main", "uri", RequestState.ACCEPTED, 1)
        store.requests.create(accepted)
        processing = dataclasses.replace(accepted, state=RequestState.PROCESSING)
        store.requests.update(processing, old_version=1, new_version=2)  # not terminal
        superseded = dataclasses.replace(accepted, state=RequestState.SUPERSEDED)
        with pytest.raises(VersionMismatch):  # not stored: not counted
            store.requests.update(superseded, old_version=1, new_version=2)
        store.requests.update(superseded, old_version=2, new_version=3)
        store.queues.create(Queue("mono/main"))
        build = Build("b1", accepted.id, BuildStatus.RUNNING, "", 1)
        store.builds.create(build)
        failed = dataclasses.replace(build, status=BuildStatus.FAILED)
        store.builds.update(failed, old_version=1, new_version=2)
        store.facts.create(Fact("mono/main", "uri", "", 1.0, accepted.id, 1.0))

    def value(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    settled = "stovepipe_requests_settled_total"
    assert value(settled, queue="mono/main", state="superseded") == 1
    assert value(settled, queue="mono/main", state="processing") is None
    assert value("stovepipe_builds_total", queue="mono/main", outcome="failed") == 1
    ops = "stovepipe_storage_operations_total"
    assert value(ops, store="requests", operation="update", outcome="VersionMismatch") == 1
    assert value(ops, store="queues", operation="create", outcome="ok") == 1
    assert value(ops, store="builds", operation="update", outcome="ok") == 1
    assert value(ops, store="facts", operation="create", outcome="ok") == 1


def test_queue_gauges_are_read_at_the_scrape_and_a_failing_read_leaves_them_out() -> None:
    metrics = Metrics(process_metrics=False)
    source = FakeSourceControl(["c1"], name="mono", commit_times={"c1": 1000.0})
    with open_storage("memory://") as store:
        metrics.watch_queues(
            store,
            QueueMap({"mono/main": source, "new/main": source}),
            ["mono/main", "new/main"],
            clock=lambda: 1600.0,
        )
        store.queues.create(Queue("mono/main", last_green_uri="fake://mono/c1", in_flight=2))

        def value(name: str, queue: str) -> float | None:
            return metrics.registry.get_sample_value(name, {"queue": queue})

        assert value("stovepipe_queue_in_flight", "mono/main") == 2
        assert value("stovepipe_queue_last_green_age_seconds", "mono/main") == 600
        assert value("stovepipe_queue_in_flight", "new/main") == 0  # nothing stored yet
        assert value("stovepipe_queue_last_green_age_seconds", "new/main") is None
        store.queues.update(
            Queue("mono/main", last_green_uri="fake://mono/gone", in_flight=0),
            old_version=1,
            new_version=2,
        )
        # The source no longer knows the commit: the age is left out, the scrape still works.
        assert value("stovepipe_queue_last_green_age_seconds", "mono/main") is None
        assert value("stovepipe_queue_in_flight", "mono/main") == 0


def test_failed_verdicts_are_timed_from_their_commit_and_green_ones_are_not() -> None:
    metrics = Metrics(process_metrics=False)
    source = FakeSourceControl(["c2", "c1"], name="mono", commit_times={"c1": 1000.0, "c2": 0.0})
    with open_storage("memory://") as store:
        metrics.instrument(store)
        metrics.watch_queues(
            store, QueueMap({"mono/main": source}), ["mono/main"], clock=lambda: 1700.0
        )
        store.facts.create(
            Fact("mono/main", "fake://mono/c1", "", 1.0, "request/mono/main/1", 1700.0)
        )
        store.facts.create(
            Fact("mono/main", "fake://mono/c2", "", 0.0, "request/mono/main/2", 1700.0)
        )
        with pytest.raises(AlreadyExists):  # a redelivery records nothing again
            store.facts.create(
                Fact("mono/main", "fake://mono/c1", "", 1.0, "request/mono/main/1", 1.0)
            )

    def sample(suffix: str, **labels: str) -> float | None:
        name = f"stovepipe_failed_verdict_seconds_{suffix}"
        return metrics.registry.get_sample_value(name, {"queue": "mono/main", **labels})

    assert sample("count") == 1
    assert sample("sum") == 700.0
    assert sample("bucket", le="600.0") == 0
    assert sample("bucket", le="1800.0") == 1
