"""Fixtures for the service tests: servers in-process on 127.0.0.1 port 0, or as
``stovepipe serve`` processes, always reached over a real gRPC channel."""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Iterator, Mapping

import grpc
import pytest

from stovepipe.buildrunner import BuildRunner, RunnerMap
from stovepipe.client import StovepipeClient
from stovepipe.metrics import Metrics
from stovepipe.server import StovepipeServer
from stovepipe.sourcecontrol import QueueMap, SourceControl
from stovepipe.storage import open_storage
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
    """``start(sources, runners, max_concurrent=1, metrics_listen="")`` starts a server in
    this process that runs the whole pipeline (buildsignal polling every 20 ms) on SQLite in
    ``tmp_path``; queues without a runner are ingest-only. Stopped at teardown."""
    started: list[Running] = []

    def start(
        sources: Mapping[str, SourceControl],
        runners: Mapping[str, BuildRunner],
        *,
        max_concurrent: int = 1,
        metrics_listen: str = "",
    ) -> Running:
        url = f"sqlite:///{tmp_path / f'pipeline-{len(started)}.db'}"
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
