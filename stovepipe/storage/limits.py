"""The documented limits of every stored field, the same for every backend.

Lengths are counted in bytes of the value's UTF-8 encoding, because that is what every
engine stores and indexes. Strings must be encodable as UTF-8 (no lone surrogates); any
other code point, NUL included, is allowed and compared byte for byte.
"""

from __future__ import annotations

from typing import Final

from stovepipe.storage.errors import LimitExceeded

MAX_REQUEST_ID_BYTES: Final = 255
"""Request ids. Room for ``request/<queue>/<n>`` with the longest queue and a 20-digit n."""

MAX_QUEUE_BYTES: Final = 200
"""Queue names."""

MAX_URI_BYTES: Final = 1024
"""Commit URIs."""

MAX_STATE_BYTES: Final = 32
"""Request states."""

MAX_COUNTER_DOMAIN_BYTES: Final = 255
"""Counter domains, e.g. ``request/<queue>``."""

MIN_VERSION: Final = 1
MAX_VERSION: Final = 2**63 - 1
"""Versions are integers in [MIN_VERSION, MAX_VERSION] (a signed 64-bit column)."""


def check_text(field: str, value: object, max_bytes: int) -> bytes:
    """Return ``value`` encoded as UTF-8, or raise if it breaks the field's limit."""
    if not isinstance(value, str):
        raise TypeError(f"{field} must be a str, not {type(value).__name__}")
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise LimitExceeded(f"{field} is not valid Unicode text: {error.reason}") from None
    if len(encoded) > max_bytes:
        raise LimitExceeded(
            f"{field} is {len(encoded)} bytes in UTF-8; the limit is {max_bytes} bytes"
        )
    return encoded


def check_version(field: str, value: object) -> None:
    """Raise unless ``value`` is an int within the version range."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{field} must be an int, not {type(value).__name__}")
    if not MIN_VERSION <= value <= MAX_VERSION:
        raise LimitExceeded(f"{field} is {value}; versions lie in [{MIN_VERSION}, {MAX_VERSION}]")
