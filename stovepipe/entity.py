"""Domain entities shared by every layer of Stovepipe.

The pipeline's state (DESIGN section 6): a :class:`Request` is one validation of one queue at
one commit; a :class:`Queue` keeps the queue's newest request, its in-flight count and the
bookmark of its last green commit; a :class:`Build` is one run of the queue's build runner for
a request; a :class:`Fact` is the verdict on one commit. Every entity with a ``version`` is
updated under optimistic locking: storage compares versions, the caller does the arithmetic.
"""

from __future__ import annotations

import dataclasses
import enum


class RequestState(enum.StrEnum):
    """Where a request stands in the pipeline.

    ``accepted`` (admitted by ingest) and ``processing`` (holding a slot of its queue) are
    live; the other four are terminal: once there, a request never moves again.
    """

    ACCEPTED = "accepted"
    PROCESSING = "processing"
    SUPERSEDED = "superseded"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """True for ``superseded``, ``succeeded``, ``failed`` and ``cancelled``."""
        return self not in (RequestState.ACCEPTED, RequestState.PROCESSING)


class BuildStrategy(enum.StrEnum):
    """How a request is built: from scratch, or relative to the queue's last green commit.

    ``UNSET`` (the empty string) until the process stage chooses, once, at admission.
    """

    UNSET = ""
    FULL = "full"
    INCREMENTAL = "incremental"


class BuildStatus(enum.StrEnum):
    """Where a build stands; the last three are terminal and written once."""

    ACCEPTED = "accepted"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """True for ``succeeded``, ``failed`` and ``cancelled``."""
        return self not in (BuildStatus.ACCEPTED, BuildStatus.RUNNING)


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    """One validation of one queue at one commit URI.

    ``id`` and ``queue`` never change once stored. ``uri``, ``state``, ``build_strategy`` and
    ``base_uri`` (the commit an incremental build starts from; empty otherwise) are the
    mutable fields; ``version`` starts at 1 and backs optimistic locking (the caller does the
    arithmetic, storage only compares).
    """

    id: str
    queue: str
    uri: str
    state: RequestState
    version: int
    build_strategy: BuildStrategy = BuildStrategy.UNSET
    base_uri: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Queue:
    """A repository and ref (``monorepo/main``) as the pipeline sees it.

    ``name`` never changes once stored. ``latest_request_id`` is the newest admitted head;
    ``last_green_uri`` and ``last_green_request_id`` are the bookmark of the last green commit;
    strings are empty while unset. ``in_flight`` counts requests holding one of the queue's
    build slots (an int >= 0). ``version`` backs optimistic locking, as for :class:`Request`.
    """

    name: str
    latest_request_id: str = ""
    last_green_uri: str = ""
    last_green_request_id: str = ""
    in_flight: int = 0
    version: int = 1


@dataclasses.dataclass(frozen=True, slots=True)
class Build:
    """One run of a queue's build runner for one request.

    ``id`` is minted by the runner and opaque; ``id`` and ``request_id`` never change once
    stored. ``status`` and ``log`` (where the build's output can be read: a path or URL,
    empty if none) are mutable; ``version`` backs optimistic locking.
    """

    id: str
    request_id: str
    status: BuildStatus
    log: str
    version: int


@dataclasses.dataclass(frozen=True, slots=True)
class Fact:
    """A validation fact: the verdict on one commit of one queue, for one project.

    Keyed by ``(queue, uri, project)``; ``project`` is empty for the whole repository.
    ``degree`` lies in [0, 1]: 0 is green, 1 fully broken. ``request_id`` is the request whose
    build decided it; ``created_at`` is seconds since the epoch (UTC). Written once.
    """

    queue: str
    uri: str
    project: str
    degree: float
    request_id: str
    created_at: float
