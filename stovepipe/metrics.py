"""Prometheus metrics: every RPC, every storage operation, and the pipeline.

=================================================  =========  =================================
metric                                             type       labels
=================================================  =========  =================================
``stovepipe_grpc_server_handled_total``            counter    grpc_service, grpc_method,
                                                              grpc_code
``stovepipe_grpc_server_handling_seconds``         histogram  grpc_service, grpc_method
``stovepipe_grpc_server_in_flight``                gauge
``stovepipe_storage_operations_total``             counter    store, operation, outcome
``stovepipe_storage_operation_seconds``            histogram  store, operation
``stovepipe_requests_settled_total``               counter    queue, state
``stovepipe_builds_total``                         counter    queue, outcome
``stovepipe_failed_verdict_seconds``               histogram  queue
``stovepipe_queue_in_flight``                      gauge      queue
``stovepipe_queue_last_green_age_seconds``         gauge      queue
=================================================  =========  =================================

``outcome`` of a storage operation is ``ok`` or the error's class name (``NotFound``,
``AlreadyExists``, ``Unavailable``, ...). The two pipeline counters count what this process
wrote: a request moved to a terminal ``state`` (``superseded``, ``succeeded``, ``failed``,
``cancelled``), a build's terminal status (``outcome``: ``succeeded``, ``failed``,
``cancelled``) stored; the sum over every server and worker is the whole pipeline's. The
histogram observes, for each red fact this process recorded, the seconds from the commit to
its failed verdict (commit times from the queues' sources, so only once
:meth:`Metrics.watch_queues` has named them). The two
queue gauges are read from storage at each scrape, for every configured queue: the requests
holding a build slot, and the seconds since the last green commit was committed (absent until
the queue's first green). Each :class:`Metrics` owns its registry, so several servers can live
in one process; :meth:`Metrics.serve` exposes it over HTTP at ``/metrics``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ParamSpec, TypeVar, cast
from wsgiref.simple_server import WSGIServer

import grpc
import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from stovepipe.entity import Build, Fact, Request
from stovepipe.sourcecontrol import SourceControlError, SourceControlFactory
from stovepipe.storage import (
    BuildStore,
    FactStore,
    NotFound,
    QueueStore,
    RequestStore,
    RequestURIStore,
    Storage,
    StorageError,
)
from stovepipe.storage import Counter as StorageCounter

logger = logging.getLogger(__name__)

# From 100 us (an in-memory call) to 10 s (a backend timing out).
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

# From a minute (a quick build of a fresh commit) to a day (a queue that was stuck).
VERDICT_BUCKETS = (60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0)

P = ParamSpec("P")
R = TypeVar("R")


class Metrics:
    """The metric families of one server, in a registry of their own."""

    def __init__(self, *, process_metrics: bool = True) -> None:
        self.registry = CollectorRegistry()
        if process_metrics:
            prometheus_client.ProcessCollector(registry=self.registry)
            prometheus_client.PlatformCollector(registry=self.registry)
            prometheus_client.GCCollector(registry=self.registry)
        self.rpc_handled = Counter(
            "stovepipe_grpc_server_handled",
            "RPCs completed on the server, by method and status code.",
            ["grpc_service", "grpc_method", "grpc_code"],
            registry=self.registry,
        )
        self.rpc_seconds = Histogram(
            "stovepipe_grpc_server_handling_seconds",
            "Time to handle an RPC, from the handler's start to its response.",
            ["grpc_service", "grpc_method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rpcs_in_flight = Gauge(
            "stovepipe_grpc_server_in_flight",
            "RPCs being handled right now.",
            registry=self.registry,
        )
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()
        self.storage_operations = Counter(
            "stovepipe_storage_operations",
            "Storage operations, by store, operation and outcome (ok or the error's kind).",
            ["store", "operation", "outcome"],
            registry=self.registry,
        )
        self.storage_seconds = Histogram(
            "stovepipe_storage_operation_seconds",
            "Time a storage operation took, errors included.",
            ["store", "operation"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.requests_settled = Counter(
            "stovepipe_requests_settled",
            "Requests this process moved to a terminal state, by queue and state.",
            ["queue", "state"],
            registry=self.registry,
        )
        self.builds = Counter(
            "stovepipe_builds",
            "Builds whose terminal status this process stored, by queue and outcome.",
            ["queue", "outcome"],
            registry=self.registry,
        )
        self.failed_verdict_seconds = Histogram(
            "stovepipe_failed_verdict_seconds",
            "Seconds from a commit to its failed verdict, for each red fact recorded here.",
            ["queue"],
            buckets=VERDICT_BUCKETS,
            registry=self.registry,
        )
        self._sources: SourceControlFactory | None = None
        self._clock: Callable[[], float] = time.time
        self._http: WSGIServer | None = None
        self._http_thread: threading.Thread | None = None

    def in_flight(self) -> int:
        """How many RPCs are being handled right now."""
        with self._in_flight_lock:
            return self._in_flight

    def _track(self, delta: int) -> None:
        with self._in_flight_lock:
            self._in_flight += delta
        self.rpcs_in_flight.inc(delta)

    def interceptor(self) -> grpc.ServerInterceptor:
        """A server interceptor that counts and times every unary RPC."""
        return _RpcMetricsInterceptor(self)

    def instrument(self, storage: Storage) -> Storage:
        """Time and count every call on ``storage``'s stores, in place; return it. Count the
        requests and builds it moves to a terminal state.

        Generic over the stores' methods, so it needs no change when a backend or a store's
        contract grows.
        """
        storage.requests = cast(
            RequestStore,
            _InstrumentedStore(
                storage.requests, "requests", self, {"update": self._request_updated}
            ),
        )
        storage.request_uris = cast(
            RequestURIStore, _InstrumentedStore(storage.request_uris, "request_uris", self)
        )
        storage.counter = cast(StorageCounter, _InstrumentedStore(storage.counter, "counter", self))
        storage.queues = cast(QueueStore, _InstrumentedStore(storage.queues, "queues", self))
        storage.builds = cast(
            BuildStore,
            _InstrumentedStore(storage.builds, "builds", self, {"update": self._build_updated}),
        )
        storage.facts = cast(
            FactStore,
            _InstrumentedStore(storage.facts, "facts", self, {"create": self._fact_created}),
        )
        return storage

    def watch_queues(
        self,
        storage: Storage,
        sources: SourceControlFactory,
        queues: Sequence[str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Report ``queues``' in-flight counts and last-green ages, read from ``storage`` (and
        the commit time from ``sources``) at each scrape, and time red verdicts from their
        commits. Call once."""
        self._sources, self._clock = sources, clock
        self.registry.register(_QueueCollector(storage, sources, tuple(queues), clock))

    def _request_updated(self, request: Request, *args: object, **kwargs: object) -> None:
        if request.state.terminal:
            self.requests_settled.labels(request.queue, str(request.state)).inc()

    def _fact_created(self, fact: Fact, *args: object, **kwargs: object) -> None:
        if fact.degree == 0 or self._sources is None:
            return
        try:
            committed = self._sources.for_queue(fact.queue).commit_time(fact.uri)
        except SourceControlError as error:
            logger.debug("no verdict time for %r: %s", fact.uri, error)
            return
        seconds = max(0.0, self._clock() - committed)
        self.failed_verdict_seconds.labels(fact.queue).observe(seconds)

    def _build_updated(self, build: Build, *args: object, **kwargs: object) -> None:
        if build.status.terminal:
            self.builds.labels(queue_of(build.request_id), str(build.status)).inc()

    def timed(self, store: str, operation: str, function: Callable[P, R]) -> Callable[P, R]:
        """Wrap one storage operation so each call is counted and timed."""
        seconds = self.storage_seconds.labels(store, operation)
        outcomes = self.storage_operations

        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            start = time.perf_counter()
            outcome = "ok"
            try:
                return function(*args, **kwargs)
            except Exception as error:
                outcome = type(error).__name__
                raise
            finally:
                seconds.observe(time.perf_counter() - start)
                outcomes.labels(store, operation, outcome).inc()

        return call

    def serve(self, address: str) -> int:
        """Expose ``/metrics`` over HTTP on ``HOST:PORT``; return the bound port."""
        host, _, port = address.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        try:
            self._http, self._http_thread = prometheus_client.start_http_server(
                int(port), addr=host, registry=self.registry
            )
        except OSError as error:
            raise OSError(f"cannot serve metrics on {address}: {error.strerror}") from None
        return int(self._http.server_port)

    def close(self) -> None:
        """Stop the HTTP endpoint, if any. Idempotent."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._http_thread is not None:
            self._http_thread.join(timeout=5)
            self._http_thread = None


def queue_of(request_id: str) -> str:
    """The queue of a request id ``request/<queue>/<n>`` (the id itself if it is not one)."""
    queue, slash, _ = request_id.removeprefix("request/").rpartition("/")
    return queue if slash else request_id


class _InstrumentedStore:
    """Proxies a store, wrapping each public method with :meth:`Metrics.timed` on first use;
    ``after[method]`` is called with a successful call's arguments."""

    def __init__(
        self,
        store: object,
        name: str,
        metrics: Metrics,
        after: dict[str, Callable[..., None]] | None = None,
    ) -> None:
        self._store = store
        self._name = name
        self._metrics = metrics
        self._after = after or {}

    def __getattr__(self, attribute: str) -> Any:
        value = getattr(self._store, attribute)
        if attribute.startswith("_") or not callable(value):
            return value
        wrapped = self._metrics.timed(self._name, attribute, value)
        observe = self._after.get(attribute)
        if observe is not None:
            timed = wrapped

            def wrapped(*args: Any, **kwargs: Any) -> Any:
                result = timed(*args, **kwargs)
                observe(*args, **kwargs)
                return result

        # Cache on the instance: later lookups skip __getattr__ entirely.
        self.__dict__[attribute] = wrapped
        return wrapped


class _QueueCollector(Collector):
    """The per-queue gauges, read from storage and source control when scraped."""

    def __init__(
        self,
        storage: Storage,
        sources: SourceControlFactory,
        queues: tuple[str, ...],
        clock: Callable[[], float],
    ) -> None:
        self._storage = storage
        self._sources = sources
        self._queues = queues
        self._clock = clock

    def describe(self) -> list[Metric]:
        # Describing without reading storage keeps registration free of backend calls.
        return [self._in_flight(), self._age()]

    def collect(self) -> Iterator[Metric]:
        in_flight, age = self._in_flight(), self._age()
        for name in self._queues:
            try:
                queue = self._storage.queues.get(name)
            except NotFound:
                in_flight.add_metric([name], 0)
                continue
            except StorageError as error:
                # A scrape must not fail because one backend call did; the gauge is absent.
                logger.debug("no metrics for queue %r: %s", name, error)
                continue
            in_flight.add_metric([name], queue.in_flight)
            if not queue.last_green_uri:
                continue
            try:
                committed = self._sources.for_queue(name).commit_time(queue.last_green_uri)
            except SourceControlError as error:
                logger.debug("no last-green age for queue %r: %s", name, error)
                continue
            age.add_metric([name], max(0.0, self._clock() - committed))
        yield in_flight
        yield age

    @staticmethod
    def _in_flight() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "stovepipe_queue_in_flight",
            "Requests of the queue holding a build slot, read from storage at the scrape.",
            labels=["queue"],
        )

    @staticmethod
    def _age() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "stovepipe_queue_last_green_age_seconds",
            "Seconds since the queue's last green commit was committed.",
            labels=["queue"],
        )


def _split_method(full_method: str) -> tuple[str, str]:
    """``/pkg.Service/Method`` -> (``pkg.Service``, ``Method``)."""
    _, service, method = full_method.split("/", 2) if full_method.count("/") >= 2 else ("", "", "")
    return service or "unknown", method or full_method


def _code_of(context: grpc.ServicerContext) -> grpc.StatusCode | None:
    """The status the handler set (by ``abort`` or ``set_code``), if any."""
    code: grpc.StatusCode | None = cast(Any, context).code()
    return code


class _RpcMetricsInterceptor(grpc.ServerInterceptor):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        service, method = _split_method(handler_call_details.method)
        seconds = self._metrics.rpc_seconds.labels(service, method)
        handled = self._metrics.rpc_handled
        behavior = handler.unary_unary
        metrics = self._metrics

        def timed_behavior(request: Any, context: grpc.ServicerContext) -> Any:
            start = time.perf_counter()
            code: grpc.StatusCode | None = None
            metrics._track(+1)
            try:
                response = behavior(request, context)
                code = _code_of(context) or grpc.StatusCode.OK
                return response
            except Exception:
                # abort() sets the code before raising; anything else becomes UNKNOWN.
                code = _code_of(context) or grpc.StatusCode.UNKNOWN
                raise
            finally:
                seconds.observe(time.perf_counter() - start)
                handled.labels(service, method, (code or grpc.StatusCode.UNKNOWN).name).inc()
                metrics._track(-1)

        return grpc.unary_unary_rpc_method_handler(
            timed_behavior,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
