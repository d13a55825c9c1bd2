"""The key layout and value encoding, without a server: exact, injective, order-preserving."""

from __future__ import annotations

import itertools
import pathlib
import struct
import subprocess
import sys
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from stovepipe_etcd import layout
from stovepipe_etcd.layout import CorruptValue, Layout

from stovepipe.entity import (
    Build,
    BuildStatus,
    BuildStrategy,
    Fact,
    Queue,
    Request,
    RequestState,
)

# Text the contract allows: any code point but lone surrogates, NUL included.
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
# Text made of the bytes a key layout could trip over: separators, digits, NUL.
tricky = st.text(st.sampled_from('ab/:0123\x00\\"é'), max_size=8)
versions = st.integers(min_value=1, max_value=2**63 - 1)
counts = st.integers(min_value=0, max_value=2**63 - 1)
finite = st.floats(allow_nan=False, allow_infinity=False)
KEYS = Layout(b"p/")
TAGS = [b"request/", b"uri/", b"counter/", b"queue/", b"build/", b"fact/"]


def _bits(number: float) -> bytes:
    """The float's IEEE 754 bytes: equal only for the very same float (-0.0 is not 0.0)."""
    return struct.pack(">d", number)


def _split_uri_key(key: bytes) -> tuple[str, str]:
    """Read ``(queue, uri)`` back from a key, as the layout says anyone can."""
    rest = key.removeprefix(b"p/uri/")
    length, _, rest = rest.partition(b":")
    return rest[: int(length)].decode(), rest[int(length) :].decode()


@given(text, text)
def test_key_layout_recovers_queue_and_uri_from_the_key_alone(queue: str, uri: str) -> None:
    assert _split_uri_key(KEYS.uri_key(queue, uri)) == (queue, uri)


@given(text, text, text, text)
def test_key_layout_gives_distinct_pairs_distinct_keys(q1: str, u1: str, q2: str, u2: str) -> None:
    assert (KEYS.uri_key(q1, u1) == KEYS.uri_key(q2, u2)) == ((q1, u1) == (q2, u2))


def _split_fact_key(key: bytes) -> tuple[str, str, str]:
    """Read ``(queue, uri, project)`` back from a key, as the layout says anyone can."""
    rest = key.removeprefix(b"p/fact/")
    parts = []
    for _ in range(2):
        length, _, rest = rest.partition(b":")
        parts.append(rest[: int(length)].decode())
        rest = rest[int(length) :]
    return parts[0], parts[1], rest.decode()


@given(text, text, text)
def test_key_layout_recovers_queue_uri_and_project_from_the_fact_key_alone(
    queue: str, uri: str, project: str
) -> None:
    assert _split_fact_key(KEYS.fact_key(queue, uri, project)) == (queue, uri, project)


@given(st.tuples(tricky, tricky, tricky), st.tuples(tricky, tricky, tricky))
def test_key_layout_gives_distinct_fact_triples_distinct_keys(
    first: tuple[str, str, str], second: tuple[str, str, str]
) -> None:
    assert (KEYS.fact_key(*first) == KEYS.fact_key(*second)) == (first == second)


def test_key_layout_gives_triples_sharing_a_concatenation_distinct_fact_keys() -> None:
    # Every way to cut "1:a:b\x00c" (separators, digits and NUL) into three parts.
    whole = "1:a:b\x00c"
    triples = {
        (whole[:i], whole[i:j], whole[j:])
        for i, j in itertools.combinations_with_replacement(range(len(whole) + 1), 2)
    }
    keys = {KEYS.fact_key(*triple) for triple in triples}
    assert len(keys) == len(triples)


@given(text)
def test_key_layout_puts_each_store_under_its_own_tag(name: str) -> None:
    keys = [
        KEYS.request_key(name),
        KEYS.uri_key(name, ""),
        KEYS.counter_key(name),
        KEYS.queue_key(name),
        KEYS.build_key(name),
        KEYS.fact_key(name, "", ""),
    ]
    tags = [b"p/" + tag for tag in TAGS]
    assert [key.startswith(tag) for key, tag in zip(keys, tags, strict=True)] == [True] * 6


def test_key_layout_tags_are_distinct_and_none_is_a_prefix_of_another() -> None:
    for first, second in itertools.permutations(TAGS, 2):
        assert not second.startswith(first)


@given(text, text, text, versions)
def test_value_encoding_round_trips_exactly(request_id: str, queue: str, uri: str, v: int) -> None:
    request = Request(request_id, queue, uri, RequestState.ACCEPTED, v)
    value = layout.encode_request(request, version=v, queue=queue)
    assert layout.decode_request(request_id, value) == request


@given(text, text, text, versions, st.sampled_from(BuildStrategy), text)
def test_value_encoding_round_trips_the_build_strategy_and_base_uri_exactly(
    request_id: str, queue: str, uri: str, v: int, strategy: BuildStrategy, base_uri: str
) -> None:
    request = Request(request_id, queue, uri, RequestState.PROCESSING, v, strategy, base_uri)
    value = layout.encode_request(request, version=v, queue=queue)
    assert layout.decode_request(request_id, value) == request


def test_value_written_before_the_pipeline_fields_reads_them_as_unset() -> None:
    old = b'0000000000000000007\n["q", "git://u", "accepted"]'
    assert layout.decode_request("r", old) == Request(
        "r", "q", "git://u", RequestState.ACCEPTED, 7, BuildStrategy.UNSET, ""
    )


def test_value_of_a_request_with_unset_pipeline_fields_keeps_the_previous_layout() -> None:
    request = Request("r", "q", "git://u", RequestState.ACCEPTED, 7)
    value = layout.encode_request(request, version=7, queue="q")
    assert value == b'0000000000000000007\n["q", "git://u", "accepted"]'


@given(text, text, text, text, counts, versions)
def test_value_encoding_round_trips_a_queue_exactly(
    name: str, latest: str, green_uri: str, green_request: str, in_flight: int, v: int
) -> None:
    queue = Queue(name, latest, green_uri, green_request, in_flight, v)
    assert layout.decode_queue(name, layout.encode_queue(queue, version=v)) == queue


@given(text, text, st.sampled_from(BuildStatus), text, versions)
def test_value_encoding_round_trips_a_build_exactly(
    build_id: str, request_id: str, status: BuildStatus, log: str, v: int
) -> None:
    build = Build(build_id, request_id, status, log, v)
    value = layout.encode_build(build, version=v, request_id=request_id)
    assert layout.decode_build(build_id, value) == build


@given(text, text, text, text, finite, finite)
def test_value_encoding_round_trips_a_fact_with_the_very_same_floats(
    queue: str, uri: str, project: str, request_id: str, degree: float, created_at: float
) -> None:
    fact = Fact(queue, uri, project, degree, request_id, created_at)
    decoded = layout.decode_fact(queue, uri, project, layout.encode_fact(fact))
    assert decoded == fact
    assert _bits(decoded.degree) == _bits(degree)
    assert _bits(decoded.created_at) == _bits(created_at)


def test_value_encoding_reads_an_int_degree_back_as_the_float_it_equals() -> None:
    fact = Fact("q", "u", "", 1, "r", 1700000000)
    decoded = layout.decode_fact("q", "u", "", layout.encode_fact(fact))
    assert (type(decoded.degree), type(decoded.created_at)) == (float, float)
    assert decoded == fact


@pytest.mark.parametrize(
    ("decode", "value"),
    [
        (lambda v: layout.decode_request("r", v), b'0000000000000000001\n["q", "u", "paused"]'),
        (
            lambda v: layout.decode_request("r", v),
            b'0000000000000000001\n["q", "u", "accepted", "nightly", ""]',
        ),
        (lambda v: layout.decode_build("b", v), b'0000000000000000001\n["r", "queued", ""]'),
    ],
    ids=["request state", "build strategy", "build status"],
)
def test_value_holding_an_unknown_enumeration_value_is_corrupt(
    decode: Callable[[bytes], object], value: bytes
) -> None:
    with pytest.raises(CorruptValue, match="unknown"):
        decode(value)


@pytest.mark.parametrize(
    ("decode", "value"),
    [
        (lambda v: layout.decode_request("r", v), b'1\n["q", "u", "accepted"]'),
        (lambda v: layout.decode_request("r", v), b'0000000000000000001\n["q", "u"]'),
        (lambda v: layout.decode_queue("q", v), b'0000000000000000001\n["", "", "", -1]'),
        (lambda v: layout.decode_queue("q", v), b'0000000000000000001\n["", "", "", true]'),
        (lambda v: layout.decode_queue("q", v), b'0000000000000000001\n["", "", ""]'),
        (lambda v: layout.decode_build("b", v), b'0000000000000000001\n[1, "running", ""]'),
        (lambda v: layout.decode_fact("q", "u", "", v), b'["r", 0, 1.0]'),
        (lambda v: layout.decode_fact("q", "u", "", v), b'["r", 0.0]'),
        (lambda v: layout.decode_fact("q", "u", "", v), b"\xff"),
    ],
)
def test_value_not_in_the_layout_is_corrupt(
    decode: Callable[[bytes], object], value: bytes
) -> None:
    with pytest.raises(CorruptValue, match="unreadable"):
        decode(value)


@given(text, text, text, versions, versions)
def test_build_value_lies_in_the_version_prefix_range_exactly_when_version_and_request_match(
    request_id: str, log: str, expected_request_id: str, version: int, expected: int
) -> None:
    build = Build("b", request_id, BuildStatus.RUNNING, log, version)
    value = layout.encode_build(build, version=version, request_id=request_id)
    low = layout.version_prefix(expected, expected_request_id)
    in_range = low < value < layout.prefix_upper_bound(low)
    assert in_range == ((version, request_id) == (expected, expected_request_id))


@given(text, counts, versions, versions)
def test_queue_value_lies_in_the_version_prefix_range_exactly_when_the_version_matches(
    latest: str, in_flight: int, version: int, expected: int
) -> None:
    value = layout.encode_queue(Queue("q", latest, in_flight=in_flight), version=version)
    low = layout.version_prefix(expected)
    assert (low < value < layout.prefix_upper_bound(low)) == (version == expected)


@given(text, text, versions, text, versions, st.sampled_from(BuildStrategy))
def test_value_lies_in_the_version_prefix_range_exactly_when_version_and_queue_match(
    queue: str,
    uri: str,
    version: int,
    expected_queue: str,
    expected_version: int,
    strategy: BuildStrategy,
) -> None:
    request = Request("r", queue, uri, RequestState.ACCEPTED, version, strategy, uri)
    value = layout.encode_request(request, version=version, queue=queue)
    low = layout.version_prefix(expected_version, expected_queue)
    in_range = low < value < layout.prefix_upper_bound(low)
    assert in_range == ((version, queue) == (expected_version, expected_queue))


def test_value_range_holds_at_the_largest_version() -> None:
    top = 2**63 - 1
    request = Request("r", "q", "u", RequestState.ACCEPTED, top)
    value = layout.encode_request(request, version=top, queue="q")
    below = layout.version_prefix(top - 1, "q")
    assert not below < value < layout.prefix_upper_bound(below)
    low = layout.version_prefix(top, "q")
    assert low < value < layout.prefix_upper_bound(low)


def test_generated_protobuf_code_matches_the_proto() -> None:
    script = pathlib.Path(__file__).resolve().parent.parent / "generate_protos.py"
    result = subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
