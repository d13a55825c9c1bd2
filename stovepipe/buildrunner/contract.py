"""The BuildRunner contract: starts, watches and stops the builds that decide whether a
commit is green.

A :class:`BuildRunner` is bound to one queue by a :class:`BuildRunnerFactory`, like a
SourceControl, so its methods take no queue. Build ids are minted by the runner and opaque:
nothing outside the runner that minted one parses it.

Errors, all under :class:`BuildRunnerError` (in the tree of :mod:`stovepipe.errors`):

* :class:`NotFound`: a build id this runner never minted, or a queue without a runner.
* :class:`Unavailable`: a transient fault (the runner's state cannot be read or written, the
  source is unreadable); retry later.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from stovepipe.entity import BuildStatus
from stovepipe.errors import BuildRunnerError as BuildRunnerError
from stovepipe.errors import Transient


class NotFound(BuildRunnerError):
    """An unknown build id, or a queue without a runner."""


class Unavailable(Transient, BuildRunnerError):
    """A transient fault; retry later."""


@dataclasses.dataclass(frozen=True, slots=True)
class BuildReport:
    """Where one build stands.

    ``log`` is where the build's output can be read (a file path for the ``command``
    runner), empty if there is none. ``reason`` says why a build ended ``failed`` or
    ``cancelled`` (``"exit status 2"``, ``"timed out after 1800 s"``, ``"lost: ..."``);
    empty otherwise.
    """

    status: BuildStatus
    log: str
    reason: str = ""


class BuildRunner(Protocol):
    """One queue's builds. Implementations are thread-safe."""

    def trigger(self, request_id: str, base_uri: str | None, head_uri: str) -> str:
        """Start building ``head_uri``, incrementally against ``base_uri`` when given.

        Returns the build id: opaque, at most 255 bytes of UTF-8. Idempotent on
        ``request_id``: a second trigger for the same request returns the same build id and
        starts nothing, also from another OS process sharing the runner's state. Returns
        promptly; the build runs on its own. A commit the source does not know does not
        raise: the build ends ``failed`` with the reason. Raises ``Unavailable`` on a
        transient fault (nothing was started).
        """
        ...

    def status(self, build_id: str) -> BuildReport:
        """Return the build's current status.

        Never pending forever: a build whose process is gone without an outcome (e.g. the
        server was killed and restarted) reports ``failed`` with a reason starting
        ``"lost"``; a build past its timeout is ended (its whole process group) and reports
        ``failed`` with ``"timed out after N s"``. A terminal status never changes. Raises
        ``NotFound`` for an id this runner never minted, ``Unavailable`` on a transient
        fault.
        """
        ...

    def cancel(self, build_id: str) -> None:
        """End the build's whole process group; it then reports ``cancelled`` unless it was
        already terminal. Idempotent. Raises ``NotFound`` for an id this runner never
        minted, ``Unavailable`` on a transient fault.
        """
        ...


class BuildRunnerFactory(Protocol):
    """Binds one :class:`BuildRunner` to each queue that builds."""

    def for_queue(self, queue: str) -> BuildRunner:
        """Return the queue's runner, or raise ``NotFound`` for a queue without one."""
        ...
