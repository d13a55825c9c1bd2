"""Fixtures for the service tests: servers in-process on 127.0.0.1 port 0, or as
``stovepipe serve`` processes, always reached over a real gRPC channel.

Tests that take ``storage_backend_url`` run once per storage backend: ``memory://``, a fresh
SQLite file, and the MySQL, Redis and etcd servers named by ``STOVEPIPE_TEST_MYSQL_URL``,
``STOVEPIPE_TEST_REDIS_URL`` and ``STOVEPIPE_TEST_ETCD_URL``, else throwaway ones the
conformance plugin starts from the installed binaries. A server that cannot be had or reached
is skipped with the reason, or, when the ``CI`` environment variable is set, fails. Such tests
share those servers with anything else, so they write under keys of their own (a queue name
from ``unique_queue``).
"""

from __future__ import annotations

import contextlib
import pathlib
import uuid
from collections.abc import Callable, Iterator, Mapping

import grpc
import pytest

from stovepipe.buildrunner import BuildRunner, RunnerMap
from stovepipe.client import StovepipeClient
from stovepipe.conformance.plugin import server_url as plugin_server_url
from stovepipe.conformance.plugin import unreachable
from stovepipe.metrics import Metrics
from stovepipe.server import StovepipeServer
from stovepipe.sourcecontrol import QueueMap, SourceControl
from stovepipe.storage import NotFound, open_storage
from stovepipe.testing import (
    GitRepository,
    Running,
    ServeProcesses,
    StartServer,
    start_in_process,
)


@pytest.fixture
def start_server(tmp_path: pathlib.Path) -> Iterator[StartServer]:
    """``start(sources, storage_url=None, listen=..., max_workers=8, metrics_listen="")``
    starts a server in this process, on SQLite in ``tmp_path`` unless a URL is given; every
    server started is stopped at teardown."""
    started: list[Running] = []

    def start(
        sources: Mapping[str, SourceControl],
        *,
        storage_url: str | None = None,
        listen: str = "127.0.0.1:0",
        max_workers: int = 8,
        metrics_listen: str = "",
    ) -> Running:
        url = storage_url or f"sqlite:///{tmp_path / f'stovepipe-{len(started)}.db'}"
        running = start_in_process(
            sources, url, listen=listen, max_workers=max_workers, metrics_listen=metrics_listen
        )
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def start_pipeline(tmp_path: pathlib.Path) -> Iterator[Callable[..., Running]]:
    """``start(sources, runners, max_concurrent=1, metrics_listen="", storage_url=None)``
    starts a server in this process that runs the whole pipeline (buildsignal polling every
    20 ms, in-process messaging) on ``storage_url``, else on SQLite in ``tmp_path``; queues
    without a runner are ingest-only. Stopped at teardown."""
    started: list[Running] = []

    def start(
        sources: Mapping[str, SourceControl],
        runners: Mapping[str, BuildRunner],
        *,
        max_concurrent: int = 1,
        metrics_listen: str = "",
        storage_url: str | None = None,
    ) -> Running:
        url = storage_url or f"sqlite:///{tmp_path / f'pipeline-{len(started)}.db'}"
        server = StovepipeServer(
            open_storage(url),
            QueueMap(sources),
            runners=RunnerMap(runners),
            max_concurrent=lambda queue: max_concurrent,
            poll_interval=0.02,
            listen="127.0.0.1:0",
            max_workers=8,
            metrics=Metrics(process_metrics=False),
            metrics_listen=metrics_listen,
        )
        server.start()
        channel = grpc.insecure_channel(server.address)
        running = Running(server, channel, StovepipeClient(channel), url)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def processes(tmp_path: pathlib.Path) -> Iterator[ServeProcesses]:
    """``stovepipe serve`` processes, killed at teardown if still running."""
    spawned = ServeProcesses(tmp_path)
    yield spawned
    spawned.kill_all()


@pytest.fixture
def git_repository(tmp_path: pathlib.Path) -> Callable[..., GitRepository]:
    """``make(name="project", branch="main")``: a fresh repository under ``tmp_path``."""

    def make(name: str = "project", branch: str = "main") -> GitRepository:
        return GitRepository(tmp_path / name, branch)

    return make


STORAGE_BACKENDS = ("memory", "sqlite", "mysql", "redis", "etcd")
"""Every storage backend, embedded ones first."""


@pytest.fixture(scope="session")
def _reached() -> dict[str, str]:
    """Per network backend already probed: why it cannot be reached, empty if it can."""
    return {}


@pytest.fixture
def server_url(_reached: dict[str, str], request: pytest.FixtureRequest) -> Callable[[str], str]:
    """``url(backend)``: the test server's storage URL for a network backend (``mysql``,
    ``redis``, ``etcd``): ``STOVEPIPE_TEST_<BACKEND>_URL``, else a throwaway server the
    conformance plugin starts for the session; probed once per session; skips the test (fails
    it under ``CI``) when there is none or it cannot be reached."""

    def url(backend: str) -> str:
        found = plugin_server_url(request.config, backend)
        if backend not in _reached:
            _reached[backend] = _probe(backend, found)
        if _reached[backend]:
            unreachable(_reached[backend])
        return found

    return url


def _probe(backend: str, url: str) -> str:
    """Why the storage at ``url`` does not answer a read; empty when it does (some backends
    connect lazily, so opening one proves nothing)."""
    try:
        with open_storage(url) as storage, contextlib.suppress(NotFound):
            storage.queues.get("reachability probe")
    except Exception as error:
        return f"cannot reach {backend} storage at {url}: {error!r}"
    return ""


@pytest.fixture(scope="session", params=STORAGE_BACKENDS)
def storage_backend(request: pytest.FixtureRequest) -> str:
    """The storage backend under test: each of :data:`STORAGE_BACKENDS` in turn."""
    backend: str = request.param
    return backend


@pytest.fixture
def storage_backend_url(
    storage_backend: str, server_url: Callable[[str], str], tmp_path: pathlib.Path
) -> str:
    """A storage URL of the backend under test: a fresh SQLite file, ``memory://``, or the
    backend's test server (shared: write under :func:`unique_queue` names)."""
    if storage_backend == "memory":
        return "memory://"
    if storage_backend == "sqlite":
        return f"sqlite:///{tmp_path / 'storage.db'}"
    return server_url(storage_backend)


@pytest.fixture
def unique_queue() -> Callable[[str], str]:
    """``name(stem)``: a queue name of this test's own, ``<stem>-<token>/main``, so tests
    sharing a storage server never meet (request numbers start at 1 for each)."""
    token = uuid.uuid4().hex[:10]

    def name(stem: str = "project") -> str:
        return f"{stem}-{token}/main"

    return name
