"""Keeping a server answering while a backend is slow or down; nothing here knows gRPC.

* :class:`Bulkhead`: at most ``limit`` calls at once into one dependency. One more queues for
  a slot while the dependency keeps finishing calls, and fails with :class:`Overloaded` once
  none has finished for ``progress_window`` seconds, so a frozen backend holds no more than
  ``limit`` of the server's threads for long, and the rest stay free for calls that need no
  backend (Ping, health, reflection), while a busy but healthy one serves every caller.
* :class:`CircuitBreaker`: after ``failure_threshold`` transient failures in a row the
  dependency counts as down (*open*): calls fail at once with :class:`CircuitOpen` for
  ``reset_timeout`` seconds instead of each waiting out a full timeout. Then one probe call
  goes through (*half-open*): success closes the breaker, failure opens it for another while.
* Deadlines: :func:`deadline` sets the caller's deadline for what runs inside it (a context
  variable, so it follows the thread serving the call); :func:`remaining` and :func:`bounded`
  read it where a backend call is bounded; a :class:`Guard` refuses to start a call whose
  deadline has passed (:class:`DeadlineExceeded`).
* :class:`Guard` puts the three around one dependency; :func:`guard_storage` and
  :class:`GuardedPublisher` put a guard around every store method and around publishing.

The errors are storage ``Unavailable`` (the transient marker): callers that already retry an
unreachable backend treat a rejected call alike. :class:`Rejected` carries ``retry_after``, the
seconds after which a retry may succeed.

Why not a library breaker: ``pybreaker`` holds one lock across the protected call, so a call
stuck in a frozen backend would block every other thread behind it; ``circuitbreaker`` lets
every call through while half-open (not one probe) and rounds its timeout to whole seconds.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import copy
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

from stovepipe.errors import is_transient
from stovepipe.messaging.brokered import Broker, BrokeredMessaging
from stovepipe.messaging.contract import Publisher
from stovepipe.storage.errors import LimitExceeded, Unavailable
from stovepipe.storage.storage import Storage

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_FAILURE_THRESHOLD = 5
"""Transient failures in a row that open a circuit breaker."""
DEFAULT_RESET_TIMEOUT = 5.0
"""Seconds an open circuit breaker fails calls at once before it lets a probe through."""
DEFAULT_OVERLOAD_RETRY_AFTER = 1.0
"""Seconds a call refused by a full bulkhead is told to wait before a retry."""
DEFAULT_PROGRESS_WINDOW = 0.25
"""Seconds a full bulkhead's callers queue without any call finishing (or starting) before
they are refused. A healthy backend's longest pause is shorter: one SQLite commit waiting for
its fsync while the pipeline's consumers share the file's writer lock (50 ms was exceeded in
a 60 s run of 32 clients writing new heads; 250 ms never was). A backend that freezes holds
the callers queued behind it for about this long, once; Ping and health wait as long at
most, then every later caller is refused at once."""

STORES = ("requests", "request_uris", "counter", "queues", "builds", "facts")
"""The stores of a :class:`~stovepipe.storage.Storage`, each guarded by :func:`guard_storage`."""


class Rejected(Unavailable):
    """A call refused before it reached ``dependency``; retry after ``retry_after`` seconds."""

    def __init__(self, message: str, *, dependency: str, retry_after: float) -> None:
        super().__init__(message)
        self.dependency_name = dependency
        """The dependency the call was refused for (``"storage"``, ``"messaging"``)."""
        self.retry_after = retry_after


class Overloaded(Rejected):
    """The dependency's bulkhead is full: as many calls as allowed are waiting on it."""


class CircuitOpen(Rejected):
    """The dependency's circuit breaker is open: it failed repeatedly a moment ago."""


class DeadlineExceeded(Unavailable):
    """The caller's deadline passed: before the call could start (nothing was done), or
    during a backend call it bounded (the outcome is unknown). Either way the caller ran out
    of time, which says nothing of the backend's health: circuit breakers do not count it."""


# --- deadlines ----------------------------------------------------------------------------

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "stovepipe_deadline", default=None
)


@contextlib.contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Inside, :func:`remaining` counts down from ``seconds`` (``None``: no deadline). An
    enclosing, earlier deadline still holds."""
    mine = None if seconds is None else time.monotonic() + seconds
    outer = _deadline.get()
    if mine is None or (outer is not None and outer < mine):
        mine = outer
    token = _deadline.set(mine)
    try:
        yield
    finally:
        _deadline.reset(token)


def remaining() -> float | None:
    """Seconds left before the current caller's deadline (negative once it passed); ``None``
    without a deadline."""
    at = _deadline.get()
    return None if at is None else at - time.monotonic()


def bounded(timeout: float) -> float:
    """The smaller of ``timeout`` and the caller's remaining deadline, in seconds: what a
    backend call started now may wait. Raises :class:`DeadlineExceeded` if the deadline has
    passed."""
    left = remaining()
    if left is None:
        return timeout
    if left <= 0:
        raise DeadlineExceeded("the caller's deadline passed before the call started")
    return min(timeout, left)


# --- bulkhead -----------------------------------------------------------------------------


class Bulkhead:
    """At most ``limit`` calls at once into the dependency ``name``; thread-safe.

    A caller that finds every slot taken queues for one, first come first served, for as
    long as the dependency keeps making progress: it is refused with :class:`Overloaded`
    (``retry_after`` seconds as the hint) once no slot has been taken or given back for
    ``progress_window`` seconds, and at once if none has when it arrives. A healthy dependency
    that is merely busy (32 callers on 10 slots) therefore serves them all, in turn, while one
    that hangs holds at most ``limit`` threads for long: the callers behind it are turned away
    within ``progress_window``. A queued caller whose deadline (:func:`deadline`) passes fails
    with :class:`DeadlineExceeded`.
    """

    def __init__(
        self,
        name: str,
        limit: int,
        *,
        retry_after: float = DEFAULT_OVERLOAD_RETRY_AFTER,
        progress_window: float = DEFAULT_PROGRESS_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1:
            raise ValueError(f"a bulkhead needs a limit of at least 1, not {limit}")
        if not progress_window >= 0:
            raise ValueError(f"progress_window must be seconds, at least 0, not {progress_window}")
        self.name = name
        self.limit = limit
        self.retry_after = retry_after
        self.progress_window = progress_window
        self._clock = clock
        self._lock = threading.Lock()
        self._in_use = 0
        # Callers queued for a slot, oldest first; a freed slot is handed to the oldest.
        self._queue: collections.deque[_Queued] = collections.deque()
        self._progress_at = -math.inf  # when a slot was last taken or given back

    @property
    def in_use(self) -> int:
        """Calls holding a slot now."""
        return self._in_use

    @property
    def queued(self) -> int:
        """Callers waiting for a slot now."""
        return len(self._queue)

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the ``limit`` slots inside, queueing for one while the dependency makes
        progress; :class:`Overloaded` once it stops, :class:`DeadlineExceeded` once the
        caller's deadline passes."""
        with self._lock:
            if self._in_use < self.limit and not self._queue:
                self._in_use += 1
                self._progress_at = self._clock()
            else:
                self._wait_for_slot()
        try:
            yield
        finally:
            with self._lock:
                self._progress_at = self._clock()
                if self._queue:  # hand the slot on: in_use stays as it is
                    queued = self._queue.popleft()
                    queued.granted = True
                    queued.wakeup.notify()
                else:
                    self._in_use -= 1

    def _wait_for_slot(self) -> None:
        """Queue until a slot is handed over; called, and returns, holding ``_lock``."""
        left = remaining()
        until = math.inf if left is None else self._clock() + left
        queued = _Queued(threading.Condition(self._lock))
        self._queue.append(queued)
        try:
            while not queued.granted:
                now = self._clock()
                stalled_at = self._progress_at + self.progress_window
                if now >= until:
                    raise DeadlineExceeded(
                        f"the caller's deadline passed while it waited for a slot on {self.name}"
                    )
                if now >= stalled_at:
                    raise Overloaded(
                        f"{self.name} is busy: {self.limit} calls are already waiting on it "
                        f"and none has finished for {self.progress_window:g} s",
                        dependency=self.name,
                        retry_after=self.retry_after,
                    )
                queued.wakeup.wait(min(stalled_at, until) - now)
        finally:
            if not queued.granted:
                self._queue.remove(queued)


class _Queued:
    """One caller queued for a slot of a :class:`Bulkhead`."""

    __slots__ = ("granted", "wakeup")

    def __init__(self, wakeup: threading.Condition) -> None:
        self.wakeup = wakeup
        self.granted = False


# --- circuit breaker ----------------------------------------------------------------------


class CircuitBreaker:
    """Fails calls to ``name`` at once while it is known to be down; thread-safe.

    Call :meth:`admit` before a call (it raises :class:`CircuitOpen`, or returns whether this
    call is the half-open probe), then exactly one of :meth:`succeeded` (the dependency
    answered, even with an error of its own such as ``NotFound``), :meth:`failed` (a transient
    failure) or :meth:`abandoned` (the call never reached the dependency). ``on_change(open)``
    is called, outside the lock, whenever the breaker opens or closes.
    """

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
        reset_timeout: float = DEFAULT_RESET_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, not {failure_threshold}")
        if not reset_timeout > 0:
            raise ValueError(f"reset_timeout must be positive seconds, not {reset_timeout}")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False
        # Set by a failure observed while open (see observed), cleared by any answer.
        self._failing_unadmitted = False
        self._listeners: list[Callable[[bool], None]] = []

    def on_change(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(open)`` each time the breaker opens (True) or closes (False)."""
        self._listeners.append(listener)

    @property
    def is_open(self) -> bool:
        """Whether the dependency counts as down (open or half-open)."""
        return self._opened_at is not None

    def refusing(self) -> bool:
        """Whether a call made now would be refused: open and either inside its
        ``reset_timeout`` or with its probe under way."""
        with self._lock:
            if self._opened_at is None:
                return False
            return self._probing or self._clock() < self._opened_at + self.reset_timeout

    def down(self) -> bool:
        """Whether readiness should count the dependency down: :meth:`refusing`, or open
        with calls it did not admit failing since it opened, and no answer seen since
        (:meth:`observed`)."""
        with self._lock:
            return self._opened_at is not None and (
                self._failing_unadmitted
                or self._probing
                or self._clock() < self._opened_at + self.reset_timeout
            )

    def admit(self) -> bool:
        """Let a call through, or raise :class:`CircuitOpen`. True if the call is the probe
        of a half-open breaker."""
        with self._lock:
            if self._opened_at is None:
                return False
            wait = self._opened_at + self.reset_timeout - self._clock()
            if wait > 0 or self._probing:
                raise CircuitOpen(
                    f"{self.name} failed {self.failure_threshold} times in a row; "
                    "not calling it for a moment",
                    dependency=self.name,
                    retry_after=max(wait, 0.0) if not self._probing else self.reset_timeout,
                )
            self._probing = True
            return True

    def succeeded(self, probe: bool) -> None:
        """The dependency answered: it is up."""
        with self._lock:
            self._failures = 0
            self._failing_unadmitted = False
            if probe:
                self._probing = False
            closing = self._opened_at is not None
            self._opened_at = None
        if closing:
            logger.warning("%s answers again: calling it again", self.name)
            self._notify(False)

    def failed(self, probe: bool) -> None:
        """A transient failure (unreachable, timed out)."""
        with self._lock:
            if probe:  # the probe failed: open for another while
                self._probing = False
                self._opened_at = self._clock()
                return
            if self._opened_at is not None:
                return  # a call that started before the breaker opened: already counted
            self._failures += 1
            if self._failures < self.failure_threshold:
                return
            self._opened_at = self._clock()
        logger.warning(
            "%s failed %d times in a row: failing its calls at once for %g s",
            self.name,
            self.failure_threshold,
            self.reset_timeout,
        )
        self._notify(True)

    def observed(self, healthy: bool) -> None:
        """A call this breaker did not admit reached the dependency (a background consumer's
        claim, say): ``healthy`` if it answered, else it failed transiently.

        An answer closes the breaker like a successful probe. A failure counts like
        :meth:`failed`; on an open breaker it starts another ``reset_timeout``, as a failed
        probe does. Once such a failure is seen on an open breaker, :meth:`down` holds until
        an answer (observed, or an admitted call's): readiness stays NOT_SERVING while the
        dependency stays down, however rarely those calls come, even when no RPC probes it.
        """
        if healthy:
            self.succeeded(probe=False)
            return
        with self._lock:
            if self._opened_at is not None:
                self._failing_unadmitted = True
                if not self._probing:
                    self._opened_at = max(self._opened_at, self._clock())
                return
        self.failed(probe=False)
        with self._lock:
            self._failing_unadmitted = self._opened_at is not None

    def abandoned(self, probe: bool) -> None:
        """The call never reached the dependency (refused by a bulkhead, out of time)."""
        if probe:
            with self._lock:
                self._probing = False

    def _notify(self, is_open: bool) -> None:
        for listener in self._listeners:
            listener(is_open)


# --- guard --------------------------------------------------------------------------------


class Guard:
    """A :class:`Bulkhead` and an optional :class:`CircuitBreaker` around one dependency,
    and the caller's deadline checked before each call starts."""

    def __init__(self, bulkhead: Bulkhead | None, breaker: CircuitBreaker | None) -> None:
        self.bulkhead = bulkhead
        self.breaker = breaker

    def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``function(*args, **kwargs)``, unless the deadline has passed
        (:class:`DeadlineExceeded`), the breaker is open (:class:`CircuitOpen`) or the
        bulkhead is full (:class:`Overloaded`). The breaker counts ``Unavailable`` as a
        failure, except :class:`DeadlineExceeded`: the caller's own deadline running out
        says nothing of the dependency."""
        left = remaining()
        if left is not None and left <= 0:
            raise DeadlineExceeded("the caller's deadline passed before the call started")
        breaker = self.breaker
        probe = breaker.admit() if breaker is not None else False
        try:
            if self.bulkhead is None:
                result = function(*args, **kwargs)
            else:
                with self.bulkhead.slot():
                    result = function(*args, **kwargs)
        except (Rejected, DeadlineExceeded, LimitExceeded):
            if breaker is not None:  # refused before reaching the dependency: tells nothing
                breaker.abandoned(probe)
            raise
        except BaseException as error:
            if breaker is not None:
                if is_transient(error):  # unreachable, timed out: the dependency failed
                    breaker.failed(probe)
                else:  # the dependency answered, with an error of its own
                    breaker.succeeded(probe)
            raise
        if breaker is not None:
            breaker.succeeded(probe)
        return result


class _GuardedStore:
    """Proxies a store, running each public method through a :class:`Guard`."""

    def __init__(self, store: object, guard: Guard) -> None:
        self._store = store
        self._guard = guard

    def __getattr__(self, attribute: str) -> Any:
        value = getattr(self._store, attribute)
        if attribute.startswith("_") or not callable(value):
            return value
        guard = self._guard

        def guarded(*args: Any, **kwargs: Any) -> Any:
            return guard.call(value, *args, **kwargs)

        setattr(self, attribute, guarded)  # later lookups skip __getattr__
        return guarded


def guard_storage(storage: Storage, guard: Guard) -> Storage:
    """A view of ``storage`` whose every store call goes through ``guard``. It shares the
    backend: closing either closes both."""
    guarded = copy.copy(storage)
    for name in STORES:
        setattr(guarded, name, cast(Any, _GuardedStore(getattr(storage, name), guard)))
    return guarded


class GuardedPublisher:
    """Publishes through ``publisher``, each call through ``guard``."""

    def __init__(self, publisher: Publisher, guard: Guard) -> None:
        self._publisher = publisher
        self._guard = guard

    def publish(
        self, topic: str, key: str, payload: bytes, *, message_id: str | None = None
    ) -> None:
        """As ``publisher.publish``, refused as :meth:`Guard.call` says."""
        self._guard.call(self._publisher.publish, topic, key, payload, message_id=message_id)


# --- consumers seen by readiness ----------------------------------------------------------


class _ObservedBroker:
    """Proxies a broker; its consumer's calls tell a breaker whether the engine answered."""

    # The calls the consumer engine makes on its own (publishes go through a Guard already):
    # each transient failure counts.
    _FAILURES_SEEN = frozenset(
        {"claim", "ack", "ack_and_claim_next", "retry", "hold", "dead_letter", "renew", "backlog"}
    )
    # The calls whose success shows the engine answered: the heartbeat's backlog read always
    # asks it, whereas a claim or a settlement may return without a round trip (every shard
    # busy with this process's other workers, a retry kept in memory).
    _ANSWERS_SEEN = frozenset({"backlog"})

    def __init__(self, broker: Broker, breaker: CircuitBreaker) -> None:
        self._broker = broker
        self._breaker = breaker

    def __getattr__(self, attribute: str) -> Any:
        value = getattr(self._broker, attribute)
        if attribute not in self._FAILURES_SEEN:
            return value
        breaker = self._breaker
        answers_seen = attribute in self._ANSWERS_SEEN

        def observed(*args: Any, **kwargs: Any) -> Any:
            try:
                result = value(*args, **kwargs)
            except BaseException as error:
                if is_transient(error):  # unreachable, timed out
                    breaker.observed(healthy=False)
                elif answers_seen:  # the engine answered, with an error of its own
                    breaker.observed(healthy=True)
                raise
            if answers_seen:
                breaker.observed(healthy=True)
            return result

        setattr(self, attribute, observed)  # later lookups skip __getattr__
        return observed


def observe_consumers(messaging: BrokeredMessaging, breaker: CircuitBreaker) -> None:
    """Let the calls ``messaging``'s consumers make to its engine (claims, settlements,
    lease renewals, the heartbeat's backlog read) count for ``breaker``
    (:meth:`CircuitBreaker.observed`): their transient failures as failures, the heartbeat's
    answers (every ``renew_interval``) as the engine up. With the engine down, readiness
    turns NOT_SERVING even when no RPC publishes, and stays so while the consumers keep
    failing. Call before ``messaging`` starts."""
    messaging.broker = cast(Broker, _ObservedBroker(messaging.broker, breaker))
