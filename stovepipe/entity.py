"""Domain entities shared by every layer of Stovepipe."""

from __future__ import annotations

import dataclasses
import enum


class RequestState(enum.StrEnum):
    """Where a request stands in the pipeline."""

    ACCEPTED = "accepted"


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    """One validation of one queue at one commit URI.

    ``id`` and ``queue`` never change once stored. ``uri`` and ``state`` are the mutable
    fields; ``version`` starts at 1 and backs optimistic locking (the caller does the
    arithmetic, storage only compares).
    """

    id: str
    queue: str
    uri: str
    state: RequestState
    version: int
