"""Per-operation latency of the etcd backend next to raw gRPC calls making the same requests.

    STOVEPIPE_TEST_ETCD_URL=etcd://127.0.0.1:2379 python -m benchmarks.bench_etcd [--count N]

The raw side is a gRPC channel with the backend's channel options calling etcd's KV service
with the very messages the backend sends (same keys, values, compares), with nothing around
them: no argument checks, no encoding, no error mapping. Both sides run in the same process,
interleaved: for each operation, call i of one side is timed right after call i of the other
(which side goes first alternates), so both see the same machine and server load. Each side
writes fresh keys of its own. Round trips per operation are counted in a separate pass, so
that counting costs nothing in the timed runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from collections import Counter as Tally
from collections.abc import Callable

import grpc
from stovepipe_etcd import layout, open_backend
from stovepipe_etcd.client import CHANNEL_OPTIONS
from stovepipe_etcd.etcdrpc.rpc_pb2 import (
    Compare,
    PutRequest,
    RangeRequest,
    RangeResponse,
    RequestOp,
    TxnRequest,
    TxnResponse,
)
from stovepipe_etcd.layout import Layout

from benchmarks.bench_storage import operations
from benchmarks.timing import Latency, print_comparison
from stovepipe.entity import Build, BuildStatus, Fact, Queue, Request, RequestState
from stovepipe.storage import Storage

QUEUE = "bench/main"
Operation = Callable[[int], object]


def _request(ns: str, i: int) -> Request:
    return Request(f"{ns}/{i}", QUEUE, f"git://o/r/main/{i}", RequestState.ACCEPTED, 1)


# The pipeline's entities, the same on both sides but for the namespace in their keys.


def _queue(ns: str, i: int, in_flight: int = 0) -> Queue:
    return Queue(f"{ns}/q/{i}", f"request/{ns}/{i}", "", "", in_flight, 1)


def _build(ns: str, i: int, status: BuildStatus = BuildStatus.ACCEPTED) -> Build:
    return Build(f"{ns}/b/{i}", f"request/{ns}/{i}", status, f"/var/log/build/{i}.log", 1)


def _fact(ns: str, i: int) -> Fact:
    return Fact(QUEUE, f"git://o/r/main/{ns}/{i}", "", 0.0, f"request/{ns}/{i}", 1.7e9 + i / 7)


def pipeline_operations(storage: Storage, ns: str) -> dict[str, Operation]:
    """One callable per operation of the queue, build and fact stores, in contract order."""
    return {
        "queues.create": lambda i: storage.queues.create(_queue(ns, i)),
        "queues.get": lambda i: storage.queues.get(f"{ns}/q/{i}"),
        "queues.update": lambda i: storage.queues.update(
            _queue(ns, i, in_flight=1), old_version=1, new_version=2
        ),
        "builds.create": lambda i: storage.builds.create(_build(ns, i)),
        "builds.get": lambda i: storage.builds.get(f"{ns}/b/{i}"),
        "builds.update": lambda i: storage.builds.update(
            _build(ns, i, BuildStatus.RUNNING), old_version=1, new_version=2
        ),
        "facts.create": lambda i: storage.facts.create(_fact(ns, i)),
        "facts.get": lambda i: storage.facts.get(QUEUE, f"git://o/r/main/{ns}/{i}", ""),
    }


def all_operations(storage: Storage, ns: str) -> dict[str, Operation]:
    """Every contract operation through ``storage``."""
    return {**operations(storage, ns), **pipeline_operations(storage, ns)}


def raw_operations(
    channel: grpc.Channel, keys: Layout, ns: str, timeout: float
) -> dict[str, Operation]:
    """The backend's requests, built and sent directly."""
    range_ = channel.unary_unary(
        "/etcdserverpb.KV/Range",
        request_serializer=RangeRequest.SerializeToString,
        response_deserializer=RangeResponse.FromString,
    )
    txn = channel.unary_unary(
        "/etcdserverpb.KV/Txn",
        request_serializer=TxnRequest.SerializeToString,
        response_deserializer=TxnResponse.FromString,
    )

    def put(key: bytes, value: bytes) -> RequestOp:
        return RequestOp(request_put=PutRequest(key=key, value=value))

    def absent(key: bytes) -> Compare:
        return Compare(key=key, target=Compare.VERSION, result=Compare.EQUAL, version=0)

    def get(key: bytes) -> object:
        return range_(RangeRequest(key=key), timeout=timeout)

    def create(key: bytes, value: bytes) -> object:
        return txn(TxnRequest(compare=[absent(key)], success=[put(key, value)]), timeout=timeout)

    def update(key: bytes, low: bytes, value: bytes, *, read_on_failure: bool = True) -> object:
        compare = [
            Compare(key=key, target=Compare.VALUE, result=Compare.GREATER, value=low),
            Compare(
                key=key,
                target=Compare.VALUE,
                result=Compare.LESS,
                value=layout.prefix_upper_bound(low),
            ),
        ]
        failure = [RequestOp(request_range=RangeRequest(key=key))] if read_on_failure else []
        return txn(
            TxnRequest(compare=compare, success=[put(key, value)], failure=failure),
            timeout=timeout,
        )

    counter_key = keys.counter_key(f"{ns}/counter")
    counter = {"value": 0, "mod_revision": 0}

    def counter_next(i: int) -> object:
        if counter["mod_revision"]:
            compare = Compare(
                key=counter_key,
                target=Compare.MOD,
                result=Compare.EQUAL,
                mod_revision=counter["mod_revision"],
            )
        else:
            compare = absent(counter_key)
        number = counter["value"] + 1
        response = txn(
            TxnRequest(
                compare=[compare],
                success=[put(counter_key, b"%d" % number)],
                failure=[RequestOp(request_range=RangeRequest(key=counter_key))],
            ),
            timeout=timeout,
        )
        counter["value"], counter["mod_revision"] = number, response.header.revision
        return number

    def request_key(i: int) -> bytes:
        return keys.request_key(f"{ns}/{i}")

    def queue_key(i: int) -> bytes:
        return keys.queue_key(f"{ns}/q/{i}")

    def build_key(i: int) -> bytes:
        return keys.build_key(f"{ns}/b/{i}")

    def fact_key(i: int) -> bytes:
        return keys.fact_key(QUEUE, f"git://o/r/main/{ns}/{i}", "")

    return {
        "requests.create": lambda i: create(
            request_key(i), layout.encode_request(_request(ns, i), version=1, queue=QUEUE)
        ),
        "requests.get": lambda i: get(request_key(i)),
        "requests.update": lambda i: update(
            request_key(i),
            layout.version_prefix(1, QUEUE),
            layout.encode_request(_request(ns, i), version=2, queue=QUEUE),
        ),
        "request_uris.create": lambda i: create(keys.uri_key(QUEUE, f"{ns}/{i}"), b"id"),
        "request_uris.get": lambda i: get(keys.uri_key(QUEUE, f"{ns}/{i}")),
        "counter.next": counter_next,
        "queues.create": lambda i: create(
            queue_key(i), layout.encode_queue(_queue(ns, i), version=1)
        ),
        "queues.get": lambda i: get(queue_key(i)),
        "queues.update": lambda i: update(
            queue_key(i),
            layout.version_prefix(1),
            layout.encode_queue(_queue(ns, i, in_flight=1), version=2),
            read_on_failure=False,
        ),
        "builds.create": lambda i: create(
            build_key(i),
            layout.encode_build(_build(ns, i), version=1, request_id=f"request/{ns}/{i}"),
        ),
        "builds.get": lambda i: get(build_key(i)),
        "builds.update": lambda i: update(
            build_key(i),
            layout.version_prefix(1, f"request/{ns}/{i}"),
            layout.encode_build(
                _build(ns, i, BuildStatus.RUNNING), version=2, request_id=f"request/{ns}/{i}"
            ),
        ),
        "facts.create": lambda i: create(fact_key(i), layout.encode_fact(_fact(ns, i))),
        "facts.get": lambda i: get(fact_key(i)),
    }


def _latency(samples: list[float]) -> Latency:
    """Summarize per-call times in microseconds, as :func:`benchmarks.timing.measure` does."""
    samples.sort()
    return Latency(
        count=len(samples),
        p50_us=samples[len(samples) // 2],
        p99_us=samples[min(len(samples) - 1, int(len(samples) * 0.99))],
        mean_us=statistics.fmean(samples),
    )


def measure_interleaved(ours: Operation, raw: Operation, count: int) -> tuple[Latency, Latency]:
    """Time call i of each side back to back, alternating which side goes first."""
    sides: tuple[tuple[Operation, list[float]], ...] = ((ours, []), (raw, []))
    for i in range(count):
        for operation, samples in sides if i % 2 == 0 else reversed(sides):
            start = time.perf_counter_ns()
            operation(i)
            samples.append((time.perf_counter_ns() - start) / 1000)
    return _latency(sides[0][1]), _latency(sides[1][1])


def run_side_by_side(
    ours: dict[str, Operation], raw: dict[str, Operation], count: int
) -> list[tuple[str, Latency, Latency]]:
    """Each operation on both sides, interleaved, so both see the same machine load.

    Operations run in contract order, so that get and update find what create wrote.
    """
    return [(name, *measure_interleaved(ours[name], raw[name], count)) for name in raw]


def round_trips(url: str, calls: int) -> dict[str, float]:
    """Client calls per operation, counted on a backend of its own."""
    backend = open_backend(url)
    with Storage(backend) as storage:
        client = backend.client
        tally: Tally[str] = Tally()
        for method in ("range", "txn"):
            call = getattr(client, method)

            def counted(*args: object, _call: Callable[..., object] = call, **kw: object) -> object:
                tally["now"] += 1
                return _call(*args, **kw)

            setattr(client, method, counted)
        per_operation = {}
        for name, op in all_operations(storage, uuid.uuid4().hex).items():
            tally.clear()
            for i in range(calls):
                op(i)
            per_operation[name] = tally["now"] / calls
    return per_operation


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="calls per operation")
    count = parser.parse_args().count
    base = os.environ.get("STOVEPIPE_TEST_ETCD_URL", "etcd://127.0.0.1:2379")
    prefix = f"stovepipe-bench/{uuid.uuid4().hex[:8]}/"
    url = f"{base}{'&' if '?' in base else '?'}prefix={prefix}"

    trips = round_trips(url, 20)
    backend = open_backend(url)
    target, timeout = backend.client.target, backend.client.timeout
    with (
        Storage(backend) as storage,
        grpc.insecure_channel(target, options=CHANNEL_OPTIONS) as channel,
    ):
        rows = run_side_by_side(
            all_operations(storage, uuid.uuid4().hex),
            raw_operations(channel, Layout(prefix.encode()), uuid.uuid4().hex, timeout),
            count,
        )
    print_comparison(
        f"etcd:// vs raw gRPC, same requests, interleaved ({count} calls per operation)", rows
    )
    print("round trips per operation, both sides:")
    for name, trips_per_call in trips.items():
        print(f"  {name:<20}{trips_per_call:g}")


if __name__ == "__main__":
    main()
