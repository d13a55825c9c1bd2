"""A ``stovepipe serve`` process killed (SIGKILL) mid-build and started again, on every
durable storage backend: the request it was building still ends terminal, its build slot is
freed, and the user's working tree is never touched.

Each run is a deployment of its own on the backend's test server: SQLite (storage and
messaging in one file), a MySQL database made for the test, a Redis key prefix, an etcd key
prefix (with a SQLite messaging queue, as etcd carries none). The messaging queue's leases
are short, so a killed server's deliveries come back within about a second.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import signal
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator

import grpc
import pytest

from stovepipe.client import StovepipeClient
from stovepipe.messaging.registry import with_query
from stovepipe.testing import GitRepository, ServeProcess, ServeProcesses
from stovepipe.v1 import stovepipe_pb2 as pb

DURABLE_BACKENDS = ("sqlite", "mysql", "redis", "etcd")
WAIT = 30.0
"""The bound on every wait: generous, for a loaded machine."""
LEASE = 1.0
"""Seconds a delivery stays leased to a server that stopped renewing it (one that died)."""
MESSAGING_OPTIONS = {"visibility_timeout": LEASE, "poll_interval": 0.05}

TERMINAL = frozenset(
    {
        pb.REQUEST_STATE_SUPERSEDED,
        pb.REQUEST_STATE_SUCCEEDED,
        pb.REQUEST_STATE_FAILED,
        pb.REQUEST_STATE_CANCELLED,
    }
)


@dataclasses.dataclass(frozen=True)
class Deployment:
    """Where a deployment keeps its state: storage and a durable messaging queue."""

    storage_url: str
    messaging_url: str


def with_options(url: str, **options: object) -> str:
    """``url`` with these query options added (replacing any of the same name)."""
    query = dict(urllib.parse.parse_qsl(url.partition("?")[2]))
    query.update({name: str(value) for name, value in options.items()})
    return with_query(url, urllib.parse.urlencode(query))


@pytest.fixture(params=DURABLE_BACKENDS)
def deployment(
    request: pytest.FixtureRequest,
    server_url: Callable[[str], str],
    processes: ServeProcesses,
    tmp_path: pathlib.Path,
) -> Iterator[Deployment]:
    """A deployment of this test's own on each durable backend in turn; its servers are
    killed before its state is removed."""
    backend: str = request.param
    token = uuid.uuid4().hex[:12]
    if backend == "sqlite":
        database = f"sqlite:///{tmp_path / 'stovepipe.db'}"
        yield Deployment(database, with_options(database, **MESSAGING_OPTIONS))
    elif backend == "mysql":
        yield from _mysql_deployment(server_url("mysql"), f"stovepipe_restart_{token}", processes)
    elif backend == "redis":
        base = server_url("redis")
        prefix = f"stovepipe-test:{token}:"
        yield Deployment(
            with_options(base, prefix=f"{prefix}storage:"),
            with_options(base, prefix=f"{prefix}mq:", **MESSAGING_OPTIONS),
        )
        processes.kill_all()
        _delete_redis_keys(base, prefix)
    else:
        queue = f"sqlite:///{tmp_path / 'queue.db'}"
        yield Deployment(
            with_options(server_url("etcd"), prefix=f"stovepipe-test/{token}/"),
            with_options(queue, **MESSAGING_OPTIONS),
        )


def _mysql_deployment(base: str, database: str, processes: ServeProcesses) -> Iterator[Deployment]:
    """A database made for the test (schema applied by the servers), dropped at the end."""
    import pymysql

    parts = urllib.parse.urlsplit(base)
    connection = pymysql.connect(
        host=parts.hostname,
        port=parts.port or 3306,
        user=urllib.parse.unquote(parts.username or "root"),
        password=urllib.parse.unquote(parts.password or ""),
        autocommit=True,
    )
    with connection, connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {database}")
        try:
            own = urllib.parse.urlunsplit(parts._replace(path=f"/{database}", query=""))
            yield Deployment(
                with_options(own, migrate="true"), with_options(own, **MESSAGING_OPTIONS)
            )
        finally:
            processes.kill_all()
            cursor.execute(f"DROP DATABASE {database}")


def _delete_redis_keys(base: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(base.partition("?")[0])
    try:
        for name in client.scan_iter(match=f"{prefix}*"):
            client.delete(name)
    finally:
        client.close()


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(text)


def write_config(
    path: pathlib.Path,
    deployment: Deployment,
    queue: str,
    repo: GitRepository,
    builds_dir: pathlib.Path,
    command: str,
) -> pathlib.Path:
    """A configuration whose ``queue`` follows ``repo``'s ``main``, built by ``command``,
    promoted to ``green``."""
    name = toml_string(queue)
    path.write_text(
        "\n".join(
            [
                f"storage_url = {toml_string(deployment.storage_url)}",
                f"messaging_url = {toml_string(deployment.messaging_url)}",
                f"builds_dir = {toml_string(str(builds_dir))}",
                'log_level = "info"',
                "grace_period = 2",
                f"[queues.{name}]",
                'type = "git"',
                f"path = {toml_string(str(repo.path))}",
                'ref = "main"',
                'promote_ref = "green"',
                f"[queues.{name}.build]",
                'type = "command"',
                f"command = {toml_string(command)}",
                "timeout = 60",
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    return path


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Poll ``condition`` every 20 ms; fail naming ``what`` if it does not hold in time."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(0.02)


class Connected:
    """A gRPC client of one server process, for one queue."""

    def __init__(self, process: ServeProcess, queue: str) -> None:
        self.process = process
        self.queue = queue
        self._channel = grpc.insecure_channel(process.address)
        self._client = StovepipeClient(self._channel)

    def close(self) -> None:
        self._channel.close()

    def ingest(self) -> str:
        response: pb.IngestResponse = self._client.Ingest(
            pb.IngestRequest(queue=self.queue), timeout=10
        )
        return response.id

    def request(self, request_id: str) -> pb.Request:
        response: pb.GetRequestResponse = self._client.GetRequest(
            pb.GetRequestRequest(id=request_id), timeout=10
        )
        return response.request

    def state(self) -> pb.Queue:
        response: pb.GetQueueResponse = self._client.GetQueue(
            pb.GetQueueRequest(queue=self.queue), timeout=10
        )
        return response.queue

    def settled(self, request_id: str) -> pb.Request:
        """The request once it is terminal."""
        wait_until(
            lambda: self.request(request_id).state in TERMINAL,
            f"{request_id} settles:\n{self.process.output()}",
        )
        return self.request(request_id)


def uri(sha: str) -> str:
    return f"git://local/project/main/{sha}"


def recorded_process(builds_dir: pathlib.Path, sha: str) -> bool:
    """Whether the command runner has recorded the process of a build of ``sha``
    (``build.json`` names what a build builds, ``process.json`` its process)."""
    for build in builds_dir.glob("*/build.json"):
        try:
            meta = json.loads(build.read_text())
        except (OSError, ValueError):
            continue
        if meta.get("head_sha") == sha and (build.parent / "process.json").exists():
            return True
    return False


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie, waiting to be reaped, is not)."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def test_a_server_killed_mid_build_and_restarted_settles_the_request_and_frees_the_slot(
    deployment: Deployment,
    processes: ServeProcesses,
    unique_queue: Callable[[str], str],
    git_repository: Callable[..., GitRepository],
    tmp_path: pathlib.Path,
) -> None:
    queue = unique_queue("project")
    repo = git_repository("project")
    (repo.path / "README").write_text("hello\n", encoding="utf-8")
    repo.git("add", "README")
    first = repo.commit("first")
    # The user's own work in progress: a change to a tracked file and an untracked file.
    (repo.path / "README").write_text("work in progress\n", encoding="utf-8")
    (repo.path / "scratch.txt").write_text("notes\n", encoding="utf-8")
    status_before = repo.git("status", "--porcelain")
    gates, pids, builds_dir = tmp_path / "gates", tmp_path / "pids", tmp_path / "builds"
    gates.mkdir()
    pids.mkdir()
    # Each build says it runs (its pid), then waits until the test opens its commit's gate.
    command = (
        f"echo $$ > {pids}/$STOVEPIPE_HEAD_SHA.tmp && mv {pids}/$STOVEPIPE_HEAD_SHA.tmp "
        f"{pids}/$STOVEPIPE_HEAD_SHA; "
        f"while [ ! -e {gates}/$STOVEPIPE_HEAD_SHA ]; do sleep 0.02; done"
    )
    config = write_config(tmp_path / "stovepipe.toml", deployment, queue, repo, builds_dir, command)

    def serve() -> Connected:
        return Connected(processes.serve(["--config", str(config)], cwd=tmp_path), queue)

    def build_pid(sha: str) -> int:
        """The pid of the build of ``sha`` once it runs and its server has recorded its
        process: a server killed before that leaves a build no other process can find."""
        wait_until(
            lambda: (pids / sha).exists() and recorded_process(builds_dir, sha),
            f"the build of {sha} runs",
        )
        return int((pids / sha).read_text())

    def kill(server: Connected) -> None:
        server.close()
        server.process.popen.kill()
        server.process.popen.wait(timeout=WAIT)

    server = serve()
    try:
        # 1. Killed while its build runs on: the restarted server follows the build to its end.
        building = server.ingest()
        pid = build_pid(first)
        kill(server)
        assert _running(pid)  # a build leads a session of its own and outlives its server
        server = serve()
        assert server.request(building).state == pb.REQUEST_STATE_PROCESSING
        assert server.state().in_flight == 1  # the running build keeps its slot
        (gates / first).touch()
        assert server.settled(building).state == pb.REQUEST_STATE_SUCCEEDED
        wait_until(lambda: server.state().last_green_uri == uri(first), "the bookmark is set")
        assert server.state().in_flight == 0
        wait_until(lambda: repo.git("rev-parse", "refs/heads/green") == first, "green promoted")

        # 2. Killed with its build (the machine went down): the build is lost, and fails.
        second = repo.commit("second")
        lost = server.ingest()
        pid = build_pid(second)
        kill(server)
        os.killpg(os.getpgid(pid), signal.SIGKILL)
        server = serve()
        assert server.settled(lost).state == pb.REQUEST_STATE_FAILED
        wait_until(lambda: server.state().in_flight == 0, "the lost build's slot is freed")
        assert "lost" in server.process.output()
        state = server.state()
        assert (state.last_green_uri, state.last_green_request_id) == (uri(first), building)
        assert repo.git("rev-parse", "refs/heads/green") == first

        # The freed slot builds the next head.
        third = repo.commit("third")
        (gates / third).touch()
        after = server.settled(server.ingest())
        assert after.state == pb.REQUEST_STATE_SUCCEEDED
        wait_until(lambda: server.state().last_green_uri == uri(third), "the bookmark moves on")
        wait_until(lambda: repo.git("rev-parse", "refs/heads/green") == third, "green follows")
        assert server.state().in_flight == 0
        server.close()
        assert server.process.stop(timeout=WAIT) == 0, server.process.output()
    finally:
        server.close()
        for sha in repo.git("rev-list", "--all").split():
            (gates / sha).touch()  # no build outlives the test waiting for its gate

    # The user's working tree, index and checked-out branch are as they were.
    assert repo.git("status", "--porcelain") == status_before
    assert (repo.path / "README").read_text() == "work in progress\n"
    assert repo.git("symbolic-ref", "HEAD") == "refs/heads/main"
    assert repo.git("rev-parse", "HEAD") == third
