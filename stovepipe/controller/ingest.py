"""Ingest: admit a queue's head commit exactly once (DESIGN section 3).

The storage contract has no cross-store transactions, so the order of the steps is what
makes ingest safe under races and crashes:

1. the ``(queue, uri)`` mapping is claimed *before* the request row is written, so a caller
   that loses the claim has written nothing and adopts the winner's id;
2. the row is then ensured (read, else create), which also heals a mapping whose row a
   crashed caller never wrote;
3. a new request is stamped as its queue's ``latest_request_id`` (the queue is created if
   absent), which moves forward only, by request number;
4. the call that wrote the row publishes it to the process stage. A queue without a build
   runner is ingest-only: nothing is published for it.

A poller asks for the same head again and again, so an unchanged head is answered from the
mapping and its row: two storage reads, none once this process has seen the head (the mapping
never changes once written, so it is kept in a bounded in-process cache), no write and no
publish. The row is read before the id is first answered because the mapping may be a
racer's that has not written its row yet, or a crashed caller's: a caller given an id must
find its request (the row is healed, and published, if missing).
Recovery of a publish lost to a crash is then the job of a periodic check: at most once per
``republish_interval`` per request, an unchanged head's row is read again (healed if
missing) and, while the request is still ``accepted``, published again; the process stage's
consumer is idempotent. A check that finds the request past ``accepted`` ends the checks for
it, since no request goes back. A call of this process that failed part-way has the next
call for the same head check at once; if it failed before the row was known to exist, every
call checks until one finds or writes it, so no caller is answered from the cache meanwhile.
With a ``republish_interval`` of 0 every Ingest checks, cached or not. The schedule lives in
the cache: a head evicted from it (more heads polled than ``cache_size``) is read from
storage again at its next Ingest and its check starts over, so a server whose polled heads
outnumber the cache checks none of them; it warns once when that happens.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Final

from stovepipe.controller.queues import stamp_latest
from stovepipe.entity import Request, RequestState
from stovepipe.messaging.codec import encode_process_request
from stovepipe.messaging.contract import TOPIC_PROCESS, Publisher
from stovepipe.messaging.v1.messaging_pb2 import ProcessRequest
from stovepipe.sourcecontrol.contract import SourceControlFactory
from stovepipe.storage import AlreadyExists, NotFound, Storage, limits

logger = logging.getLogger(__name__)

DEFAULT_CACHE_SIZE: Final = 4096
"""Heads whose mapping one controller remembers (least recently asked for goes first): a few
hundred bytes each, so about a megabyte at most."""

DEFAULT_REPUBLISH_INTERVAL: Final = 30.0
"""Seconds between two checks of one unchanged head whose request may still need publishing."""

_NOW: Final = -math.inf
"""A check due at once."""
_NEVER: Final = math.inf
"""No check due ever again: the request is past ``accepted``."""


class InvalidQueue(ValueError):
    """The queue name is empty, longer than the storage limit, or not valid Unicode text."""


class InconsistentState(RuntimeError):
    """Stored state contradicts itself, e.g. a request whose uri differs from its mapping."""


@dataclasses.dataclass(frozen=True)
class Admission:
    """The request a queue's head maps to: its ``id``, ``queue`` and ``uri``, and whether this
    call ``created`` its row (admitted it)."""

    id: str
    queue: str
    uri: str
    created: bool


def check_queue(queue: object) -> str:
    """Return ``queue`` if it is a valid queue name, else raise :class:`InvalidQueue`."""
    if not isinstance(queue, str):
        raise InvalidQueue(f"queue must be a str, not {type(queue).__name__}")
    if not queue:
        raise InvalidQueue("queue is empty")
    try:
        size = len(queue.encode("utf-8"))
    except UnicodeEncodeError as error:
        raise InvalidQueue(f"queue is not valid Unicode text: {error.reason}") from None
    if size > limits.MAX_QUEUE_BYTES:
        raise InvalidQueue(
            f"queue is {size} bytes in UTF-8; the limit is {limits.MAX_QUEUE_BYTES} bytes"
        )
    return queue


class _Heads:
    """A bounded, thread-safe map from ``(queue, uri)`` to the request id, the time (on the
    controller's clock) its next check is due, and whether its row is known to exist; least
    recently used entries go first."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: collections.OrderedDict[tuple[str, str], tuple[str, float, bool]] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()
        self.evicted_due: float | None = None
        """The due time of the last entry evicted, if any: an entry evicted before its check
        was due was polled again within one interval, so the cache is too small."""

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def take(self, key: tuple[str, str], now: float, interval: float) -> tuple[str, bool] | None:
        """The id mapped to ``key`` and whether its check is due now, or ``None`` if unknown.
        A due check is taken: it is not due again for ``interval`` seconds, so racing callers
        do not all check; but while the row is not known to exist, every caller checks, for
        none may be given an id before its row exists."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            request_id, due, has_row = entry
            if not has_row:
                return request_id, True
            if due > now:
                return request_id, False
            self._entries[key] = (request_id, now + interval, True)
            return request_id, True

    def put(self, key: tuple[str, str], request_id: str, due: float, *, has_row: bool) -> None:
        """Remember ``key``'s id, when its check is due and whether its row is known to exist
        (once known, it stays known: rows are never deleted)."""
        with self._lock:
            known = self._entries.get(key)
            has_row = has_row or (known is not None and known[0] == request_id and known[2])
            self._entries[key] = (request_id, due, has_row)
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                _, (_, evicted_due, _) = self._entries.popitem(last=False)
                self.evicted_due = evicted_due


class IngestController:
    """Admits a queue's head commit as one request, idempotently on ``(queue, uri)``.

    Thread-safe, and safe across processes sharing one storage backend. ``cache_size``
    (at least 1) bounds the heads remembered; ``republish_interval`` is the seconds between
    two checks of an unchanged head (see the module's notes), on ``clock`` (seconds).
    """

    def __init__(
        self,
        storage: Storage,
        sourcecontrol: SourceControlFactory,
        publisher: Publisher,
        builds: Callable[[str], bool] = lambda queue: True,
        *,
        cache_size: int = DEFAULT_CACHE_SIZE,
        republish_interval: float = DEFAULT_REPUBLISH_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``builds(queue)`` says whether the queue has a build runner (else: ingest-only).
        Raises ``ValueError`` if ``cache_size`` is below 1 or ``republish_interval`` is
        negative."""
        if cache_size < 1:
            raise ValueError(f"cache_size must be at least 1, not {cache_size}")
        if not republish_interval >= 0:
            raise ValueError(f"republish_interval must be >= 0 seconds, not {republish_interval}")
        self._storage = storage
        self._sourcecontrol = sourcecontrol
        self._publisher = publisher
        self._builds = builds
        self._heads = _Heads(cache_size)
        self._clock = clock
        self.cache_size = cache_size
        """Heads whose mapping is remembered, at most."""
        self.republish_interval = republish_interval
        """Seconds between two checks of one unchanged head."""
        self._warned_small = False

    def ingest(self, queue: str) -> Admission:
        """Admit ``queue``'s current head and return the request it maps to.

        The same head always yields the same request id, whoever asks and however often.
        Raises :class:`InvalidQueue`, SourceControl's ``NotFound`` for an unknown queue or
        ref, ``Unavailable`` (storage or SourceControl) for transient faults, and
        :class:`InconsistentState` if the stored request contradicts its mapping (found when
        the head is admitted or checked).
        """
        check_queue(queue)
        uri = self._sourcecontrol.for_queue(queue).latest()
        key = (queue, uri)
        known = self._heads.take(key, self._clock(), self.republish_interval)
        if known is None:
            try:
                request_id = self._storage.request_uris.get_id_by_uri(queue, uri)
            except NotFound:
                return self._admit(queue, uri)
            # The row is read before the id is answered: the mapping may be a racer's whose
            # row is not written yet, or one whose writer crashed, and a caller given an id
            # must find its request. A missing row is healed (and published) here.
            admission = self._settle(queue, uri, request_id, checking=self.republish_interval == 0)
            self._warn_if_too_small(self._clock())
            return admission
        request_id, due = known
        if not due:
            return Admission(request_id, queue, uri, created=False)
        return self._settle(queue, uri, request_id, checking=True)

    def _warn_if_too_small(self, now: float) -> None:
        """Warn, once, when a head was evicted from the cache before its check was due: the
        heads polled outnumber ``cache_size``, so unchanged heads are read from storage and an
        evicted head's periodic check never comes."""
        evicted_due = self._heads.evicted_due
        if self._warned_small or evicted_due is None or evicted_due == _NEVER:
            return
        if evicted_due > now:
            self._warned_small = True
            logger.warning(
                "ingest_cache_size %d is smaller than the heads being polled: unchanged heads "
                "are read from storage, and the check that republishes a request lost to a "
                "crash runs only for heads still in the cache; raise ingest_cache_size",
                self.cache_size,
            )

    def cached_heads(self) -> int:
        """How many heads this controller remembers now (at most ``cache_size``)."""
        return len(self._heads)

    def _admit(self, queue: str, uri: str) -> Admission:
        """Claim a new head and write its request (or adopt a racer's)."""
        request_id, minted = self._claim_id(queue, uri)
        return self._settle(queue, uri, request_id, checking=False, minted=minted)

    def _settle(
        self, queue: str, uri: str, request_id: str, *, checking: bool, minted: bool = False
    ) -> Admission:
        """Ensure the row of ``request_id`` (``minted``: by this call, so no row is expected);
        stamp and publish it if this call wrote it, or (``checking``) republish it while it is
        still accepted. Remember when to check next; on failure, check at the next call."""
        key = (queue, uri)
        has_row = False
        try:
            request, created = self._ensure_request(request_id, queue, uri, minted)
            has_row = True
            if created:
                stamp_latest(self._storage, queue, request.id)
            accepted = request.state == RequestState.ACCEPTED
            if accepted and (created or checking) and self._builds(queue):
                if not created:
                    logger.debug("republishing %r: still accepted at a check", request.id)
                payload = encode_process_request(ProcessRequest(id=request.id, queue=queue))
                # The request id names the message: while one is pending, a republish (a
                # periodic check, or a retry after a crash) adds nothing to the topic.
                self._publisher.publish(TOPIC_PROCESS, queue, payload, message_id=request.id)
        except BaseException:
            self._heads.put(key, request_id, _NOW, has_row=has_row)
            raise
        due = self._clock() + self.republish_interval if accepted else _NEVER
        self._heads.put(key, request_id, due, has_row=True)
        return Admission(request.id, queue, uri, created)

    def _claim_id(self, queue: str, uri: str) -> tuple[str, bool]:
        """Mint an id and claim ``(queue, uri)`` with it, after a lookup found no mapping;
        return it and ``True``, or the winner's id and ``False`` if a racer claimed first."""
        uris = self._storage.request_uris
        n = self._storage.counter.next(f"request/{queue}")
        candidate = f"request/{queue}/{n}"
        try:
            uris.create(queue, uri, candidate)
        except AlreadyExists:
            # Another caller claimed this head first: adopt its id. Our number stays unused.
            try:
                winner = uris.get_id_by_uri(queue, uri)
            except NotFound as error:
                raise InconsistentState(
                    f"mapping ({queue!r}, {uri!r}) exists by create but not by read"
                ) from error
            logger.debug("lost the claim on %r %r to %r", queue, uri, winner)
            return winner, False
        logger.info("claimed %r for queue %r at %r", candidate, queue, uri)
        return candidate, True

    def _ensure_request(
        self, request_id: str, queue: str, uri: str, minted: bool
    ) -> tuple[Request, bool]:
        """Return the stored request ``request_id``, creating it if the row is missing, and
        whether this call created it. A ``minted`` id (numbers are never drawn twice) has no
        row yet, so the create is tried first: one round trip fewer for a new head."""
        requests = self._storage.requests
        fresh = Request(request_id, queue, uri, RequestState.ACCEPTED, 1)
        if minted:
            try:
                requests.create(fresh)
                return fresh, True
            except AlreadyExists:
                pass  # only stored state that contradicts itself: the check below says so
        created = False
        try:
            request = requests.get(request_id)
        except NotFound:
            try:
                requests.create(fresh)
                request, created = fresh, True
            except AlreadyExists:
                # A racer wrote the row between our get and create: theirs is the row.
                try:
                    request = requests.get(request_id)
                except NotFound as error:
                    raise InconsistentState(
                        f"request {request_id!r} exists by create but not by read"
                    ) from error
        if request.queue != queue or request.uri != uri:
            logger.error(
                "request %r is stored with queue %r and uri %r, but the mapping of queue %r "
                "and uri %r points to it",
                request_id,
                request.queue,
                request.uri,
                queue,
                uri,
            )
            raise InconsistentState(
                f"request {request_id!r} does not match the mapping that points to it"
            )
        return request, created
