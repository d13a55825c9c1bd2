"""The documented limits of every stored field, the same for every backend.

Lengths are counted in bytes of the value's UTF-8 encoding, because that is what every
engine stores and indexes. Strings must be encodable as UTF-8 (no lone surrogates); any
other code point, NUL included, is allowed and compared byte for byte. Enumerated fields
(a request's ``state`` and ``build_strategy``, a build's ``status``) hold only the values
:mod:`stovepipe.entity` defines. Every check raises :class:`LimitExceeded` (a ``ValueError``),
or ``TypeError`` for a value of the wrong type.
"""

from __future__ import annotations

import enum
import math
from typing import Final, TypeVar

from stovepipe.storage.errors import LimitExceeded, StorageError

_Member = TypeVar("_Member", bound=enum.StrEnum)

MAX_REQUEST_ID_BYTES: Final = 255
"""Request ids. Room for ``request/<queue>/<n>`` with the longest queue and a 20-digit n."""

MAX_QUEUE_BYTES: Final = 200
"""Queue names."""

MAX_URI_BYTES: Final = 1024
"""Commit URIs."""

MAX_STATE_BYTES: Final = 32
"""Request states, build statuses and build strategies (each also one of its enum's values)."""

MAX_BUILD_ID_BYTES: Final = 255
"""Build ids, minted by a build runner."""

MAX_BUILD_LOG_BYTES: Final = 1024
"""A build's ``log``: where its output can be read (a path or URL), like a URI."""

MAX_PROJECT_BYTES: Final = 255
"""A fact's ``project`` (empty for the whole repository)."""

MAX_COUNTER_DOMAIN_BYTES: Final = 255
"""Counter domains, e.g. ``request/<queue>``."""

MIN_VERSION: Final = 1
MAX_VERSION: Final = 2**63 - 1
"""Versions are integers in [MIN_VERSION, MAX_VERSION] (a signed 64-bit column)."""

MAX_IN_FLIGHT: Final = 2**63 - 1
"""A queue's ``in_flight`` is an integer in [0, MAX_IN_FLIGHT]."""

MIN_DEGREE: Final = 0.0
MAX_DEGREE: Final = 1.0
"""A fact's ``degree`` is a float in [MIN_DEGREE, MAX_DEGREE]: 0 green, 1 fully broken."""

MAX_CREATED_AT: Final = 2.0**53
"""A fact's ``created_at`` is a finite float of seconds since the epoch in [0, MAX_CREATED_AT]."""


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


def check_count(field: str, value: object, maximum: int) -> None:
    """Raise unless ``value`` is an int in ``[0, maximum]``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{field} must be an int, not {type(value).__name__}")
    if not 0 <= value <= maximum:
        raise LimitExceeded(f"{field} is {value}; it lies in [0, {maximum}]")


def check_float(field: str, value: object, minimum: float, maximum: float) -> None:
    """Raise unless ``value`` is a finite int or float in ``[minimum, maximum]`` (NaN is not)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"{field} must be a float, not {type(value).__name__}")
    # An int compares exactly, however large: no float conversion that could overflow.
    if (isinstance(value, float) and math.isnan(value)) or not minimum <= value <= maximum:
        raise LimitExceeded(f"{field} is {value!r}; it lies in [{minimum!r}, {maximum!r}]")


def check_member(field: str, value: object, kind: type[enum.StrEnum]) -> None:
    """Raise unless ``value`` is one of ``kind``'s values, the ones this version defines.

    A value a newer version writes would not read back here (reading is strict), so an
    unknown one is refused on write.
    """
    if not isinstance(value, str):
        raise TypeError(f"{field} must be a str, not {type(value).__name__}")
    try:
        kind(value)
    except ValueError:
        known = ", ".join(repr(member.value) for member in kind)
        raise LimitExceeded(f"{field} {value!r} is not one this version defines: {known}") from None


def read_member(kind: type[_Member], value: str, field: str, where: str) -> _Member:
    """A stored ``value`` as a member of ``kind``, for backends reading an enumerated field.

    A value this version does not define (written by a newer one during a rolling upgrade,
    say) raises ``StorageError`` naming ``where`` (the key) and ``field``: never passed on.
    """
    try:
        return kind(value)
    except ValueError:
        raise StorageError(
            f"{where} holds an unknown {field} {value!r} (written by a newer version?)"
        ) from None
