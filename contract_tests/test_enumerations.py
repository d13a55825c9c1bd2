"""Enumerations are closed: a value this version does not define is refused on write, before
the backend, and nothing is stored; a backend never reads one back; every value this version
defines reads back as its member."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import urllib.parse
from collections.abc import Callable, Iterator
from typing import cast

import pytest

from stovepipe.entity import Build, BuildStatus, BuildStrategy, Request, RequestState
from stovepipe.storage import (
    ENTRY_POINT_GROUP,
    Backend,
    BackendOpener,
    Capability,
    LimitExceeded,
    NotFound,
    Storage,
    StorageError,
)

from .capabilities import require

# Plain strings, as a newer version or a careless caller would hand them over: unknown words,
# a defined word in another case or with a space or NUL, a word another enumeration defines.
UNKNOWN_STATES = ["from-a-newer-version", "", "Accepted", "accepted ", "accepted\x00", "full"]
UNKNOWN_STATUSES = ["from-a-newer-version", "", "Running", " running", "processing"]
UNKNOWN_STRATEGIES = ["from-a-newer-version", "Full", "full ", "unset", "accepted"]


def _request(ns: str) -> Request:
    return Request(f"{ns}/id", f"{ns}/q", f"{ns}/u", RequestState.ACCEPTED, 1)


def _build(ns: str) -> Build:
    return Build(f"{ns}/build", f"{ns}/id", BuildStatus.ACCEPTED, f"{ns}/log", 1)


@pytest.mark.parametrize("state", UNKNOWN_STATES)
def test_enumerations_a_request_state_this_version_does_not_define_is_refused_on_write(
    storage: Storage, ns: str, state: str
) -> None:
    good = _request(ns)
    bad = dataclasses.replace(good, state=cast(RequestState, state))
    with pytest.raises(LimitExceeded, match="state"):
        storage.requests.create(bad)
    with pytest.raises(NotFound):
        storage.requests.get(good.id)
    storage.requests.create(good)
    with pytest.raises(LimitExceeded, match="state"):
        storage.requests.update(bad, old_version=1, new_version=2)
    assert storage.requests.get(good.id) == good


@pytest.mark.parametrize("strategy", UNKNOWN_STRATEGIES)
def test_enumerations_a_build_strategy_this_version_does_not_define_is_refused_on_write(
    storage: Storage, ns: str, strategy: str
) -> None:
    good = _request(ns)
    bad = dataclasses.replace(good, build_strategy=cast(BuildStrategy, strategy))
    with pytest.raises(LimitExceeded, match="build_strategy"):
        storage.requests.create(bad)
    with pytest.raises(NotFound):
        storage.requests.get(good.id)
    storage.requests.create(good)
    with pytest.raises(LimitExceeded, match="build_strategy"):
        storage.requests.update(bad, old_version=1, new_version=2)
    assert storage.requests.get(good.id) == good


@pytest.mark.parametrize("status", UNKNOWN_STATUSES)
def test_enumerations_a_build_status_this_version_does_not_define_is_refused_on_write(
    storage: Storage, ns: str, status: str
) -> None:
    good = _build(ns)
    bad = dataclasses.replace(good, status=cast(BuildStatus, status))
    with pytest.raises(LimitExceeded, match="status"):
        storage.builds.create(bad)
    with pytest.raises(NotFound):
        storage.builds.get(good.id)
    storage.builds.create(good)
    with pytest.raises(LimitExceeded, match="status"):
        storage.builds.update(bad, old_version=1, new_version=2)
    assert storage.builds.get(good.id) == good


def test_enumerations_every_value_this_version_defines_reads_back_as_its_member(
    storage: Storage, ns: str
) -> None:
    # Written by create and by update, each value must come back as the enumeration's own
    # member, not as a string that merely compares equal.
    request, build = _request(ns), _build(ns)
    storage.requests.create(request)
    storage.builds.create(build)
    version = 1
    for state in RequestState:
        for strategy in BuildStrategy:
            created = dataclasses.replace(
                request, id=f"{request.id}/{state}/{strategy}", state=state, build_strategy=strategy
            )
            storage.requests.create(created)
            stored = storage.requests.get(created.id)
            assert (stored.state, stored.build_strategy) == (state, strategy)
            assert stored.state is state and stored.build_strategy is strategy
            updated = dataclasses.replace(request, state=state, build_strategy=strategy)
            storage.requests.update(updated, old_version=version, new_version=version + 1)
            version += 1
            stored = storage.requests.get(request.id)
            assert stored.state is state and stored.build_strategy is strategy
    for version, status in enumerate(BuildStatus, start=1):
        new_build = dataclasses.replace(build, id=f"{build.id}/{status}", status=status)
        storage.builds.create(new_build)
        assert storage.builds.get(new_build.id).status is status
        changed = dataclasses.replace(build, status=status)
        storage.builds.update(changed, old_version=version, new_version=version + 1)
        assert storage.builds.get(build.id).status is status


@contextlib.contextmanager
def _unchecked_backend(storage: Storage, storage_url: str) -> Iterator[Backend]:
    """The backend itself, without the checks ``open_storage`` adds: it writes what a newer
    version of Stovepipe, sharing the engine, could write."""
    require(storage, Capability.SHARED)  # else no other version can write into it
    scheme = urllib.parse.urlsplit(storage_url).scheme
    opener: BackendOpener = next(
        iter(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP, name=scheme))
    ).load()
    backend = opener(storage_url)
    try:
        yield backend
    finally:
        backend.close()


def _newer(ns: str) -> dict[str, tuple[Callable[[Backend], None], Callable[[Storage], object]]]:
    """For each enumerated field: a write of a value this version does not define, its read."""
    request = dataclasses.replace(_request(ns), state=cast(RequestState, "from-a-newer-version"))
    strategy = dataclasses.replace(_request(ns), build_strategy=cast(BuildStrategy, "sideways"))
    build = dataclasses.replace(_build(ns), status=cast(BuildStatus, "from-a-newer-version"))
    return {
        "state": (
            lambda backend: backend.requests.create(request),
            lambda storage: storage.requests.get(request.id),
        ),
        "build_strategy": (
            lambda backend: backend.requests.create(strategy),
            lambda storage: storage.requests.get(strategy.id),
        ),
        "status": (
            lambda backend: backend.builds.create(build),
            lambda storage: storage.builds.get(build.id),
        ),
    }


@pytest.mark.parametrize("field", ["state", "build_strategy", "status"])
def test_enumerations_a_value_this_version_does_not_define_is_never_read_back(
    storage: Storage, storage_url: str, ns: str, field: str
) -> None:
    write, read = _newer(ns)[field]
    with _unchecked_backend(storage, storage_url) as backend:
        try:
            write(backend)
        except StorageError:
            return  # the engine refuses the value itself, so it can never be read back
    with pytest.raises(StorageError) as raised:
        read(storage)
    assert not isinstance(raised.value, NotFound), "the value was written, then not found"


def test_enumerations_a_value_written_as_a_plain_string_reads_back_as_its_member(
    storage: Storage, ns: str
) -> None:
    request = dataclasses.replace(
        _request(ns),
        state=cast(RequestState, "processing"),
        build_strategy=cast(BuildStrategy, "full"),
    )
    build = dataclasses.replace(_build(ns), status=cast(BuildStatus, "running"))
    storage.requests.create(request)
    storage.builds.create(build)
    stored = storage.requests.get(request.id)
    assert stored.state is RequestState.PROCESSING
    assert stored.build_strategy is BuildStrategy.FULL
    assert storage.builds.get(build.id).status is BuildStatus.RUNNING
    storage.builds.update(
        dataclasses.replace(build, status=cast(BuildStatus, "failed")), old_version=1, new_version=2
    )
    assert storage.builds.get(build.id).status is BuildStatus.FAILED
