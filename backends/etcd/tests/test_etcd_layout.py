"""The key layout and value encoding, without a server: exact, injective, order-preserving."""

from __future__ import annotations

import pathlib
import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st
from stovepipe_etcd import layout
from stovepipe_etcd.layout import Layout

from stovepipe.entity import Request, RequestState

# Text the contract allows: any code point but lone surrogates, NUL included.
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
versions = st.integers(min_value=1, max_value=2**63 - 1)
KEYS = Layout(b"p/")


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


@given(text)
def test_key_layout_puts_each_store_under_its_own_tag(name: str) -> None:
    keys = [KEYS.request_key(name), KEYS.uri_key(name, ""), KEYS.counter_key(name)]
    tags = [b"p/request/", b"p/uri/", b"p/counter/"]
    assert [key.startswith(tag) for key, tag in zip(keys, tags, strict=True)] == [True] * 3


@given(text, text, text, versions)
def test_value_encoding_round_trips_exactly(request_id: str, queue: str, uri: str, v: int) -> None:
    request = Request(request_id, queue, uri, RequestState.ACCEPTED, v)
    value = layout.encode_request(request, version=v, queue=queue)
    assert layout.decode_request(request_id, value) == request


@given(text, text, versions, text, versions)
def test_value_lies_in_the_version_prefix_range_exactly_when_version_and_queue_match(
    queue: str, uri: str, version: int, expected_queue: str, expected_version: int
) -> None:
    request = Request("r", queue, uri, RequestState.ACCEPTED, version)
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
