"""The ProcessRequest codec: protojson with proto field names, tolerant of unknown fields."""

from __future__ import annotations

import json

import pytest

from stovepipe.messaging import PermanentFailure
from stovepipe.messaging.codec import decode_process_request, encode_process_request
from stovepipe.messaging.v1.messaging_pb2 import ProcessRequest


def test_process_request_round_trips_exactly() -> None:
    for queue in ["monorepo/main", "naïve/ß/🦄", " spaced \x00 nul "]:
        request = ProcessRequest(id=f"request/{queue}/7", queue=queue)
        assert decode_process_request(encode_process_request(request)) == request


def test_process_request_is_protojson_with_proto_field_names() -> None:
    payload = encode_process_request(ProcessRequest(id="request/q/1", queue="q"))
    assert json.loads(payload) == {"id": "request/q/1", "queue": "q"}


def test_process_request_decode_ignores_unknown_fields() -> None:
    payload = b'{"id": "request/q/1", "queue": "q", "addedLater": {"x": [1, 2]}}'
    assert decode_process_request(payload) == ProcessRequest(id="request/q/1", queue="q")


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'{"id": 5}',
        b'{"id": "request/q/1", "queue": ["q"]}',
        b"{}",
        b'{"queue": "q"}',
    ],
)
def test_malformed_process_request_raises_permanent_failure(payload: bytes) -> None:
    with pytest.raises(PermanentFailure, match="malformed ProcessRequest"):
        decode_process_request(payload)
