"""Fixtures for the service tests: servers in-process on 127.0.0.1 port 0, or as
``stovepipe serve`` processes, always reached over a real gRPC channel."""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Iterator, Mapping

import pytest

from stovepipe.sourcecontrol import SourceControl
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
