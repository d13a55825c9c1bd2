"""The pipeline's overhead: from ingest of a new head to its verdict, less the build's own time.

    python -m benchmarks.bench_pipeline [--count N] [--backend NAME ...] [--poll-interval S ...]

Per backend (``memory``, ``sqlite``, and ``mysql``, ``redis``, ``etcd`` when
``STOVEPIPE_TEST_MYSQL_URL``, ``STOVEPIPE_TEST_REDIS_URL``, ``STOVEPIPE_TEST_ETCD_URL`` name
a server) and per buildsignal poll interval, a server runs in a process of its own, assembled
from a configuration file by the very builders ``stovepipe serve`` uses (its storage, the
messaging queue that goes with that storage, a ``git`` queue on a repository made in a
temporary directory, built by the ``command`` runner with the command ``true``). The one
difference from ``stovepipe serve`` is the buildsignal poll interval, which only the server's
constructor takes.

For each head, one at a time: commit, then (timed) ``Ingest`` over gRPC and ``GetRequest``
every ``--client-poll`` seconds until the request is terminal (it must be ``succeeded``);
then (untimed) wait for the queue's bookmark to reach it, so the next head starts from a
quiet pipeline. Columns, in milliseconds, p50/p90/max over the heads (nearest rank):

* total: Ingest sent -> terminal state seen (the client's monotonic clock);
* build: the command runner's own time, read from the build's state directory: from the
  trigger (``build.json``'s ``created``) to the ``exit`` file the build's wrapper writes when
  the command ends (its mtime): the build's bookkeeping, the clean checkout, starting the
  wrapper shell and ``/bin/sh -c true``;
* overhead: total - build, head by head;
* before, after (p50): Ingest sent -> trigger, and ``exit`` written -> verdict seen (wall
  clocks of two processes on one machine);
* alone (p50, not subtracted, a check on build): the same clean checkout and
  ``/bin/sh -c true`` done by this process between heads, without the server.

Managed servers are kept apart from anything else on them: MySQL gets a database of its own
(made, migrated and dropped here), Redis a key prefix of its own for storage and messaging
(deleted at the end), etcd a key prefix of its own (left behind: there is no prefix delete).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Iterator, Sequence

import grpc

from stovepipe import config as configuration
from stovepipe.client import StovepipeClient
from stovepipe.controller.buildsignal import DEFAULT_POLL_INTERVAL
from stovepipe.messaging.registry import default_messaging_url, with_query
from stovepipe.metrics import Metrics
from stovepipe.redaction import redact
from stovepipe.server import (
    StovepipeServer,
    build_messaging,
    build_runners,
    build_sourcecontrol,
    max_concurrent_of,
)
from stovepipe.sourcecontrol.git import GitSourceControl
from stovepipe.storage import open_storage
from stovepipe.testing import GitRepository, run_cli
from stovepipe.v1 import stovepipe_pb2 as pb

BACKENDS = ("memory", "sqlite", "mysql", "redis", "etcd")
SMALL_POLL_INTERVAL = 0.01
TERMINAL = frozenset(
    {
        pb.REQUEST_STATE_SUPERSEDED,
        pb.REQUEST_STATE_SUCCEEDED,
        pb.REQUEST_STATE_FAILED,
        pb.REQUEST_STATE_CANCELLED,
    }
)
MEDIANS = ("before", "after", "alone")
COARSE_CLOCK = 5  # CLOCK_REALTIME_COARSE, which stamps file times on Linux


def serve(
    config_path: str, poll_interval: float, reply: multiprocessing.connection.Connection
) -> None:
    """The server process: what ``stovepipe serve --config CONFIG_PATH`` builds, with the
    buildsignal stage polling every ``poll_interval`` seconds; serves until the parent
    closes the pipe."""
    import logging

    config = configuration.load(config_path, environ={})
    logging.basicConfig(level=config.log_level.upper())
    sources = build_sourcecontrol(config.queues)
    runners = build_runners(config, sources)
    metrics = Metrics()
    server = StovepipeServer(
        open_storage(config.storage_url),
        sources,
        runners=runners,
        max_concurrent=max_concurrent_of(config),
        poll_interval=poll_interval,
        listen=config.listen,
        max_workers=config.max_workers,
        metrics=metrics,
        messaging=build_messaging(config, metrics),
    )
    server.start()
    reply.send(server.address)
    with contextlib.suppress(EOFError):
        reply.recv()  # returns (or raises EOFError) when the parent is done
    server.stop(grace=1)


@dataclasses.dataclass(frozen=True)
class Sample:
    """One head, in seconds."""

    total: float
    build: float
    before: float
    after: float
    alone: float

    @property
    def overhead(self) -> float:
        return self.total - self.build


@dataclasses.dataclass(frozen=True)
class Target:
    """A backend's storage URL and messaging URL (empty: the storage's default)."""

    storage_url: str
    messaging_url: str = ""


def url_with(url: str, **options: str) -> str:
    """``url`` with these query options added (replacing any of the same name)."""
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    query.update(options)
    return with_query(url, urllib.parse.urlencode(query))


@contextlib.contextmanager
def mysql_database(server_url: str) -> Iterator[str]:
    """A database of this run's own on the server ``server_url`` names, with the schema;
    dropped at the end."""
    import pymysql

    parts = urllib.parse.urlsplit(server_url)
    database = f"stovepipe_bench_{uuid.uuid4().hex[:12]}"
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
            url = urllib.parse.urlunsplit(parts._replace(path=f"/{database}"))
            migrated = run_cli("migrate", url, timeout=120)
            if migrated.returncode != 0:
                raise RuntimeError(f"stovepipe migrate failed: {migrated.stderr.strip()}")
            yield url
        finally:
            cursor.execute(f"DROP DATABASE {database}")


@contextlib.contextmanager
def redis_prefix(server_url: str) -> Iterator[str]:
    """A key prefix of this run's own; its keys are deleted at the end."""
    import redis

    prefix = f"stovepipe:bench-{uuid.uuid4().hex[:12]}"
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(with_query(server_url, ""))
        with client:
            for name in client.scan_iter(match=prefix + "*"):
                client.delete(name)


@contextlib.contextmanager
def backend_targets(backend: str, tmp: pathlib.Path, runs: int) -> Iterator[list[Target] | None]:
    """``runs`` targets of ``backend``, none sharing state; None if no server is named."""
    if backend == "memory":
        yield [Target("memory://") for _ in range(runs)]
        return
    if backend == "sqlite":
        yield [Target(f"sqlite:///{tmp / f'stovepipe-{n}.db'}") for n in range(runs)]
        return
    server_url = os.environ.get(f"STOVEPIPE_TEST_{backend.upper()}_URL")
    if not server_url:
        yield None
    elif backend == "mysql":
        with mysql_database(server_url) as url:
            yield [Target(url) for _ in range(runs)]  # each run has a queue of its own
    elif backend == "redis":
        with redis_prefix(server_url) as prefix:
            yield [
                Target(
                    url_with(server_url, prefix=f"{prefix}-{n}:"),
                    # The default messaging (Redis streams on the same server), kept apart
                    # from other users of the server as its default prefix is from storage's.
                    url_with(default_messaging_url(server_url), prefix=f"{prefix}-{n}:mq:"),
                )
                for n in range(runs)
            ]
    else:
        prefix = f"stovepipe-bench-{uuid.uuid4().hex[:12]}"
        yield [Target(url_with(server_url, prefix=f"{prefix}-{n}/")) for n in range(runs)]


def write_config(directory: pathlib.Path, target: Target, queue: str, repo: pathlib.Path) -> str:
    """A configuration file for one server; its path."""
    lines = [
        'listen = "127.0.0.1:0"',
        f"storage_url = {json.dumps(target.storage_url)}",
        f"messaging_url = {json.dumps(target.messaging_url)}",
        'log_level = "warning"',
        f"builds_dir = {json.dumps(str(directory / 'builds'))}",
        f"[queues.{json.dumps(queue)}]",
        'type = "git"',
        f"path = {json.dumps(str(repo))}",
        'ref = "main"',
        f"[queues.{json.dumps(queue)}.build]",
        'type = "command"',
        'command = "true"',
    ]
    path = directory / "stovepipe.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


class BuildDirectories:
    """The command runner's state directories under ``builds_dir``, by request id."""

    def __init__(self, builds_dir: pathlib.Path) -> None:
        self._builds_dir = builds_dir
        self._seen: dict[str, pathlib.Path] = {}

    def find(self, request_id: str) -> pathlib.Path:
        if request_id not in self._seen:
            for entry in self._builds_dir.iterdir():
                meta = entry / "build.json"
                if entry.name.startswith(".") or entry in self._seen.values():
                    continue
                if meta.exists():
                    self._seen[json.loads(meta.read_text())["request_id"]] = entry
        return self._seen[request_id]

    def span(self, request_id: str) -> tuple[float, float]:
        """Wall-clock seconds of the build's trigger and of its exit status being written."""
        directory = self.find(request_id)
        created = float(json.loads((directory / "build.json").read_text())["created"])
        return created, (directory / "exit").stat().st_mtime_ns / 1e9


def await_state(
    client: StovepipeClient, request_id: str, poll: float, deadline: float
) -> pb.Request:
    """The request once terminal, asked every ``poll`` seconds; RuntimeError after
    ``deadline`` (``time.perf_counter()``)."""
    while True:
        reply: pb.GetRequestResponse = client.GetRequest(
            pb.GetRequestRequest(id=request_id), timeout=10
        )
        if reply.request.state in TERMINAL:
            return reply.request
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{request_id}: no verdict in time")
        time.sleep(poll)


def await_bookmark(
    client: StovepipeClient, queue: str, request_id: str, poll: float, deadline: float
) -> None:
    """Return once the queue's last green request is ``request_id``; RuntimeError after
    ``deadline`` (``time.perf_counter()``)."""
    while True:
        reply: pb.GetQueueResponse = client.GetQueue(pb.GetQueueRequest(queue=queue), timeout=10)
        if reply.queue.last_green_request_id == request_id:
            return
        if time.perf_counter() > deadline:
            raise RuntimeError(f"the bookmark of {queue} did not reach {request_id} in time")
        time.sleep(poll)


def build_alone(source: GitSourceControl, uri: str, checkout: pathlib.Path) -> float:
    """Seconds this process takes for what the command runner does for a build, without
    it: a clean checkout of ``uri`` (the runner's own call) and ``/bin/sh -c true`` in it."""
    start = time.perf_counter()
    source.checkout(uri, checkout)
    subprocess.run(["/bin/sh", "-c", "true"], cwd=checkout, check=True)
    elapsed = time.perf_counter() - start
    shutil.rmtree(checkout)
    return elapsed


def measure_heads(
    address: str,
    repo: GitRepository,
    queue: str,
    builds: BuildDirectories,
    count: int,
    *,
    client_poll: float,
    timeout: float,
) -> list[Sample]:
    """Commit, ingest and await the verdict of ``count`` heads, one at a time."""
    samples = []
    source = GitSourceControl(repo.path, "main")
    with grpc.insecure_channel(address) as channel:
        client = StovepipeClient(channel)
        for n in range(count):
            repo.commit(f"head {n}")
            wall_start = time.time()
            start = time.perf_counter()
            ingested: pb.IngestResponse = client.Ingest(pb.IngestRequest(queue=queue), timeout=10)
            request = await_state(client, ingested.id, client_poll, start + timeout)
            end = time.perf_counter()
            wall_end = time.time()
            if request.state != pb.REQUEST_STATE_SUCCEEDED:
                state = pb.RequestState.Name(request.state)
                raise RuntimeError(f"{ingested.id} ended {state}, not succeeded")
            # Untimed from here: let the record stage finish before the next head.
            await_bookmark(client, queue, ingested.id, client_poll, time.perf_counter() + timeout)
            triggered, exited = builds.span(ingested.id)
            samples.append(
                Sample(
                    total=end - start,
                    build=exited - triggered,
                    before=triggered - wall_start,
                    after=wall_end - exited,
                    alone=build_alone(source, ingested.uri, repo.path.parent / "alone"),
                )
            )
    return samples


def run_backend(
    target: Target,
    tmp: pathlib.Path,
    poll_interval: float,
    args: argparse.Namespace,
) -> list[Sample]:
    """Start a server on ``target`` and measure ``args.warmup`` + ``args.count`` heads."""
    tmp.mkdir()
    repo = GitRepository(tmp / "project", "main")
    repo.commit("initial")
    queue = f"bench-{uuid.uuid4().hex[:8]}/main"
    config_path = write_config(tmp, target, queue, repo.path)
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    server = context.Process(target=serve, args=(config_path, poll_interval, child), daemon=True)
    server.start()
    child.close()
    try:
        if not parent.poll(60):
            raise RuntimeError("the server did not start within 60 s")
        address: str = parent.recv()  # EOFError if the server failed (its error is printed)
        builds = BuildDirectories(tmp / "builds")

        def measure(count: int) -> list[Sample]:
            return measure_heads(
                address,
                repo,
                queue,
                builds,
                count,
                client_poll=args.client_poll,
                timeout=args.timeout,
            )

        measure(args.warmup)
        return measure(args.count)
    finally:
        parent.close()
        server.join(timeout=15)
        if server.is_alive():
            server.kill()
            server.join(timeout=5)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(math.ceil(fraction * len(ordered)) - 1, 0)]


def spread(values: Sequence[float]) -> str:
    """p50/p90/max in milliseconds."""
    return "/".join(
        f"{1000 * v:.1f}" for v in (percentile(values, 0.5), percentile(values, 0.9), max(values))
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20, help="heads measured per row (default 20)")
    parser.add_argument("--warmup", type=int, default=2, help="heads before those (default 2)")
    parser.add_argument(
        "--backend",
        action="append",
        choices=BACKENDS,
        help="repeatable (default: every one; mysql, redis and etcd need their "
        "STOVEPIPE_TEST_<NAME>_URL)",
    )
    parser.add_argument(
        "--poll-interval",
        action="append",
        type=float,
        help="buildsignal poll interval, seconds, repeatable "
        f"(default: {DEFAULT_POLL_INTERVAL:g}, the server's default, and {SMALL_POLL_INTERVAL:g})",
    )
    parser.add_argument(
        "--client-poll",
        type=float,
        default=0.002,
        help="seconds between two GetRequest calls awaiting a verdict (default 0.002)",
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="bound on each head's wait (default 30 s)"
    )
    args = parser.parse_args()
    backends: list[str] = args.backend or list(BACKENDS)
    intervals: list[float] = args.poll_interval or [DEFAULT_POLL_INTERVAL, SMALL_POLL_INTERVAL]

    rows: list[tuple[str, float, list[Sample]]] = []
    with tempfile.TemporaryDirectory() as directory:
        tmp = pathlib.Path(directory)
        for backend in backends:
            with backend_targets(backend, tmp / backend, len(intervals)) as targets:
                if targets is None:
                    print(f"({backend}: set STOVEPIPE_TEST_{backend.upper()}_URL to include it)")
                    continue
                (tmp / backend).mkdir(exist_ok=True)
                for n, (interval, target) in enumerate(zip(intervals, targets, strict=True)):
                    messaging = target.messaging_url or default_messaging_url(target.storage_url)
                    print(
                        f"{backend}: storage {redact(target.storage_url)}, messaging "
                        f"{redact(messaging)}, buildsignal poll {interval:g} s",
                        flush=True,
                    )
                    samples = run_backend(target, tmp / backend / f"run-{n}", interval, args)
                    rows.append((backend, interval, samples))
    if not rows:
        return 1

    print(
        f"\nIngest -> verdict of a new head built by `true`, {args.count} heads per row, "
        "one at a time; ms, p50/p90/max (nearest rank)"
    )
    print(
        f"{'backend':<8}{'poll s':>7}  {'total':>20}  {'build':>17}  {'overhead':>20}"
        f"  {'before':>6}  {'after':>6}  {'alone':>6}"
    )
    for backend, interval, samples in rows:
        medians = (1000 * percentile([getattr(s, f) for s in samples], 0.5) for f in MEDIANS)
        print(
            f"{backend:<8}{interval:>7g}  {spread([s.total for s in samples]):>20}"
            f"  {spread([s.build for s in samples]):>17}"
            f"  {spread([s.overhead for s in samples]):>20}"
            + "".join(f"  {median:>6.1f}" for median in medians)
        )
    try:
        tick = f"{1000 * time.clock_getres(COARSE_CLOCK):g} ms"
    except OSError:  # not Linux
        tick = "a clock tick"
    print(
        "\ntotal: Ingest sent -> terminal state seen, GetRequest asked every "
        f"{1000 * args.client_poll:g} ms (so seen up to that, plus one call, late)."
        "\nbuild (subtracted): the command runner's trigger (build.json `created`) -> the "
        "build's `exit` file written (its mtime): bookkeeping, the clean checkout, the "
        f"wrapper shell and `true`. File times tick every {tick} here: build may read "
        "up to that short, overhead that long."
        "\noverhead: total - build, head by head."
        "\nbefore, after, alone (p50): Ingest sent -> trigger; `exit` written -> verdict "
        "seen; the same checkout and `/bin/sh -c true` done by this process, between heads."
        "\npoll s: the buildsignal stage's wait between two looks at a running build "
        f"({DEFAULT_POLL_INTERVAL:g} s, the server's default; `stovepipe serve` has no "
        "setting for it, hence servers built here, by its builders, with the interval "
        "passed to StovepipeServer)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
