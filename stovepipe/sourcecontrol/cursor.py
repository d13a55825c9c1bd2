"""Opaque history cursors shared by the SourceControl implementations.

A cursor names the source that issued it and the commit the next page starts at, as
URL-safe base64 of a JSON pair, so callers cannot build one by hand by accident and a
cursor handed to another queue's source is recognised as foreign.
"""

from __future__ import annotations

import base64
import binascii
import json


def encode_cursor(source: str, commit: str) -> str:
    """Return the cursor for the page of ``source`` that starts at ``commit``."""
    raw = json.dumps([source, commit], separators=(",", ":"), ensure_ascii=True)
    return base64.urlsafe_b64encode(raw.encode("ascii")).decode("ascii")


def decode_cursor(source: str, cursor: str) -> str:
    """Return the commit a cursor of ``source`` starts at.

    Raises ``ValueError`` if the cursor is malformed or was issued by another source.
    """
    if not isinstance(cursor, str):
        raise TypeError(f"cursor must be a str, not {type(cursor).__name__}")
    try:
        decoded = json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise ValueError("malformed history cursor") from None
    match decoded:
        case [str(issuer), str(commit)] if issuer == source:
            return commit
        case [str(), str()]:
            raise ValueError("history cursor was issued by another source")
        case _:
            raise ValueError("malformed history cursor")
