"""Payload codecs: protojson with proto field names, tolerant of unknown fields."""

from __future__ import annotations

import json

from google.protobuf import json_format

from stovepipe.messagequeue.contract import PermanentFailure
from stovepipe.messagequeue.v1.messagequeue_pb2 import ProcessRequest


def encode_process_request(request: ProcessRequest) -> bytes:
    """Serialize ``request`` as compact protojson (UTF-8) with proto field names."""
    fields = json_format.MessageToDict(request, preserving_proto_field_name=True)
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode_process_request(payload: bytes) -> ProcessRequest:
    """Parse a ``ProcessRequest``, ignoring fields this version does not know.

    Raises :class:`PermanentFailure` if the payload is not protojson of a ``ProcessRequest``
    or carries no ``id``: no redelivery can fix it.
    """
    request = ProcessRequest()
    try:
        json_format.Parse(payload.decode("utf-8"), request, ignore_unknown_fields=True)
    except (UnicodeDecodeError, json_format.ParseError) as error:
        raise PermanentFailure(f"malformed ProcessRequest payload: {error}") from None
    if not request.id:
        raise PermanentFailure("malformed ProcessRequest payload: no id")
    return request
