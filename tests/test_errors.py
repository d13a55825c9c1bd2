"""The one error tree (:mod:`stovepipe.errors`): one root, one transient marker, one family per
dependency, every class still importable where it was."""

from __future__ import annotations

import pytest

from stovepipe import buildrunner, errors, sourcecontrol, storage
from stovepipe.messaging import MessagingError, MessagingUnavailable, brokered

TRANSIENT = [
    storage.Unavailable,
    MessagingUnavailable,
    sourcecontrol.Unavailable,
    buildrunner.Unavailable,
]
PERMANENT = [
    storage.StorageError,
    storage.NotFound,
    storage.AlreadyExists,
    storage.VersionMismatch,
    storage.LimitExceeded,
    storage.UnknownBackend,
    MessagingError,
    sourcecontrol.SourceControlError,
    sourcecontrol.NotFound,
    sourcecontrol.Refused,
    buildrunner.BuildRunnerError,
    buildrunner.NotFound,
]


@pytest.mark.parametrize("kind", TRANSIENT + PERMANENT, ids=lambda kind: kind.__qualname__)
def test_every_contract_error_is_a_stovepipe_error(kind: type[Exception]) -> None:
    assert issubclass(kind, errors.StovepipeError)


@pytest.mark.parametrize("kind", TRANSIENT, ids=lambda kind: kind.__module__)
def test_every_unavailable_is_transient(kind: type[Exception]) -> None:
    error = kind("down")
    assert errors.is_transient(error)
    assert isinstance(error, errors.Transient)


@pytest.mark.parametrize("kind", PERMANENT, ids=lambda kind: f"{kind.__module__}.{kind.__name__}")
def test_permanent_errors_are_not_transient(kind: type[Exception]) -> None:
    assert not errors.is_transient(kind("refused"))


def test_messaging_errors_are_not_storage_errors() -> None:
    for error in (MessagingError("denied"), MessagingUnavailable("down")):
        assert not isinstance(error, storage.StorageError)
        assert error.dependency == "messaging"


def test_each_family_names_its_dependency() -> None:
    assert storage.Unavailable("x").dependency == "storage"
    assert MessagingUnavailable("x").dependency == "messaging"
    assert sourcecontrol.Unavailable("x").dependency == "source control"
    assert buildrunner.Unavailable("x").dependency == "build runner"


def test_the_families_are_disjoint() -> None:
    families = [
        errors.StorageError,
        errors.MessagingError,
        errors.SourceControlError,
        errors.BuildRunnerError,
    ]
    for kind in TRANSIENT + PERMANENT:
        assert sum(issubclass(kind, family) for family in families) == 1, kind


def test_existing_import_paths_name_the_same_classes() -> None:
    assert storage.StorageError is errors.StorageError
    assert storage.errors.StorageError is errors.StorageError
    assert sourcecontrol.SourceControlError is errors.SourceControlError
    assert buildrunner.BuildRunnerError is errors.BuildRunnerError
    assert brokered.MessagingError is MessagingError is errors.MessagingError
    assert brokered.MessagingUnavailable is MessagingUnavailable


def test_is_transient_is_false_for_foreign_exceptions() -> None:
    assert not errors.is_transient(TimeoutError("a driver's, never mapped"))
