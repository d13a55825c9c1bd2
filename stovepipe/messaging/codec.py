"""Payload codecs: protojson with proto field names, tolerant of unknown fields; and the text
codec every broker stores topics, keys, ids and reasons with."""

from __future__ import annotations

import json
from typing import TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message as ProtoMessage

from stovepipe.messaging.contract import PermanentFailure
from stovepipe.messaging.v1.messaging_pb2 import ProcessRequest

_Payload = TypeVar("_Payload", bound=ProtoMessage)


def encode(payload: ProtoMessage) -> bytes:
    """Serialize ``payload`` as compact protojson (UTF-8) with proto field names."""
    fields = json_format.MessageToDict(payload, preserving_proto_field_name=True)
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode(data: bytes, kind: type[_Payload], required: str) -> _Payload:
    """Parse a ``kind`` from protojson, ignoring fields this version does not know.

    Raises :class:`PermanentFailure` if ``data`` is not protojson of a ``kind`` or its
    ``required`` field is empty: no redelivery can fix it.
    """
    payload = kind()
    name = kind.DESCRIPTOR.name
    try:
        json_format.Parse(data.decode("utf-8"), payload, ignore_unknown_fields=True)
    except (UnicodeDecodeError, json_format.ParseError) as error:
        raise PermanentFailure(f"malformed {name} payload: {error}") from None
    if not getattr(payload, required):
        raise PermanentFailure(f"malformed {name} payload: no {required}")
    return payload


def encode_process_request(request: ProcessRequest) -> bytes:
    """Serialize a ``ProcessRequest``; see :func:`encode`."""
    return encode(request)


def decode_process_request(payload: bytes) -> ProcessRequest:
    """Parse a ``ProcessRequest`` that carries an ``id``; see :func:`decode`."""
    return decode(payload, ProcessRequest, "id")


def encode_text(text: str) -> bytes:
    """``text`` as UTF-8 for a broker; lone surrogates pass through, so any key round-trips."""
    return text.encode("utf-8", "surrogatepass")


def decode_text(data: bytes) -> str:
    """The inverse of :func:`encode_text`; ``UnicodeDecodeError`` for bytes it did not write."""
    return bytes(data).decode("utf-8", "surrogatepass")


def decode_text_lax(data: bytes) -> str:
    """``data`` as text for a dead letter: invalid UTF-8 shown as ``\\xNN`` escapes."""
    try:
        return decode_text(data)
    except UnicodeDecodeError:
        return bytes(data).decode("utf-8", "backslashreplace")
