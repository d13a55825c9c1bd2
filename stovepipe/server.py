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
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent import futures
from types import FrameType

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from grpc_reflection.v1alpha import (  # type: ignore[import-untyped]
    reflection as grpc_reflection,
)

from stovepipe import auth, buildrunner, service
from stovepipe import config as configuration
from stovepipe.buildrunner import BuildRunner, BuildRunnerFactory, RunnerMap
from stovepipe.buildrunner.command import CommandBuildRunner
from stovepipe.buildrunner.fake import FakeBuildRunner
from stovepipe.controller.buildsignal import DEFAULT_POLL_INTERVAL
from stovepipe.controller.ingest import IngestController
from stovepipe.controller.pipeline import subscribe_pipeline
from stovepipe.controller.process import one_at_a_time
from stovepipe.entity import BuildStatus
from stovepipe.messaging import Messaging
from stovepipe.messaging.inprocess import InProcessMessaging
from stovepipe.messaging.registry import default_queue_url, open_messaging
from stovepipe.metrics import Metrics
from stovepipe.redaction import redact, redact_text, register_url
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
        ingest = IngestController(
            self.storage, sourcecontrol, self.messaging, builds=has_runner(runners)
        )
        self._metrics_listen = metrics_listen
        self.metrics_port: int | None = None

        interceptors: list[grpc.ServerInterceptor] = [self.metrics.interceptor()]
        if tokens:
            # After metrics, so refused calls are counted with their status.
            interceptors.append(auth.TokenAuthInterceptor(tokens))
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
            interceptors=interceptors,
            # A second server on the same port must fail to bind, not share it silently.
            options=[("grpc.so_reuseport", 0)],
        )
        service.add_to_server(
            service.StovepipeServicer(ingest, self.storage, sourcecontrol), self._server
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

    def start(self) -> None:
        """Start delivering messages, serving RPCs and metrics; report SERVING."""
        self.messaging.start()
        self._server.start()
        if self._metrics_listen:
            self.metrics_port = self.metrics.serve(self._metrics_listen)
        if self.exposed:
            logger.warning(
                "listening on %s with neither TLS nor tokens: anyone who reaches the port may "
                "call, in clear text; set tls_cert and tls_key, and tokens_file",
                self.address,
            )
        serving = health_pb2.HealthCheckResponse.SERVING
        self.health.set("", serving)
        self.health.set(service.SERVICE_NAME, serving)

    def stop(self, grace: float = configuration.DEFAULT_GRACE_PERIOD) -> bool:
        """Report NOT_SERVING, refuse new calls, let in-flight calls finish for up to ``grace``
        seconds, stop the messaging queue within the rest of ``grace`` (at least
        half a second; the in-process queue delivers what it holds first), then close metrics
        and storage.

        Returns whether everything drained. If a call is still running after ``grace`` (stuck
        in a backend, say), its thread keeps the storage it uses open and the caller should
        exit the process. Idempotent.
        """
        if self._stopped.is_set():
            return True
        self._stopped.set()
        deadline = time.monotonic() + grace
        self.health.enter_graceful_shutdown()
        self._server.stop(grace).wait(grace + 1)
        drain = max(deadline - time.monotonic(), _MIN_QUEUE_DRAIN_SECONDS)
        self.messaging.stop(timeout=drain)
        self.metrics.close()
        stuck = self.metrics.in_flight()
        if stuck:
            logger.warning("%d call(s) did not finish within the %gs grace period", stuck, grace)
            return False
        self.storage.close()
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server has stopped (or ``timeout``); True if it has."""
        return self._server.wait_for_termination(timeout)


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
                bindings[name] = GitSourceControl(
                    spec.path, spec.ref, remote=spec.remote, promote_ref=spec.promote_ref
                )
            else:
                bindings[name] = FakeSourceControl(spec.commits, name=name)
        except (SourceControlError, OSError, ValueError) as error:
            raise configuration.ConfigError(f"queue {name!r}: {error}") from None
    return QueueMap(bindings)


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
        url = config.storage_url
        reason = redact_text(str(error), [url])
        raise configuration.ConfigError(f"storage {redact(url)}: {reason}") from None


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
            )
        except BaseException:
            messaging.stop(timeout=0)
            raise
    except BaseException:
        storage.close()
        raise


def server_tls(config: configuration.Config) -> auth.ServerTLS | None:
    """The listener's TLS material as ``config`` names it (``None``: plaintext); a file that
    cannot be read, or does not hold PEM, is a :class:`ConfigError`."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    try:
        return auth.ServerTLS(
            certificate=auth.read_pem(config.tls_cert, "tls_cert"),
            key=auth.read_pem(config.tls_key, "tls_key"),
            client_ca=auth.read_pem(config.tls_client_ca, "tls_client_ca")
            if config.tls_client_ca is not None
            else None,
        )
    except ValueError as error:
        raise configuration.ConfigError(str(error)) from None


def queue_url_of(config: configuration.Config) -> str:
    """The messaging queue's URL: configured, else the one that goes with the storage."""
    return config.queue_url or default_queue_url(config.storage_url)


def build_messaging(config: configuration.Config, metrics: Metrics) -> Messaging:
    """Open (not start) the configured messaging queue, its metrics in ``metrics``' registry."""
    url = queue_url_of(config)
    register_url(url)
    try:
        return open_messaging(url, registry=metrics.registry)
    except (ValueError, StorageError) as error:
        reason = redact_text(str(error), [url])
        raise configuration.ConfigError(f"messaging queue {redact(url)}: {reason}") from None


def run_worker(config: configuration.Config) -> int:
    """Run the whole pipeline after ingest (process, build, buildsignal, record, dead
    letters; no RPCs) until SIGTERM or SIGINT, then drain within ``config.grace_period``;
    exit status. Builds run here as in the servers, so a worker needs the queues' settings."""
    sourcecontrol = build_sourcecontrol(config.queues)
    runners = build_runners(config, sourcecontrol)
    metrics = Metrics()
    storage = metrics.instrument(_open_configured_storage(config))
    with contextlib.closing(storage), _stop_requested_by_signals() as stop_requested:
        messaging = build_messaging(config, metrics)
        if isinstance(messaging, InProcessMessaging):
            raise configuration.ConfigError(
                "stovepipe worker needs a messaging queue shared with the servers "
                "(queue_url sqlite:///, mysql://, redis:// or rediss://), not an in-process one"
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
                "stovepipe worker running the pipeline from %s", redact(queue_url_of(config))
            )
            for line in configuration.describe(config.queues):
                logger.info("queue %s", line)
            while not stop_requested.wait(1.0):
                pass
        finally:
            messaging.stop(timeout=config.grace_period)
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
            logger.info("messaging queue %s", redact(queue_url_of(config)))
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
