"""Per-operation latency of the etcd backend next to raw gRPC calls making the same requests.

    STOVEPIPE_TEST_ETCD_URL=etcd://127.0.0.1:2379 python -m benchmarks.bench_etcd [--count N]

The raw side is a gRPC channel with the backend's channel options calling etcd's KV service
with the very messages the backend sends (same keys, values, compares), with nothing around
them: no argument checks, no encoding, no error mapping. Both sides run in the same process,
each operation on one side right after the other, on fresh keys. Round trips per operation
are counted in a separate pass, so that counting costs nothing in the timed runs.
"""

from __future__ import annotations

import argparse
import os
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
from benchmarks.timing import Latency, measure, print_comparison
from stovepipe.entity import Request, RequestState
from stovepipe.storage import Storage

QUEUE = "bench/main"


def _request(ns: str, i: int) -> Request:
    return Request(f"{ns}/{i}", QUEUE, f"git://o/r/main/{i}", RequestState.ACCEPTED, 1)


def raw_operations(
    channel: grpc.Channel, keys: Layout, ns: str, timeout: float
) -> dict[str, Callable[[int], object]]:
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

    def create(i: int) -> object:
        key = keys.request_key(f"{ns}/{i}")
        value = layout.encode_request(_request(ns, i), version=1, queue=QUEUE)
        return txn(TxnRequest(compare=[absent(key)], success=[put(key, value)]), timeout=timeout)

    def update(i: int) -> object:
        key = keys.request_key(f"{ns}/{i}")
        low = layout.version_prefix(1, QUEUE)
        value = layout.encode_request(_request(ns, i), version=2, queue=QUEUE)
        compare = [
            Compare(key=key, target=Compare.VALUE, result=Compare.GREATER, value=low),
            Compare(
                key=key,
                target=Compare.VALUE,
                result=Compare.LESS,
                value=layout.prefix_upper_bound(low),
            ),
        ]
        failure = [RequestOp(request_range=RangeRequest(key=key))]
        return txn(
            TxnRequest(compare=compare, success=[put(key, value)], failure=failure),
            timeout=timeout,
        )

    def uri_create(i: int) -> object:
        key = keys.uri_key(QUEUE, f"{ns}/{i}")
        return txn(TxnRequest(compare=[absent(key)], success=[put(key, b"id")]), timeout=timeout)

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

    return {
        "requests.create": create,
        "requests.get": lambda i: range_(
            RangeRequest(key=keys.request_key(f"{ns}/{i}")), timeout=timeout
        ),
        "requests.update": update,
        "request_uris.create": uri_create,
        "request_uris.get": lambda i: range_(
            RangeRequest(key=keys.uri_key(QUEUE, f"{ns}/{i}")), timeout=timeout
        ),
        "counter.next": counter_next,
    }


def run_side_by_side(
    ours: dict[str, Callable[[int], object]], raw: dict[str, Callable[[int], object]], count: int
) -> list[tuple[str, Latency, Latency]]:
    """Each operation on both sides back to back, so both see the same machine load.

    Operations run in contract order, so that get and update find what create wrote.
    """
    return [
        (name, measure(ours[name], count, warmup=0), measure(raw[name], count, warmup=0))
        for name in ours
    ]


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
        for name, op in operations(storage, uuid.uuid4().hex).items():
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
            operations(storage, uuid.uuid4().hex),
            raw_operations(channel, Layout(prefix.encode()), uuid.uuid4().hex, timeout),
            count,
        )
    print_comparison(f"etcd:// vs raw gRPC, same requests ({count} calls per operation)", rows)
    print("round trips per operation, both sides:")
    for name, trips_per_call in trips.items():
        print(f"  {name:<20}{trips_per_call:g}")


if __name__ == "__main__":
    main()
