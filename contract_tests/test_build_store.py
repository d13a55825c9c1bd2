"""BuildStore: create, get, and the conditional update."""

from __future__ import annotations

import dataclasses

import pytest

from stovepipe.entity import Build, BuildStatus
from stovepipe.storage import AlreadyExists, NotFound, Storage, VersionMismatch
from stovepipe.storage.limits import MAX_VERSION


def make_build(ns: str, name: str = "b", version: int = 1) -> Build:
    """A build with every field set to a value of its own."""
    return Build(
        id=f"build/{ns}/{name}",
        request_id=f"request/{ns}/main/1",
        status=BuildStatus.ACCEPTED,
        log=f"file:///var/log/{ns}/{name}.log",
        version=version,
    )


def test_build_create_then_get_returns_the_build_with_every_field(
    storage: Storage, ns: str
) -> None:
    build = make_build(ns)
    storage.builds.create(build)
    assert storage.builds.get(build.id) == build


def test_build_create_keeps_an_empty_log(storage: Storage, ns: str) -> None:
    build = dataclasses.replace(make_build(ns), log="")
    storage.builds.create(build)
    assert storage.builds.get(build.id) == build


def test_get_of_a_missing_build_raises_not_found(storage: Storage, ns: str) -> None:
    with pytest.raises(NotFound):
        storage.builds.get(f"build/{ns}/missing")


def test_build_create_of_an_existing_id_raises_already_exists_and_first_writer_wins(
    storage: Storage, ns: str
) -> None:
    first = make_build(ns)
    second = Build(first.id, f"request/{ns}/other/1", BuildStatus.FAILED, "other.log", 5)
    storage.builds.create(first)
    with pytest.raises(AlreadyExists):
        storage.builds.create(second)
    assert storage.builds.get(first.id) == first


def test_build_create_persists_the_given_version(storage: Storage, ns: str) -> None:
    build = make_build(ns, version=42)
    storage.builds.create(build)
    assert storage.builds.get(build.id).version == 42


def test_build_update_persists_status_and_log_and_sets_new_version(
    storage: Storage, ns: str
) -> None:
    build = make_build(ns)
    storage.builds.create(build)
    changed = dataclasses.replace(build, status=BuildStatus.RUNNING, log=f"{build.log}.1")
    storage.builds.update(changed, old_version=1, new_version=2)
    assert storage.builds.get(build.id) == dataclasses.replace(changed, version=2)
    storage.builds.update(dataclasses.replace(changed, log=""), old_version=2, new_version=3)
    assert storage.builds.get(build.id) == dataclasses.replace(changed, log="", version=3)


def test_build_update_with_a_stale_version_raises_version_mismatch_and_changes_nothing(
    storage: Storage, ns: str
) -> None:
    build = make_build(ns, version=3)
    storage.builds.create(build)
    stale = dataclasses.replace(build, status=BuildStatus.FAILED, log="stale.log", version=2)
    with pytest.raises(VersionMismatch):
        storage.builds.update(stale, old_version=2, new_version=3)
    assert storage.builds.get(build.id) == build


def test_build_update_of_a_missing_build_is_a_version_mismatch(storage: Storage, ns: str) -> None:
    missing = make_build(ns, "missing")
    with pytest.raises(VersionMismatch):
        storage.builds.update(missing, old_version=1, new_version=2)
    with pytest.raises(NotFound):
        storage.builds.get(missing.id)


def test_build_update_never_changes_id_or_request_id(storage: Storage, ns: str) -> None:
    build = make_build(ns)
    storage.builds.create(build)
    moved = dataclasses.replace(
        build, request_id=f"request/{ns}/elsewhere/9", status=BuildStatus.SUCCEEDED
    )
    storage.builds.update(moved, old_version=1, new_version=2)
    assert storage.builds.get(build.id) == dataclasses.replace(
        build, status=BuildStatus.SUCCEEDED, version=2
    )


def test_build_update_never_reads_build_version(storage: Storage, ns: str) -> None:
    build = make_build(ns)
    storage.builds.create(build)
    misleading = dataclasses.replace(build, status=BuildStatus.RUNNING, version=999)
    storage.builds.update(misleading, old_version=1, new_version=2)
    assert storage.builds.get(build.id) == dataclasses.replace(misleading, version=2)
    with pytest.raises(VersionMismatch):
        storage.builds.update(misleading, old_version=999, new_version=1000)


def test_build_update_that_changes_no_value_still_succeeds_when_the_version_matches(
    storage: Storage, ns: str
) -> None:
    # Engines that count only changed rows would report this matching update as a miss.
    build = make_build(ns)
    storage.builds.create(build)
    storage.builds.update(build, old_version=1, new_version=1)
    assert storage.builds.get(build.id) == build


def test_build_version_arithmetic_belongs_to_the_caller(storage: Storage, ns: str) -> None:
    build = make_build(ns)
    storage.builds.create(build)
    storage.builds.update(build, old_version=1, new_version=7)
    storage.builds.update(build, old_version=7, new_version=3)
    storage.builds.update(build, old_version=3, new_version=MAX_VERSION)
    assert storage.builds.get(build.id) == dataclasses.replace(build, version=MAX_VERSION)
