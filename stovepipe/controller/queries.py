"""Read-only questions about a queue: its state, and its requests newest first.

Request ids are ``request/<queue>/<n>``, numbered per queue in admission order with gaps (a
number drawn by an ingest that lost its claim is never used). Listing walks ``n`` down from
the queue's newest request, reading each id and skipping the numbers without a request; each
page reads a bounded number of ids, so a long run of gaps costs several short pages rather
than one unbounded call.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Final

from stovepipe.controller.ingest import check_queue
from stovepipe.controller.queues import request_id, request_number
from stovepipe.entity import Queue, Request
from stovepipe.sourcecontrol.contract import SourceControlFactory
from stovepipe.storage import NotFound, Storage

DEFAULT_PAGE_SIZE: Final = 20
MAX_PAGE_SIZE: Final = 100
LOOKUPS_PER_REQUEST: Final = 2
"""A page reads at most this many ids per request it may hold, plus :data:`EXTRA_LOOKUPS`."""
EXTRA_LOOKUPS: Final = 16
MAX_TOKEN_DIGITS: Final = 19
"""Request numbers are below 2^63."""


class InvalidPage(ValueError):
    """A negative page size, or a page token :func:`list_requests` did not issue."""


@dataclasses.dataclass(frozen=True, slots=True)
class RequestPage:
    """One page of a queue's requests, newest first; ``next_page_token`` is empty on the last."""

    requests: tuple[Request, ...]
    next_page_token: str


def get_queue(storage: Storage, sources: SourceControlFactory, name: str) -> Queue:
    """The stored state of queue ``name``; an empty :class:`Queue` for a configured queue
    that nothing was ingested for yet.

    Raises :class:`~stovepipe.controller.ingest.InvalidQueue` for an empty or oversized name,
    SourceControl ``NotFound`` for a queue neither stored nor configured, storage
    ``Unavailable`` on a transient fault.
    """
    check_queue(name)
    try:
        return storage.queues.get(name)
    except NotFound:
        sources.for_queue(name)  # raises NotFound("unknown queue ...") if not configured
        return Queue(name)


def list_requests(
    storage: Storage,
    sources: SourceControlFactory,
    queue: str,
    page_size: int = 0,
    page_token: str = "",
) -> RequestPage:
    """Up to ``page_size`` of ``queue``'s requests, newest first, from ``page_token`` on.

    ``page_size`` 0 means :data:`DEFAULT_PAGE_SIZE`; above :data:`MAX_PAGE_SIZE` it is
    :data:`MAX_PAGE_SIZE`. A page may hold fewer requests than asked, even none, while
    ``next_page_token`` is not empty: it reads at most ``LOOKUPS_PER_REQUEST * page_size +
    EXTRA_LOOKUPS`` ids. The token is the next request number to read, in decimal. Raises
    :class:`InvalidPage` for a negative ``page_size`` or a malformed token, and what
    :func:`get_queue` raises.
    """
    if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 0:
        raise InvalidPage(f"page_size must be a non-negative integer, not {page_size!r}")
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    state = get_queue(storage, sources, queue)
    newest = request_number(state.latest_request_id)
    if page_token:
        if (
            len(page_token) > MAX_TOKEN_DIGITS
            or not page_token.isascii()
            or not page_token.isdigit()
            or page_token.startswith("0")
        ):
            raise InvalidPage(f"page_token {page_token!r} was not issued by ListRequests")
        # A token is never above the newest number it was issued under, which only grows.
        number = min(int(page_token), newest)
    else:
        number = newest
    found: list[Request] = []
    lookups = LOOKUPS_PER_REQUEST * size + EXTRA_LOOKUPS
    while number > 0 and len(found) < size and lookups > 0:
        lookups -= 1
        # A number without a request was drawn by an ingest that lost its claim.
        with contextlib.suppress(NotFound):
            found.append(storage.requests.get(request_id(queue, number)))
        number -= 1
    return RequestPage(tuple(found), str(number) if number > 0 else "")
