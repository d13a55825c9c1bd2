"""The errors every storage backend raises, all under :class:`StorageError`.

Backends map their driver's exceptions onto these; a driver exception never leaks past a
backend. The tree they belong to is :mod:`stovepipe.errors`.
"""

from __future__ import annotations

from stovepipe.errors import StorageError, Transient

__all__ = [
    "AlreadyExists",
    "LimitExceeded",
    "NotFound",
    "StorageError",
    "Unavailable",
    "UnknownBackend",
    "VersionMismatch",
]


class NotFound(StorageError):
    """The key does not exist."""


class AlreadyExists(StorageError):
    """A create hit a key that already exists; the stored value was left as it was."""


class VersionMismatch(StorageError):
    """A conditional update found another version stored, or no row at all."""


class Unavailable(Transient, StorageError):
    """A transient infrastructure fault: refused, reset, timed out. Safe to retry later."""


class LimitExceeded(StorageError, ValueError):
    """An argument lies outside the documented limits; it never reached the backend."""


class UnknownBackend(StorageError, ValueError):
    """No installed backend serves the URL's scheme."""
