"""The one error tree of every contract: storage, messaging, source control, build runner.

::

    StovepipeError                      root; ``transient`` False, ``dependency`` "stovepipe"
    ├── StorageError                    stovepipe.storage.errors       dependency "storage"
    │   ├── NotFound, AlreadyExists, VersionMismatch, LimitExceeded, UnknownBackend
    │   └── Unavailable (Transient)
    ├── MessagingError                  stovepipe.messaging.brokered   dependency "messaging"
    │   └── MessagingUnavailable (Transient)
    ├── SourceControlError              stovepipe.sourcecontrol        dependency "source control"
    │   ├── NotFound, Refused
    │   └── Unavailable (Transient)
    └── BuildRunnerError                stovepipe.buildrunner          dependency "build runner"
        ├── NotFound
        └── Unavailable (Transient)

Rules (from the contracts' docstrings, gathered here):

* **Transient** is a class attribute, set by the :class:`Transient` mixin: the fault passes on
  its own (refused, reset, timed out, a lock held too long), so retrying later is right and the
  servicer answers ``UNAVAILABLE``. Every other error needs an operator or a different request.
* **One family per dependency**, named by ``dependency``: a messaging error is not a storage
  error, so a caller (and a client reading the status detail) learns which dependency failed.
* **Driver exceptions never leak**: each implementation maps its driver's exceptions onto
  these in one place, chained with ``raise ... from error`` so logs keep the cause.
"""

from __future__ import annotations

from typing import ClassVar


class StovepipeError(Exception):
    """Root of every error a contract defines. Not transient unless marked :class:`Transient`."""

    transient: ClassVar[bool] = False
    """Whether the fault passes on its own, so that retrying later is right."""

    dependency: ClassVar[str] = "stovepipe"
    """The dependency that failed, as the servicer names it to clients."""


class Transient:
    """Marks an error class as transient: mix it in before the family's base class."""

    transient: ClassVar[bool] = True


class StorageError(StovepipeError):
    """Base of every error the storage contract defines."""

    dependency: ClassVar[str] = "storage"


class MessagingError(StovepipeError):
    """Base of every error the messaging contract defines. Not transient itself: the
    messaging engine refused an operation for a reason retrying will not fix (access denied, a
    missing table, a file that is not a database, data it does not accept); an operator has
    to act."""

    dependency: ClassVar[str] = "messaging"


class SourceControlError(StovepipeError):
    """Base of every error the SourceControl contract defines."""

    dependency: ClassVar[str] = "source control"


class BuildRunnerError(StovepipeError):
    """Base of every error the BuildRunner contract defines."""

    dependency: ClassVar[str] = "build runner"


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` is a contract's error marked transient (retry it later)."""
    return isinstance(error, StovepipeError) and error.transient
