"""Stovepipe's storage contract, opened from a URL whose scheme picks the backend.

>>> with open_storage("memory://") as storage:
...     storage.counter.next("request/monorepo/main")
1
"""

from stovepipe.storage.contract import (
    Backend,
    BackendOpener,
    BuildStore,
    Capability,
    Counter,
    FactStore,
    QueueStore,
    RequestStore,
    RequestURIStore,
)
from stovepipe.storage.errors import (
    AlreadyExists,
    LimitExceeded,
    NotFound,
    StorageError,
    Unavailable,
    UnknownBackend,
    VersionMismatch,
)
from stovepipe.storage.storage import ENTRY_POINT_GROUP, Storage, installed_schemes, open_storage

__all__ = [
    "ENTRY_POINT_GROUP",
    "AlreadyExists",
    "Backend",
    "BackendOpener",
    "BuildStore",
    "Capability",
    "Counter",
    "FactStore",
    "LimitExceeded",
    "NotFound",
    "QueueStore",
    "RequestStore",
    "RequestURIStore",
    "Storage",
    "StorageError",
    "Unavailable",
    "UnknownBackend",
    "VersionMismatch",
    "installed_schemes",
    "open_storage",
]
