"""Claims about processes: the newcomer's path with no configuration (with and without a build
command), SIGTERM draining, and the worker running the pipeline."""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import sqlite3
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from stovepipe import cli, config
from stovepipe.client import StovepipeClient
from stovepipe.controller import IngestController
from stovepipe.entity import RequestState
from stovepipe.messaging.registry import default_messaging_url, open_messaging
from stovepipe.server import build_sourcecontrol
from stovepipe.storage import open_storage
from stovepipe.testing import (
    GitRepository,
    ServeProcess,
    ServeProcesses,
    run_cli,
    stovepipe_command,
)
from stovepipe.v1 import stovepipe_pb2 as pb

TIMEOUT = 20


def ingest_in_subprocess(address: str, queue: str) -> str:
    result = run_cli("ingest", queue, "--server", address)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def ingest(address: str, queue: str, capsys: pytest.CaptureFixture[str]) -> str:
    """``stovepipe ingest`` run in this process (the same code, without interpreter start-up)."""
    assert cli.main(["ingest", queue, "--server", address]) == 0
    return capsys.readouterr().out.strip()


def test_newcomer_path_serve_in_a_fresh_git_repository_and_ingest_its_branch(
    processes: ServeProcesses,
    git_repository: Callable[..., GitRepository],
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = git_repository("project", branch="main")
    repo.commit("first")
    server = processes.serve(cwd=repo.path)  # no configuration at all

    assert ingest_in_subprocess(server.address, "project/main") == "request/project/main/1"
    assert ingest(server.address, "project/main", capsys) == "request/project/main/1"
    repo.commit("second")
    assert ingest(server.address, "project/main", capsys) == "request/project/main/2"

    assert server.stop() == 0, server.output()
    server = processes.serve(cwd=repo.path)
    assert ingest(server.address, "project/main", capsys) == "request/project/main/2"
    repo.commit("third")
    assert ingest(server.address, "project/main", capsys) == "request/project/main/3"

    # The data lives in the repository's directory but never shows up in git status.
    assert (repo.path / ".stovepipe" / "stovepipe.db").exists()
    assert repo.git("status", "--porcelain") == ""
    assert server.stop() == 0, server.output()


def test_serve_without_a_git_repository_or_queues_fails_with_a_clear_error(
    tmp_path: pathlib.Path,
) -> None:
    result = run_cli("serve", "--listen", "127.0.0.1:0", cwd=tmp_path)
    assert result.returncode == 2
    assert "no queue configured and no git repository" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def metric(process: ServeProcess, name: str, **labels: str) -> float:
    """One sample of the server's /metrics endpoint (0 if absent)."""
    match = re.search(r"metrics on (http://\S+)", process.output())
    assert match, process.output()
    with urllib.request.urlopen(match.group(1), timeout=TIMEOUT) as response:
        text = response.read().decode()
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and line.split("}")[0].count("=") == len(labels):
            sample_labels = ",".join(sorted(line[line.index("{") + 1 : line.index("}")].split(",")))
            if sample_labels == wanted:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


class LockedIngest:
    """A server whose SQLite file the test write-locks, so an ingest of a new head waits in
    storage until :meth:`release`: an in-flight call the test controls."""

    def __init__(self, processes: ServeProcesses, tmp_path: pathlib.Path, grace: float) -> None:
        self.database = tmp_path / "stovepipe.db"
        config = tmp_path / "stovepipe.toml"
        config.write_text(
            f'storage_url = "sqlite:///{self.database}?timeout=30"\n'
            f"grace_period = {grace}\n"
            'metrics_listen = "127.0.0.1:0"\n'
            '[queues."q"]\ntype = "fake"\ncommits = ["c1"]\n',
            encoding="utf-8",
        )
        self.server = processes.serve(["--config", str(config)], cwd=tmp_path)
        self.holder = sqlite3.connect(self.database, isolation_level=None)
        self.holder.execute("BEGIN IMMEDIATE")
        self.channel = grpc.insecure_channel(self.server.address)
        self.client = StovepipeClient(self.channel)
        self.outcome: list[object] = []
        self.thread = threading.Thread(target=self._call)
        self.thread.start()
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:  # wait until the call is inside storage
            if metric(
                self.server,
                "stovepipe_storage_operations_total",
                store="request_uris",
                operation="get_id_by_uri",
                outcome="NotFound",
            ):
                return
            time.sleep(0.02)
        raise AssertionError("the ingest never reached storage")

    def _call(self) -> None:
        try:
            self.outcome.append(self.client.Ingest(pb.IngestRequest(queue="q"), timeout=60).id)
        except grpc.RpcError as error:
            self.outcome.append(error.code())

    def release(self) -> None:
        self.holder.execute("ROLLBACK")
        self.holder.close()

    def close(self) -> None:
        self.thread.join(timeout=TIMEOUT)
        self.channel.close()


def refused_after_signal(address: str) -> grpc.StatusCode:
    """Ping ``address`` until a call fails (the server has begun to drain); its status."""
    deadline = time.monotonic() + TIMEOUT
    with grpc.insecure_channel(address) as channel:
        client = StovepipeClient(channel)
        while time.monotonic() < deadline:
            try:
                client.Ping(pb.PingRequest(), timeout=2)
            except grpc.RpcError as error:
                code: grpc.StatusCode = error.code()
                if code != grpc.StatusCode.DEADLINE_EXCEEDED:  # slow is not refused
                    return code
            time.sleep(0.05)
    raise AssertionError("the server still answers new calls after SIGTERM")


def test_sigterm_drains_the_in_flight_call_and_refuses_new_ones(
    processes: ServeProcesses, tmp_path: pathlib.Path
) -> None:
    locked = LockedIngest(processes, tmp_path, grace=10)
    locked.server.signal(signal.SIGTERM)
    # UNAVAILABLE once the port is closed; CANCELLED for a call that raced the stop itself.
    refused = refused_after_signal(locked.server.address)
    assert refused in {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}
    assert locked.server.popen.poll() is None  # still waiting for the in-flight call

    locked.release()
    assert locked.server.popen.wait(timeout=TIMEOUT) == 0, locked.server.output()
    locked.close()
    assert locked.outcome == ["request/q/1"]
    assert "draining" in locked.server.output()


def test_sigterm_exits_within_the_grace_period_when_a_call_does_not_finish(
    processes: ServeProcesses, tmp_path: pathlib.Path
) -> None:
    grace = 1.0
    locked = LockedIngest(processes, tmp_path, grace=grace)
    start = time.monotonic()
    locked.server.signal(signal.SIGTERM)
    status = locked.server.popen.wait(timeout=TIMEOUT)
    elapsed = time.monotonic() - start
    locked.release()
    locked.close()
    assert status == 0, locked.server.output()
    # The grace period, a short queue drain, process exit; generous for a loaded machine.
    assert elapsed < grace + 10
    assert locked.outcome and locked.outcome[0] != "request/q/1"


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(0.05)


def commit_verdict(repo: GitRepository, verdict: str) -> str:
    (repo.path / "verdict").write_text(verdict + "\n", encoding="utf-8")
    repo.git("add", "verdict")
    repo.git("commit", "--quiet", f"--message={verdict}")
    return repo.git("rev-parse", "HEAD")


def status_json(address: str, queue: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert cli.main(["status", queue, "--json", "--server", address]) == 0
    document: dict[str, Any] = json.loads(capsys.readouterr().out)
    return document


def request_state(document: dict[str, Any], request_id: str) -> str | None:
    for request in document["requests"]:
        if request["id"] == request_id:
            state: str = request["state"]
            return state
    return None


def test_newcomer_path_with_a_build_command_tells_red_from_green_and_keeps_git_status_clean(
    processes: ServeProcesses,
    git_repository: Callable[..., GitRepository],
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = git_repository("project", branch="main")
    first = commit_verdict(repo, "pass")
    server = processes.serve(
        ["--build-command", 'test "$(cat verdict)" = pass'], cwd=repo.path
    )  # no configuration file: the repository it runs in, built by the command
    queue = "project/main"

    def settles(request_id: str, state: str) -> None:
        wait_until(
            lambda: request_state(status_json(server.address, queue, capsys), request_id) == state,
            f"{request_id} is {state}",
        )

    def green() -> str:
        assert cli.main(["green", queue, "--server", server.address]) == 0
        return capsys.readouterr().out.strip()

    assert ingest(server.address, queue, capsys) == "request/project/main/1"
    settles("request/project/main/1", "succeeded")
    wait_until(lambda: green().endswith(first), "the first commit is the last green")

    commit_verdict(repo, "fail")
    assert ingest(server.address, queue, capsys) == "request/project/main/2"
    settles("request/project/main/2", "failed")
    assert green().endswith(first)

    fixed = commit_verdict(repo, "pass")
    assert ingest(server.address, queue, capsys) == "request/project/main/3"
    settles("request/project/main/3", "succeeded")
    wait_until(lambda: green().endswith(fixed), "the fixed commit is the last green")

    assert (repo.path / ".stovepipe" / "builds").is_dir()
    assert repo.git("status", "--porcelain") == ""  # builds live in the ignored data directory
    assert server.stop() == 0, server.output()


def test_worker_runs_the_whole_pipeline_builds_included(
    git_repository: Callable[..., GitRepository], tmp_path: pathlib.Path
) -> None:
    repo = git_repository("project")
    sha = commit_verdict(repo, "pass")
    storage_url = f"sqlite:///{tmp_path / 'shared.db'}"
    config_file = tmp_path / "stovepipe.toml"
    config_file.write_text(
        f'storage_url = "{storage_url}"\n'
        f'builds_dir = "{tmp_path / "builds"}"\n'
        '[queues."project/main"]\ntype = "git"\npath = "project"\nref = "main"\n'
        'promote_ref = "green"\n'
        '[queues."project/main".build]\ntype = "command"\n'
        "command = 'test \"$(cat verdict)\" = pass'\ntimeout = 60\n",
        encoding="utf-8",
    )
    # A server's ingest, without the server: the worker is the only consumer.
    loaded = config.load(config_file, environ={}, cwd=tmp_path)
    with open_storage(storage_url) as storage:
        messaging = open_messaging(default_messaging_url(storage_url))
        try:
            ingest_stage = IngestController(storage, build_sourcecontrol(loaded.queues), messaging)
            request_id = ingest_stage.ingest("project/main").id
        finally:
            messaging.stop(timeout=0)

    log = tmp_path / "worker.log"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("STOVEPIPE_")}
    with log.open("wb") as sink:
        worker = subprocess.Popen(
            [*stovepipe_command(), "worker", "--config", str(config_file)],
            cwd=tmp_path,
            env=environment,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        with open_storage(storage_url) as storage:
            wait_until(
                lambda: storage.queues.get("project/main").last_green_request_id == request_id,
                f"the worker builds and records {request_id}:\n{log.read_text()}",
            )
            assert storage.requests.get(request_id).state == RequestState.SUCCEEDED
        assert repo.git("rev-parse", "refs/heads/green") == sha
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=TIMEOUT) == 0, log.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=TIMEOUT)
    assert "Traceback" not in log.read_text()
