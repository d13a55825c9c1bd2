"""open_storage: backends by URL scheme, and the limits checked before any backend runs."""

from __future__ import annotations

import pytest

from stovepipe.entity import Request, RequestState
from stovepipe.storage import (
    LimitExceeded,
    Storage,
    UnknownBackend,
    installed_schemes,
    open_storage,
)
from stovepipe.storage.memory import MemoryBackend


def test_unknown_scheme_error_names_the_installed_backends() -> None:
    with pytest.raises(UnknownBackend) as raised:
        open_storage("nosuch://host/db")
    message = str(raised.value)
    assert "nosuch://" in message
    assert "memory://" in message and "sqlite://" in message


def test_url_without_scheme_is_an_unknown_backend() -> None:
    with pytest.raises(UnknownBackend, match="installed"):
        open_storage("/var/lib/stovepipe.db")


def test_builtin_backends_are_registered_as_entry_points() -> None:
    assert {"memory", "sqlite"} <= set(installed_schemes())


class _Recording(MemoryBackend):
    """Counts the calls that reach the backend's request store."""

    def __init__(self) -> None:
        super().__init__()
        self.reached = 0
        inner = self.requests

        class Store:
            def create(_, request: Request) -> None:
                self.reached += 1
                inner.create(request)

        self.requests = Store()  # type: ignore[assignment]


def test_over_limit_input_never_reaches_the_backend() -> None:
    backend = _Recording()
    storage = Storage(backend)
    with pytest.raises(LimitExceeded, match="queue is 201 bytes"):
        storage.requests.create(Request("id", "q" * 201, "u", RequestState.ACCEPTED, 1))
    assert backend.reached == 0
    storage.requests.create(Request("id", "q" * 200, "u", RequestState.ACCEPTED, 1))
    assert backend.reached == 1


def test_wrong_argument_types_raise_type_error() -> None:
    with open_storage("memory://") as storage:
        with pytest.raises(TypeError, match="request id must be a str"):
            storage.requests.get(b"id")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="old_version must be an int"):
            storage.requests.update(
                Request("id", "q", "u", RequestState.ACCEPTED, 1),
                old_version=True,
                new_version=2,
            )
