"""Metrics: every RPC (count by status code, latency) and every storage operation (count by
outcome, latency), scraped from the server's /metrics endpoint over HTTP."""

from __future__ import annotations

import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stovepipe.entity import Request, RequestState
from stovepipe.metrics import Metrics
from stovepipe.sourcecontrol.fake import FakeSourceControl
from stovepipe.storage import AlreadyExists, NotFound, open_storage
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
    running.client.Ingest(pb.IngestRequest(queue="q"), timeout=TIMEOUT)  # a new head
    running.client.Ingest(pb.IngestRequest(queue="q"), timeout=TIMEOUT)  # the same head

    assert running.server.metrics_port is not None
    samples = scrape(running.server.metrics_port)
    ops = "stovepipe_storage_operations_total"
    lookup = {"store": "request_uris", "operation": "get_id_by_uri"}
    assert storage(samples, ops, **lookup, outcome="NotFound") == 1
    assert storage(samples, ops, **lookup, outcome="ok") == 1
    assert storage(samples, ops, store="counter", operation="next", outcome="ok") == 1
    assert storage(samples, ops, store="request_uris", operation="create", outcome="ok") == 1
    assert storage(samples, ops, store="requests", operation="create", outcome="ok") == 1
    # The process consumer reloads the request too, so gets are at least the two ingests'.
    assert storage(samples, ops, store="requests", operation="get", outcome="NotFound") == 1
    assert storage(samples, ops, store="requests", operation="get", outcome="ok") >= 1
    seconds = "stovepipe_storage_operation_seconds_count"
    assert storage(samples, seconds, **lookup) == 2


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
