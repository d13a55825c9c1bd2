"""The fixtures every storage contract test uses.

Which backends a run covers, the ``--storage-url`` option and what happens to a backend that
cannot be had live in the plugin :mod:`stovepipe.conformance.plugin`. A backend's own test
tree can reuse these fixtures with ``from stovepipe.conformance.storage.conftest import *``.

Tests isolate themselves with unique keys (the ``ns`` fixture), so a backend needs no reset
hook and the suite can share a server with anything else.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from hypothesis import Phase, settings

from stovepipe.conformance.plugin import (
    is_explicit,
    resolve_storage_url,
    target_id,
    unreachable,
)
from stovepipe.storage import Storage, open_storage

# For runs that only need to know whether a rule fails, not the smallest example of it.
settings.register_profile("no-shrink", phases=[Phase.explicit, Phase.reuse, Phase.generate])


@pytest.fixture(scope="session")
def storage_url(
    storage_target: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> str:
    """The URL of the backend under test, resolved from its target."""
    return resolve_storage_url(request.config, storage_target, tmp_path_factory.mktemp("sqlite"))


@pytest.fixture(scope="session")
def shared_storage(storage_target: str, storage_url: str) -> Iterator[Storage]:
    try:
        storage = open_storage(storage_url)
    except Exception as error:
        unreachable(
            f"cannot open {target_id(storage_url)} storage: {error!r}",
            explicit=is_explicit(storage_target),
        )
    with storage:
        yield storage


@pytest.fixture
def storage(shared_storage: Storage) -> Storage:
    """One storage instance per backend, shared by the whole run, as a server shares it."""
    return shared_storage


@pytest.fixture
def ns() -> str:
    """A token unique to the test, to be put in every key it writes."""
    return uuid.uuid4().hex[:12]
