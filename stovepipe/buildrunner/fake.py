"""An in-memory BuildRunner whose outcomes are configured, for tests and ``type = "fake"``."""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from collections.abc import Mapping

from stovepipe.buildrunner.contract import BuildReport, NotFound
from stovepipe.entity import BuildStatus


@dataclasses.dataclass(frozen=True, slots=True)
class Trigger:
    """One build the runner started: the arguments of :meth:`FakeBuildRunner.trigger` and the
    build id it returned."""

    request_id: str
    base_uri: str | None
    head_uri: str
    build_id: str


@dataclasses.dataclass(slots=True)
class _Build:
    started: float
    outcome: BuildStatus
    cancelled: bool = False


class FakeBuildRunner:
    """Builds that take ``duration`` seconds and end as configured. Thread-safe.

    A build of head URI ``u`` ends ``outcomes[u]`` if given, else ``outcome``; it reports
    ``running`` until ``duration`` seconds (wall clock) have passed since its trigger, then
    that outcome, with ``reason`` for a ``failed`` or ``cancelled`` one (``"fake build
    failed"`` if ``reason`` is empty). A non-terminal outcome (``running``) keeps the build
    running until it is cancelled. Logs are empty. :attr:`triggers` and
    :attr:`cancellations` record what was asked of the runner.

    A build id, ``fake:<outcome>:<trigger time in ms>:<digest of the request id>``, is unique
    across runners (ids share one store whatever runner minted them) and carries everything
    :meth:`status` needs, so any runner with the same configuration, in any process, follows
    the build. A cancel is known only to the runner that was asked.
    """

    def __init__(
        self,
        outcome: BuildStatus = BuildStatus.SUCCEEDED,
        outcomes: Mapping[str, BuildStatus] | None = None,
        duration: float = 0.0,
        reason: str = "",
    ) -> None:
        if duration < 0:
            raise ValueError(f"duration is {duration}; it must be >= 0 seconds")
        self._outcome = BuildStatus(outcome)
        self._outcomes = {uri: BuildStatus(status) for uri, status in (outcomes or {}).items()}
        self._duration = float(duration)
        self._reason = reason
        self._lock = threading.Lock()
        self._by_request: dict[str, str] = {}
        self._builds: dict[str, _Build] = {}
        self._triggers: list[Trigger] = []
        self._cancellations: list[str] = []

    @property
    def triggers(self) -> tuple[Trigger, ...]:
        """Every build started, oldest first (a repeated trigger starts nothing, so is absent)."""
        with self._lock:
            return tuple(self._triggers)

    @property
    def cancellations(self) -> tuple[str, ...]:
        """The build id of every :meth:`cancel` call, repeats included, oldest first."""
        with self._lock:
            return tuple(self._cancellations)

    def trigger(self, request_id: str, base_uri: str | None, head_uri: str) -> str:
        """Start a build of ``head_uri``; the same build id again for a known ``request_id``."""
        with self._lock:
            build_id = self._by_request.get(request_id)
            if build_id is None:
                outcome = self._outcomes.get(head_uri, self._outcome)
                started = time.time()
                digest = hashlib.sha256(request_id.encode("utf-8", "surrogatepass")).hexdigest()
                build_id = f"fake:{outcome}:{int(started * 1000)}:{digest[:16]}"
                self._by_request[request_id] = build_id
                self._builds[build_id] = _Build(started, outcome)
                self._triggers.append(Trigger(request_id, base_uri, head_uri, build_id))
            return build_id

    def status(self, build_id: str) -> BuildReport:
        """The build's status; ``NotFound`` for an id this runner never minted."""
        with self._lock:
            build = self._build(build_id)
            if build.cancelled:
                return BuildReport(BuildStatus.CANCELLED, "", "cancelled")
            return self._report(build)

    def cancel(self, build_id: str) -> None:
        """Cancel the build unless it already ended; ``NotFound`` for an unknown id."""
        with self._lock:
            build = self._build(build_id)
            self._cancellations.append(build_id)
            if not self._report(build).status.terminal:
                build.cancelled = True

    def _build(self, build_id: str) -> _Build:
        build = self._builds.get(build_id)
        if build is None:
            # Minted by a runner in another process: its id says all there is to know.
            kind, outcome, started, digest = [*build_id.split(":"), "", "", ""][:4]
            if kind != "fake" or not started.isdigit() or len(digest) != 16:
                raise NotFound(f"unknown build id {build_id!r}")
            try:
                build = _Build(int(started) / 1000, BuildStatus(outcome))
            except ValueError:
                raise NotFound(f"unknown build id {build_id!r}") from None
            self._builds[build_id] = build
        return build

    def _report(self, build: _Build) -> BuildReport:
        if time.time() - build.started < self._duration or not build.outcome.terminal:
            return BuildReport(BuildStatus.RUNNING, "")
        if build.outcome is BuildStatus.SUCCEEDED:
            return BuildReport(BuildStatus.SUCCEEDED, "")
        return BuildReport(build.outcome, "", self._reason or f"fake build {build.outcome}")
