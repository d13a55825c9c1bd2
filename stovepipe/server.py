"""Wires Stovepipe together and runs it: storage, source control, build runners, messaging,
the pipeline's controllers, the gRPC server with health and reflection, and metrics.

:class:`StovepipeServer` takes ready components (tests and benchmarks build it directly);
:func:`build_server` makes them from a :class:`~stovepipe.config.Config`; :func:`run` serves
until SIGTERM or SIGINT, then drains in-flight calls within the grace period;
:func:`run_worker` runs the same pipeline without the gRPC server.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import signal
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent import futures
from types import FrameType
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from grpc_reflection.v1alpha import (  # type: ignore[import-untyped]
    reflection as grpc_reflection,
)

from stovepipe import auth, buildrunner, resilience, service
from stovepipe import config as configuration
from stovepipe.buildrunner import BuildRunner, BuildRunnerFactory, RunnerMap
from stovepipe.buildrunner.command import CommandBuildRunner
from stovepipe.buildrunner.fake import FakeBuildRunner
from stovepipe.controller.buildsignal import DEFAULT_POLL_INTERVAL
from stovepipe.controller.ingest import (
    DEFAULT_CACHE_SIZE,
    DEFAULT_REPUBLISH_INTERVAL,
    IngestController,
)
from stovepipe.controller.pipeline import subscribe_pipeline
from stovepipe.controller.process import one_at_a_time
from stovepipe.entity import BuildStatus
from stovepipe.messaging import TOPIC_PROCESS, Messaging, MessagingError
from stovepipe.messaging.brokered import BrokeredMessaging
from stovepipe.messaging.inprocess import InProcessMessaging
from stovepipe.messaging.registry import default_messaging_url, open_messaging
from stovepipe.metrics import Metrics
from stovepipe.redaction import redact, redact_text, register_url
from stovepipe.sourcecontrol import NotFound as SourceControlNotFound
from stovepipe.sourcecontrol import (
    QueueMap,
    SourceControl,
    SourceControlError,
    SourceControlFactory,
)
from stovepipe.sourcecontrol.fake import FakeSourceControl
from stovepipe.sourcecontrol.git import GitSourceControl
from stovepipe.storage import Storage, StorageError, open_storage

logger = logging.getLogger(__name__)

# How long the messaging queue may take to drain after the last RPC, at least.
_MIN_QUEUE_DRAIN_SECONDS = 0.5
# Seconds between two looks at the circuit breakers for the readiness status: an open
# breaker's window ends by the clock, not by an event.
_READINESS_INTERVAL = 0.2
# At most this many seconds of a shutdown wait for callers to stop sending new calls, and
# the gap without a new call that counts as stopped.
_QUIET_SECONDS = 1.0
_QUIET_GAP = 0.1


class StovepipeServer:
    """One Stovepipe server over the given storage, source control and build runners.

    Queues without a runner in ``runners`` (all of them without ``runners``) are ingest-only:
    their heads are admitted and nothing is built. ``max_concurrent(queue)`` bounds a queue's
    builds at once; ``poll_interval`` is the seconds between two looks at a running build.
    The server owns ``storage`` from here on and closes it in :meth:`stop`. Bind happens in
    the constructor, so :attr:`port` is known before :meth:`start` (useful with port 0).

    ``tls`` serves TLS (mutual TLS with a client CA) instead of plaintext; with ``tokens``,
    calls need a bearer token with the method's scope (see :mod:`stovepipe.auth`);
    ``reflection`` serves gRPC server reflection.

    Serving under faults (see :mod:`stovepipe.resilience`): the calls RPCs make into storage,
    and the publishing of Ingest, may each hold at most ``bulkhead_size`` threads at once (0:
    no limit; more queue while the dependency keeps finishing calls); after
    ``breaker_failures`` transient failures in a row (0: never) a dependency's calls fail at
    once for ``breaker_reset`` seconds, and meanwhile the health service reports the
    Stovepipe service NOT_SERVING (readiness) while ``""`` stays SERVING (liveness).
    The pipeline's own consumers are not limited. :meth:`stop` keeps serving for
    ``shutdown_delay`` seconds with health NOT_SERVING before it stops accepting calls.

    Ingest keeps the mapping of ``ingest_cache_size`` heads in memory and republishes an
    unchanged head's waiting request at most every ``republish_interval`` seconds (see
    :mod:`stovepipe.controller.ingest`).
    """

    def __init__(
        self,
        storage: Storage,
        sourcecontrol: SourceControlFactory,
        *,
        runners: BuildRunnerFactory | None = None,
        max_concurrent: Callable[[str], int] = one_at_a_time,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        listen: str = configuration.DEFAULT_LISTEN,
        max_workers: int = configuration.DEFAULT_MAX_WORKERS,
        metrics: Metrics | None = None,
        metrics_listen: str = "",
        messaging: Messaging | None = None,
        tls: auth.ServerTLS | None = None,
        tokens: Sequence[auth.Token] = (),
        reflection: bool = True,
        shutdown_delay: float = 0.0,
        bulkhead_size: int = 0,
        breaker_failures: int = 0,
        breaker_reset: float = resilience.DEFAULT_RESET_TIMEOUT,
        ingest_cache_size: int = DEFAULT_CACHE_SIZE,
        republish_interval: float = DEFAULT_REPUBLISH_INTERVAL,
    ) -> None:
        self.metrics = metrics if metrics is not None else Metrics()
        self.storage = self.metrics.instrument(storage)
        self.messaging: Messaging = messaging if messaging is not None else InProcessMessaging()
        runners = runners if runners is not None else RunnerMap({})
        subscribe_pipeline(
            self.messaging,
            self.storage,
            sourcecontrol,
            runners,
            max_concurrent=max_concurrent,
            poll_interval=poll_interval,
        )
        if isinstance(sourcecontrol, QueueMap):
            self.metrics.watch_queues(self.storage, sourcecontrol, sourcecontrol.queues())
        self.guards = {
            name: resilience.Guard(
                resilience.Bulkhead(name, bulkhead_size) if bulkhead_size > 0 else None,
                resilience.CircuitBreaker(
                    name, failure_threshold=breaker_failures, reset_timeout=breaker_reset
                )
                if breaker_failures > 0
                else None,
            )
            for name in ("storage", "messaging")
        }
        """The guard around each dependency RPCs call: ``storage`` and ``messaging``."""
        messaging_breaker = self.guards["messaging"].breaker
        if messaging_breaker is not None and isinstance(self.messaging, BrokeredMessaging):
            # A server that nobody calls Ingest on must still see its messaging engine down.
            resilience.observe_consumers(self.messaging, messaging_breaker)
        guarded_storage = resilience.guard_storage(self.storage, self.guards["storage"])
        publisher = resilience.GuardedPublisher(self.messaging, self.guards["messaging"])
        self.ingest = ingest = IngestController(
            guarded_storage,
            sourcecontrol,
            publisher,
            builds=has_runner(runners),
            cache_size=ingest_cache_size,
            republish_interval=republish_interval,
        )
        """What Ingest calls: the controller of the entry stage."""
        self._shutdown_delay = shutdown_delay
        self._metrics_listen = metrics_listen
        self.metrics_port: int | None = None

        self._gate = _ShutdownGate()
        # The gate after metrics, so calls refused while stopping are counted too.
        interceptors: list[grpc.ServerInterceptor] = [self.metrics.interceptor(), self._gate]
        if tokens:
            # After metrics, so refused calls are counted with their status.
            interceptors.append(auth.TokenAuthInterceptor(tokens))
        # Last, around the servicers' own handlers: a stream refused by a token holds no slot.
        self.streams = StreamLimit(stream_limit(max_workers))
        interceptors.append(self.streams)
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
            interceptors=interceptors,
            # A second server on the same port must fail to bind, not share it silently.
            options=[("grpc.so_reuseport", 0)],
        )
        service.add_to_server(
            service.StovepipeServicer(ingest, guarded_storage, sourcecontrol), self._server
        )
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        if reflection:
            grpc_reflection.enable_server_reflection(
                (service.SERVICE_NAME, health.SERVICE_NAME, grpc_reflection.SERVICE_NAME),
                self._server,
            )
        host, port = configuration.parse_address(listen, setting="listen")
        if port != 0:
            # gRPC's C core logs its own bind failure to stderr before raising; find the
            # common causes first so they are reported once, in our words.
            probe_bind(listen, host, port)
        try:
            if tls is not None:
                self.port: int = self._server.add_secure_port(listen, tls.credentials())
            else:
                self.port = self._server.add_insecure_port(listen)
        except RuntimeError as error:
            raise OSError(f"cannot listen on {listen}: {error}") from None
        self.address = f"{host if ':' not in host else f'[{host}]'}:{self.port}"
        self.exposed = not auth.is_loopback(host) and tls is None and not tokens
        """Listening beyond this machine with neither TLS nor tokens: anyone who can reach
        the port may call, and everything travels in clear text."""
        self._stopped = threading.Event()
        self._ready = True
        self._serving = False  # set once start() has succeeded

    def start(self) -> None:
        """Start serving metrics, delivering messages and serving RPCs; report SERVING.

        Metrics first: a port that cannot be bound (``OSError``) fails start-up before any
        caller could reach the gRPC listener, and :meth:`stop` then skips ``shutdown_delay``.
        """
        if self._metrics_listen:
            self.metrics_port = self.metrics.serve(self._metrics_listen)
        self.messaging.start()
        self._server.start()
        self._serving = True
        if self.exposed:
            logger.warning(
                "listening on %s with neither TLS nor tokens: anyone who reaches the port may "
                "call, in clear text; set tls_cert and tls_key, and tokens_file",
                self.address,
            )
        serving = health_pb2.HealthCheckResponse.SERVING
        self.health.set("", serving)
        self.health.set(service.SERVICE_NAME, serving)
        breakers = [g.breaker for g in self.guards.values() if g.breaker is not None]
        if breakers:
            for breaker in breakers:
                breaker.on_change(lambda is_open: self._update_readiness())
            threading.Thread(target=self._watch_readiness, name="readiness", daemon=True).start()

    def _update_readiness(self) -> None:
        """Report the Stovepipe service NOT_SERVING while a breaker counts its dependency
        down (:meth:`~stovepipe.resilience.CircuitBreaker.down`), SERVING otherwise (the
        health service ignores both once shutdown has begun)."""
        ready = not any(
            guard.breaker is not None and guard.breaker.down() for guard in self.guards.values()
        )
        if ready != self._ready:
            self._ready = ready
            status = health_pb2.HealthCheckResponse
            self.health.set(service.SERVICE_NAME, status.SERVING if ready else status.NOT_SERVING)

    def _watch_readiness(self) -> None:
        while not self._stopped.wait(_READINESS_INTERVAL):
            self._update_readiness()

    def stop(self, grace: float = configuration.DEFAULT_GRACE_PERIOD) -> bool:
        """Report NOT_SERVING and keep serving for ``shutdown_delay`` seconds (so load
        balancers that watch health stop sending calls; not if :meth:`start` failed), then
        refuse new calls, let in-flight calls finish for up to ``grace`` seconds, stop the
        messaging queue within the rest of ``grace`` (at least half a second; the in-process
        queue delivers what it holds first), then close metrics and storage. The whole takes
        at most about ``shutdown_delay + grace`` seconds.

        Returns whether everything drained. If a call is still running after ``grace`` (stuck
        in a backend, say), its thread keeps the storage it uses open and the caller should
        exit the process. Idempotent.
        """
        if self._stopped.is_set():
            return True
        self._stopped.set()
        self.health.enter_graceful_shutdown()
        # Load balancers learn of a server from its health; one that never started serving
        # was never announced, so there is nobody to wait for.
        if self._shutdown_delay > 0 and self._serving:
            logger.info(
                "health reports NOT_SERVING; serving %g s more before draining",
                self._shutdown_delay,
            )
            time.sleep(self._shutdown_delay)
        deadline = time.monotonic() + grace
        self._gate.close()
        self._wait_until_quiet(deadline)
        rest = max(deadline - time.monotonic(), 0.0)
        self._server.stop(rest).wait(rest + 1)
        drain = max(deadline - time.monotonic(), _MIN_QUEUE_DRAIN_SECONDS)
        drained = self.messaging.stop(timeout=drain)
        self.metrics.close()
        stuck = self.metrics.in_flight()
        if stuck:
            logger.warning("%d call(s) did not finish within the %gs grace period", stuck, grace)
        if stuck or not drained:
            # A thread still uses the storage: closing its connections under it can crash
            # the process (SQLite). The caller exits instead.
            return False
        self.storage.close()
        return True

    def _wait_until_quiet(self, deadline: float) -> None:
        """Until ``deadline`` (a :func:`time.monotonic` time): wait for the calls in flight
        to finish, then, for at most :data:`_QUIET_SECONDS`, for callers to stop sending."""
        while self.metrics.in_flight() > 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        end = min(deadline, time.monotonic() + _QUIET_SECONDS)
        refused = self._gate.refused
        while time.monotonic() < end:
            time.sleep(_QUIET_GAP)
            if self._gate.refused == refused and self.metrics.in_flight() == 0:
                return
            refused = self._gate.refused

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server has stopped (or ``timeout``); True if it has."""
        return self._server.wait_for_termination(timeout)


class _ShutdownGate(grpc.ServerInterceptor):
    """After :meth:`close`, answers each new call ``UNAVAILABLE`` at once ("shutting down"),
    so a caller retries elsewhere, while the calls already running go on.

    Why not leave it to gRPC's own stop: that answers ``CANCELLED`` to the calls it has
    received but not yet handed to a thread, and ``CANCELLED`` means the caller gave up.
    Refusing them here while the listener is still open, and stopping gRPC once callers
    have gone quiet, leaves it (almost) none to cancel.
    """

    def __init__(self) -> None:
        self._closed = False
        self.refused = 0
        """Calls refused since :meth:`close` (read without a lock: only compared)."""

    def close(self) -> None:
        """Refuse every call from now on."""
        self._closed = True

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if not self._closed:
            return handler
        self.refused += 1  # the interceptors run on gRPC's one serving thread
        return auth.denied(
            handler, grpc.StatusCode.UNAVAILABLE, "the server is shutting down; retry"
        )


def stream_limit(max_workers: int) -> int:
    """How many streaming calls may hold a thread at once among ``max_workers``: a quarter
    (at least 1), so the other threads stay free for Ping, health and unary calls."""
    return max(1, max_workers // 4)


class StreamLimit(grpc.ServerInterceptor):
    """At most ``limit`` streaming calls (reflection, health ``Watch``) run at once; one more
    fails at once with ``RESOURCE_EXHAUSTED``.

    Why: gRPC serves each call on one of the ``max_workers`` threads for as long as the call
    lasts, and a stream lasts as long as its caller keeps it open, sending nothing or not.
    Without a limit, as many idle streams as there are threads leave none for Ping and
    health (the rule "Ping, health and reflection always have a thread"). Unary calls are
    not limited here (their storage calls have bulkheads of their own).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self.in_use = 0
        """Streaming calls running now."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._limited(handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._limited_unary(handler.stream_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._limited(handler.stream_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _slot(self, context: grpc.ServicerContext) -> Callable[[], None]:
        """Take a slot (abort ``RESOURCE_EXHAUSTED`` if none is free); returns its release,
        which runs once whether the handler ends or gRPC ends the call first."""
        if not self._slots.acquire(blocking=False):
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many streaming calls at once (at most {self.limit}); retry later",
            )
        with self._lock:
            self.in_use += 1
        held = [True]

        def release() -> None:
            with self._lock:
                if not held[0]:
                    return
                held[0] = False
                self.in_use -= 1
            self._slots.release()

        context.add_callback(release)
        return release

    def _limited(self, behavior: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        def limited(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            release = self._slot(context)
            try:
                yield from behavior(request, context)
            finally:
                release()

        return limited

    def _limited_unary(self, behavior: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        def limited(request: Any, context: grpc.ServicerContext) -> Any:
            release = self._slot(context)
            try:
                return behavior(request, context)
            finally:
                release()

        return limited


def probe_bind(listen: str, host: str, port: int) -> None:
    """Raise ``OSError("cannot listen on LISTEN: ...")`` unless some address ``host``
    resolves to can be bound at ``port`` now (gRPC serves if it binds one of them).

    The probe binds as gRPC does (``SO_REUSEADDR``, no ``SO_REUSEPORT``) and closes at once.
    """
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        reason = f"cannot resolve {host!r}: {error.strerror}"
        raise OSError(f"cannot listen on {listen}: {reason}") from None
    failure: OSError | None = None
    for family, kind, proto, _, sockaddr in addresses:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(sockaddr)
            return
        except OSError as error:
            failure = failure or error
    if failure is None:  # getaddrinfo never returns an empty list, but be sure
        raise OSError(f"cannot listen on {listen}: {host!r} resolves to no address")
    if failure.errno == errno.EADDRINUSE:
        reason = "address already in use (is another stovepipe serve running?)"
    else:
        reason = failure.strerror or str(failure)
    raise OSError(f"cannot listen on {listen}: {reason}")


def has_runner(runners: BuildRunnerFactory) -> Callable[[str], bool]:
    """Whether a queue has a build runner in ``runners`` (else it is ingest-only)."""

    def builds(queue: str) -> bool:
        try:
            runners.for_queue(queue)
        except buildrunner.NotFound:
            return False
        return True

    return builds


def build_sourcecontrol(queues: Mapping[str, configuration.QueueSpec]) -> QueueMap:
    """One SourceControl per configured queue; :class:`ConfigError` if one cannot be opened."""
    bindings: dict[str, SourceControl] = {}
    for name, spec in queues.items():
        try:
            if isinstance(spec, configuration.GitQueue):
                git = GitSourceControl(
                    spec.path, spec.ref, remote=spec.remote, promote_ref=spec.promote_ref
                )
                check_ref(name, spec, git)
                bindings[name] = git
            else:
                bindings[name] = FakeSourceControl(spec.commits, name=name)
        except (SourceControlError, OSError, ValueError) as error:
            raise configuration.ConfigError(f"queue {name!r}: {error}") from None
    return QueueMap(bindings)


def check_ref(name: str, spec: configuration.GitQueue, git: GitSourceControl) -> None:
    """Resolve a git queue's ref at start: :class:`ConfigError` if it does not exist, a
    warning if it is a branch without commits yet (ingest answers ``NOT_FOUND`` until its
    first commit), so a misspelled ref is caught here rather than at the first ingest."""
    try:
        git.latest()
    except SourceControlNotFound:
        if not git.ref_is_unborn():
            raise configuration.ConfigError(
                f"queue {name!r}: ref {spec.ref!r} does not exist in {spec.path}"
            ) from None
        logger.warning(
            "queue %r: branch %r has no commits yet; ingest answers NOT_FOUND until it has one",
            name,
            spec.ref,
        )


def build_runners(config: configuration.Config, sources: SourceControlFactory) -> RunnerMap:
    """One build runner per queue with a ``build`` table; :class:`ConfigError` if one cannot
    be made. ``command`` runners keep their state in ``config.builds_dir`` (created here)."""
    bindings: dict[str, BuildRunner] = {}
    for name, spec in config.queues.items():
        build = spec.build
        try:
            if isinstance(build, configuration.CommandBuild):
                configuration.prepare_builds_dir(config.builds_dir)
                bindings[name] = CommandBuildRunner(
                    name, sources.for_queue(name), build.command, build.timeout, config.builds_dir
                )
            elif isinstance(build, configuration.FakeBuild):
                bindings[name] = FakeBuildRunner(
                    BuildStatus(build.outcome), duration=build.duration
                )
        except (SourceControlError, ValueError) as error:
            raise configuration.ConfigError(f"queue {name!r}: build: {error}") from None
    return RunnerMap(bindings)


def max_concurrent_of(config: configuration.Config) -> Callable[[str], int]:
    """Each queue's configured ``max_concurrent`` (the default for a queue without a build)."""
    configured = {
        name: spec.build.max_concurrent
        for name, spec in config.queues.items()
        if spec.build is not None
    }

    def max_concurrent(queue: str) -> int:
        return configured.get(queue) or one_at_a_time(queue)

    return max_concurrent


def _open_configured_storage(config: configuration.Config) -> Storage:
    """Open ``config``'s storage; a failure is a configuration error naming the URL, redacted."""
    register_url(config.storage_url)
    configuration.prepare_default_storage(config.storage_url)
    try:
        return open_storage(config.storage_url, workers=config.max_workers)
    except (StorageError, ValueError) as error:  # unreachable, refused, or a malformed URL
        raise configuration.ConfigError(_failed("storage", config.storage_url, error)) from None


@contextlib.contextmanager
def _stop_requested_by_signals() -> Iterator[threading.Event]:
    """An event set by SIGTERM or SIGINT while inside; the previous handlers come back after."""
    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        logger.info("received %s; draining", signal.Signals(signum).name)
        stop_requested.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop_requested
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def build_server(config: configuration.Config) -> StovepipeServer:
    """Open storage and source control as ``config`` says and bind the server (not started)."""
    tls = server_tls(config)  # before anything is opened: a bad file is quick to report
    sourcecontrol = build_sourcecontrol(config.queues)
    runners = build_runners(config, sourcecontrol)
    storage = _open_configured_storage(config)
    try:
        metrics = Metrics()
        messaging = build_messaging(config, metrics)
        try:
            return StovepipeServer(
                storage,
                sourcecontrol,
                runners=runners,
                max_concurrent=max_concurrent_of(config),
                listen=config.listen,
                max_workers=config.max_workers,
                metrics=metrics,
                metrics_listen=config.metrics_listen,
                messaging=messaging,
                tls=tls,
                tokens=config.tokens,
                reflection=config.reflection,
                shutdown_delay=config.shutdown_delay,
                bulkhead_size=config.bulkhead_size,
                breaker_failures=config.breaker_failures,
                breaker_reset=config.breaker_reset,
                ingest_cache_size=config.ingest_cache_size,
                republish_interval=config.republish_interval,
            )
        except BaseException:
            messaging.stop(timeout=0)
            raise
    except BaseException:
        storage.close()
        raise


def server_tls(config: configuration.Config) -> auth.ServerTLS | None:
    """The listener's TLS material as ``config`` names it (``None``: plaintext); a file that
    cannot be read, does not hold PEM, or cannot serve (a key that does not match the
    certificate, say: see :func:`auth.check_server_files`) is a :class:`ConfigError`."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    try:
        tls = auth.ServerTLS(
            certificate=auth.read_pem(config.tls_cert, "tls_cert"),
            key=auth.read_pem(config.tls_key, "tls_key"),
            client_ca=auth.read_pem(config.tls_client_ca, "tls_client_ca")
            if config.tls_client_ca is not None
            else None,
        )
        auth.check_server_files(config.tls_cert, config.tls_key, config.tls_client_ca)
    except ValueError as error:
        raise configuration.ConfigError(str(error)) from None
    return tls


def messaging_url_of(config: configuration.Config) -> str:
    """The messaging URL: configured, else the one that goes with the storage."""
    return config.messaging_url or default_messaging_url(config.storage_url)


def build_messaging(config: configuration.Config, metrics: Metrics) -> Messaging:
    """Open (not start) the configured messaging queue, its metrics in ``metrics``' registry,
    and check that it can be used: a :class:`ConfigError` if its URL is malformed, its
    server cannot be reached or refuses the credentials, or it is in-process beside a
    storage engine that has no messaging of its own (etcd, say), which would lose queued
    work on a crash."""
    url = messaging_url_of(config)
    register_url(url)
    try:
        messaging = open_messaging(url, registry=metrics.registry)
    except (ValueError, StorageError, MessagingError) as error:
        raise configuration.ConfigError(_failed("messaging queue", url, error)) from None
    try:
        check_messaging(config, messaging)
    except BaseException:
        messaging.stop(timeout=0)
        raise
    return messaging


def check_messaging(config: configuration.Config, messaging: Messaging) -> None:
    """The start-up check of the messaging queue (see :func:`build_messaging`)."""
    url = messaging_url_of(config)
    if urllib.parse.urlsplit(url).scheme == "memory":
        storage_scheme = urllib.parse.urlsplit(config.storage_url).scheme
        if default_messaging_url(config.storage_url) == "memory://" and storage_scheme != "memory":
            raise configuration.ConfigError(
                f"{storage_scheme} storage needs a durable messaging queue beside it, as the "
                "in-process one loses queued work on a crash: set messaging_url to "
                "sqlite:///PATH, mysql://... or redis://..."
            )
        return
    if isinstance(messaging, BrokeredMessaging):
        try:
            # One read round trip: the server answers and accepts the credentials.
            messaging.backlog(TOPIC_PROCESS)
        except (StorageError, MessagingError) as error:
            raise configuration.ConfigError(_failed("messaging queue", url, error)) from None


def _failed(what: str, url: str, error: Exception) -> str:
    """One line for a dependency that failed at start, naming its URL once, redacted."""
    reason = redact_text(str(error), [url])
    shown = redact(url)
    return f"{what}: {reason}" if shown in reason else f"{what} {shown}: {reason}"


def run_worker(config: configuration.Config) -> int:
    """Run the whole pipeline after ingest (process, build, buildsignal, record, dead
    letters; no RPCs) until SIGTERM or SIGINT, then drain within ``config.grace_period``;
    exit status. Builds run here as in the servers, so a worker needs the queues' settings."""
    sourcecontrol = build_sourcecontrol(config.queues)
    runners = build_runners(config, sourcecontrol)
    metrics = Metrics()
    storage = metrics.instrument(_open_configured_storage(config))
    # Closed at the end unless a delivery outlived the grace period: it still uses the storage.
    drained = [True]
    with contextlib.ExitStack() as closing, _stop_requested_by_signals() as stop_requested:
        closing.callback(lambda: storage.close() if drained[0] else None)
        messaging = build_messaging(config, metrics)
        if isinstance(messaging, InProcessMessaging):
            raise configuration.ConfigError(
                "stovepipe worker needs a messaging queue shared with the servers "
                "(messaging_url sqlite:///, mysql://, redis:// or rediss://), not an in-process one"
            )
        try:
            subscribe_pipeline(
                messaging,
                storage,
                sourcecontrol,
                runners,
                max_concurrent=max_concurrent_of(config),
            )
            metrics.watch_queues(storage, sourcecontrol, sourcecontrol.queues())
            messaging.start()
            if config.metrics_listen:
                port = metrics.serve(config.metrics_listen)
                logger.info("metrics on http://%s/metrics", _with_port(config.metrics_listen, port))
            logger.info(
                "stovepipe worker running the pipeline from %s", redact(messaging_url_of(config))
            )
            for line in configuration.describe(config.queues):
                logger.info("queue %s", line)
            while not stop_requested.wait(1.0):
                pass
        finally:
            drained[0] = messaging.stop(timeout=config.grace_period)
            metrics.close()
    logger.info("stopped")
    return 0


def run(config: configuration.Config) -> bool:
    """Serve until SIGTERM or SIGINT, then drain within ``config.grace_period``.

    Returns whether every call finished; if not, the caller must end the process without
    waiting for the stuck threads (see :meth:`StovepipeServer.stop`).
    """
    server = build_server(config)
    with _stop_requested_by_signals() as stop_requested:
        try:
            server.start()
            logger.info("stovepipe serving on %s", server.address)
            for line in configuration.describe(config.queues):
                logger.info("queue %s", line)
            if any(isinstance(s.build, configuration.CommandBuild) for s in config.queues.values()):
                logger.info("builds in %s", config.builds_dir)
            logger.info("storage %s", redact(config.storage_url))
            logger.info("messaging %s", redact(messaging_url_of(config)))
            logger.info(
                "under faults: %s; %s; shutdown delay %g s, grace period %g s",
                f"at most {config.bulkhead_size} of {config.max_workers} threads per backend"
                if config.bulkhead_size
                else "no bulkhead",
                f"a backend failing {config.breaker_failures} times in a row is left alone "
                f"for {config.breaker_reset:g} s"
                if config.breaker_failures
                else "no circuit breaker",
                config.shutdown_delay,
                config.grace_period,
            )
            if server.metrics_port is not None:
                logger.info(
                    "metrics on http://%s/metrics",
                    _with_port(config.metrics_listen, server.metrics_port),
                )
            while not stop_requested.wait(1.0):
                pass
        finally:
            drained = server.stop(config.grace_period)
    logger.info("stopped")
    return drained


def _with_port(address: str, port: int) -> str:
    host, _, _ = address.rpartition(":")
    return f"{host}:{port}"
