"""The whole pipeline behind a real server, on every storage backend: heads ingested over
gRPC are built, superseded, rebuilt in full after a history rewrite, timed out and recorded,
and GetQueue's bookmark, the promotion branch and the metrics follow.

The end-to-end tests build a git repository made in a temporary directory with the
``command`` runner: each build runs a shell command in a clean checkout of its commit. Every
test runs once per storage backend (see ``storage_backend_url`` in conftest) under a queue
name of its own; a server killed mid-build is in test_pipeline_restart.py.
"""

from __future__ import annotations

import pathlib
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stovepipe.buildrunner import BuildReport, BuildRunner
from stovepipe.buildrunner.command import CommandBuildRunner
from stovepipe.buildrunner.fake import FakeBuildRunner
from stovepipe.client import StovepipeClient
from stovepipe.entity import BuildStatus
from stovepipe.messaging.inprocess import InProcessMessaging
from stovepipe.sourcecontrol import SourceControl
from stovepipe.sourcecontrol.fake import FakeSourceControl
from stovepipe.sourcecontrol.git import GitSourceControl
from stovepipe.testing import GitRepository, Running
from stovepipe.v1 import stovepipe_pb2 as pb

StartPipeline = Callable[..., Running]
Launch = Callable[..., Running]
WAIT = 30.0
"""The bound on every wait: generous, for a loaded machine."""

TERMINAL = frozenset(
    {
        pb.REQUEST_STATE_SUPERSEDED,
        pb.REQUEST_STATE_SUCCEEDED,
        pb.REQUEST_STATE_FAILED,
        pb.REQUEST_STATE_CANCELLED,
    }
)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Poll ``condition`` every 20 ms; fail naming ``what`` if it does not hold in time."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(0.02)


def ingest(client: StovepipeClient, queue: str) -> str:
    response: pb.IngestResponse = client.Ingest(pb.IngestRequest(queue=queue), timeout=10)
    return response.id


def request_of(client: StovepipeClient, request_id: str) -> pb.Request:
    response: pb.GetRequestResponse = client.GetRequest(
        pb.GetRequestRequest(id=request_id), timeout=10
    )
    return response.request


def queue_of(client: StovepipeClient, queue: str) -> pb.Queue:
    response: pb.GetQueueResponse = client.GetQueue(pb.GetQueueRequest(queue=queue), timeout=10)
    return response.queue


def settled(client: StovepipeClient, request_id: str) -> pb.Request:
    """The request once it is terminal."""
    wait_until(lambda: request_of(client, request_id).state in TERMINAL, f"{request_id} settles")
    return request_of(client, request_id)


def processing(client: StovepipeClient, request_id: str) -> None:
    """Wait until the request holds a build slot."""
    wait_until(
        lambda: request_of(client, request_id).state == pb.REQUEST_STATE_PROCESSING,
        f"{request_id} takes a build slot",
    )


def commit_files(repo: GitRepository, message: str, **files: str | None) -> str:
    """Commit exactly ``files`` (a ``None`` content removes the file), nothing else the
    working tree holds; return the commit's sha."""
    for name, content in files.items():
        if content is None:
            repo.git("rm", "--quiet", name)
        else:
            (repo.path / name).write_text(content, encoding="utf-8")
            repo.git("add", name)
    repo.git("commit", "--quiet", f"--message={message}")
    return repo.git("rev-parse", "HEAD")


def uri(sha: str) -> str:
    return f"git://local/project/main/{sha}"


def build_ids(builds_dir: pathlib.Path) -> list[str]:
    """The builds the command runner started (one directory each)."""
    if not builds_dir.exists():
        return []
    return [p.name for p in builds_dir.iterdir() if re.fullmatch(r"[0-9a-f]{32}", p.name)]


def start_git_pipeline(
    launch: Launch,
    queue: str,
    repo: GitRepository,
    builds_dir: pathlib.Path,
    command: str,
    *,
    timeout: float = 60.0,
    promote_ref: str | None = None,
) -> Running:
    """A server whose ``queue`` follows ``repo``'s ``main``, built by ``command``."""
    source = GitSourceControl(repo.path, "main", promote_ref=promote_ref)
    runner = CommandBuildRunner(queue, source, command, timeout, builds_dir, kill_grace=1.0)
    return launch({queue: source}, {queue: runner})


@pytest.fixture
def launch(start_pipeline: StartPipeline, storage_backend_url: str) -> Launch:
    """``start_pipeline`` on the storage backend under test."""

    def start(
        sources: Mapping[str, SourceControl], runners: Mapping[str, BuildRunner], **options: Any
    ) -> Running:
        return start_pipeline(sources, runners, storage_url=storage_backend_url, **options)

    return start


@pytest.fixture
def queue(unique_queue: Callable[[str], str]) -> str:
    """The test's queue: a name of its own, as the backend's server is shared."""
    return unique_queue("project")


def test_green_red_green_moves_the_bookmark_and_promotion_branch_and_never_touches_the_working_tree(
    launch: Launch,
    queue: str,
    git_repository: Callable[..., GitRepository],
    tmp_path: pathlib.Path,
) -> None:
    repo = git_repository("project")
    seen = tmp_path / "seen"
    seen.mkdir()
    first = commit_files(repo, "first", README="hello\n", verdict="pass\n")
    # The user's own work in progress: a change to a tracked file and an untracked file.
    (repo.path / "README").write_text("work in progress\n", encoding="utf-8")
    (repo.path / "scratch.txt").write_text("notes\n", encoding="utf-8")
    status_before = repo.git("status", "--porcelain")
    command = (
        "echo built > built.txt; "  # written where the build runs, never in the working tree
        f'printf %s "$STOVEPIPE_BASE_SHA" > {seen}/base-of-$STOVEPIPE_HEAD_SHA; '
        'test "$(cat verdict)" = pass && test "$(cat README)" = hello'
    )
    builds_dir = tmp_path / "builds"
    running = start_git_pipeline(launch, queue, repo, builds_dir, command, promote_ref="green")
    client = running.client

    green = settled(client, ingest(client, queue))
    assert green.state == pb.REQUEST_STATE_SUCCEEDED
    assert green.build_strategy == pb.BUILD_STRATEGY_FULL
    # The record stage moves the bookmark just after the request settles.
    wait_until(lambda: queue_of(client, queue).last_green_uri == uri(first), "the bookmark is set")
    assert queue_of(client, queue) == pb.Queue(
        name=queue,
        latest_request_id=green.id,
        last_green_uri=uri(first),
        last_green_request_id=green.id,
    )
    wait_until(lambda: repo.git("rev-parse", "refs/heads/green") == first, "green is promoted")

    red_sha = commit_files(repo, "break it", verdict="fail\n")
    red = settled(client, ingest(client, queue))
    assert red.state == pb.REQUEST_STATE_FAILED
    assert (red.build_strategy, red.base_uri) == (pb.BUILD_STRATEGY_INCREMENTAL, uri(first))
    assert (seen / f"base-of-{red_sha}").read_text() == first
    state = queue_of(client, queue)
    assert (state.last_green_uri, state.last_green_request_id) == (uri(first), green.id)
    assert repo.git("rev-parse", "refs/heads/green") == first  # red never promotes

    fixed = commit_files(repo, "fix it", verdict="pass\n")
    green_again = settled(client, ingest(client, queue))
    assert green_again.state == pb.REQUEST_STATE_SUCCEEDED
    assert green_again.base_uri == uri(first)  # the bookmark, which the red commit did not move
    wait_until(
        lambda: queue_of(client, queue).last_green_uri == uri(fixed), "the bookmark moves on"
    )
    state = queue_of(client, queue)
    assert (state.last_green_uri, state.last_green_request_id) == (uri(fixed), green_again.id)
    assert state.in_flight == 0
    wait_until(lambda: repo.git("rev-parse", "refs/heads/green") == fixed, "green follows")

    # The user's working tree, index and checked-out branch are as they were.
    assert repo.git("status", "--porcelain") == status_before
    assert (repo.path / "README").read_text() == "work in progress\n"
    assert not (repo.path / "built.txt").exists()
    assert repo.git("symbolic-ref", "HEAD") == "refs/heads/main"
    assert repo.git("rev-parse", "HEAD") == fixed
    assert len(build_ids(builds_dir)) == 3


def test_a_slow_build_with_two_newer_heads_arriving_supersedes_the_middle_one(
    launch: Launch,
    queue: str,
    git_repository: Callable[..., GitRepository],
    tmp_path: pathlib.Path,
) -> None:
    repo = git_repository("project")
    gates = tmp_path / "gates"
    gates.mkdir()
    # Each build waits until the test opens its commit's gate (the runner's timeout bounds it).
    command = f"while [ ! -e {gates}/$STOVEPIPE_HEAD_SHA ]; do sleep 0.02; done"
    builds_dir = tmp_path / "builds"
    running = start_git_pipeline(launch, queue, repo, builds_dir, command)
    client = running.client
    try:
        slow_sha = commit_files(repo, "slow", file="1\n")
        slow = ingest(client, queue)
        processing(client, slow)
        commit_files(repo, "middle", file="2\n")
        middle = ingest(client, queue)
        newest_sha = commit_files(repo, "newest", file="3\n")
        newest = ingest(client, queue)
        assert request_of(client, middle).state == pb.REQUEST_STATE_ACCEPTED  # no free slot
        wait_until(lambda: queue_of(client, queue).in_flight == 1, "the slow build holds the slot")
        (gates / newest_sha).touch()
        (gates / slow_sha).touch()

        assert settled(client, slow).state == pb.REQUEST_STATE_SUCCEEDED
        superseded = settled(client, middle)
        assert superseded.state == pb.REQUEST_STATE_SUPERSEDED
        assert superseded.build_strategy == pb.BUILD_STRATEGY_UNSPECIFIED  # never built
        built = settled(client, newest)
        assert built.state == pb.REQUEST_STATE_SUCCEEDED
        # The freed slot wakes the newest head before the record stage moves the bookmark,
        # so it is built incrementally from the slow head or in full, whichever came first.
        assert (built.build_strategy, built.base_uri) in {
            (pb.BUILD_STRATEGY_INCREMENTAL, uri(slow_sha)),
            (pb.BUILD_STRATEGY_FULL, ""),
        }
        wait_until(
            lambda: queue_of(client, queue).last_green_uri == uri(newest_sha), "bookmark moves"
        )
        state = queue_of(client, queue)
        assert (state.last_green_uri, state.in_flight) == (uri(newest_sha), 0)
        assert len(build_ids(builds_dir)) == 2  # the middle head was never built
    finally:
        for sha in repo.git("rev-list", "--all").split():
            (gates / sha).touch()  # no build outlives the test waiting for its gate


def test_after_a_history_rewrite_the_next_build_is_full_and_bookmark_and_promotion_follow(
    launch: Launch,
    queue: str,
    git_repository: Callable[..., GitRepository],
    tmp_path: pathlib.Path,
) -> None:
    repo = git_repository("project")
    seen = tmp_path / "seen"
    seen.mkdir()
    command = f'printf %s "$STOVEPIPE_BASE_SHA" > {seen}/base-of-$STOVEPIPE_HEAD_SHA'
    running = start_git_pipeline(
        launch, queue, repo, tmp_path / "builds", command, promote_ref="green"
    )
    client = running.client

    first = commit_files(repo, "first", file="1\n")
    assert settled(client, ingest(client, queue)).state == pb.REQUEST_STATE_SUCCEEDED
    wait_until(lambda: queue_of(client, queue).last_green_uri == uri(first), "bookmark on first")
    second = commit_files(repo, "second", file="2\n")
    built = settled(client, ingest(client, queue))
    assert (built.state, built.build_strategy) == (
        pb.REQUEST_STATE_SUCCEEDED,
        pb.BUILD_STRATEGY_INCREMENTAL,
    )
    wait_until(lambda: queue_of(client, queue).last_green_uri == uri(second), "bookmark moves")
    wait_until(lambda: repo.git("rev-parse", "refs/heads/green") == second, "green on second")

    # Force the ref back onto another line: the bookmark is no ancestor of the new head.
    repo.git("reset", "--hard", "--quiet", first)
    rewritten = commit_files(repo, "second, rewritten", file="2, rewritten\n")
    after = settled(client, ingest(client, queue))
    assert after.state == pb.REQUEST_STATE_SUCCEEDED
    assert (after.build_strategy, after.base_uri) == (pb.BUILD_STRATEGY_FULL, "")
    assert (seen / f"base-of-{rewritten}").read_text() == ""  # the build was told: full
    wait_until(lambda: queue_of(client, queue).last_green_uri == uri(rewritten), "bookmark follows")
    assert queue_of(client, queue).last_green_request_id == after.id
    # The promotion branch moves to the new line, though that is not a fast-forward.
    wait_until(lambda: repo.git("rev-parse", "refs/heads/green") == rewritten, "green follows")
    assert queue_of(client, queue).in_flight == 0


def test_a_build_that_times_out_ends_failed_frees_the_slot_and_ends_its_processes(
    launch: Launch,
    queue: str,
    git_repository: Callable[..., GitRepository],
    tmp_path: pathlib.Path,
) -> None:
    repo = git_repository("project")
    pids = tmp_path / "pids"
    pids.mkdir()
    # A commit with a file named "slow" builds for a minute; the timeout is 5 s, which the
    # fast build (a clone, a checkout and two shells) stays well inside on any machine.
    command = f"if [ -e slow ]; then echo $$ > {pids}/$STOVEPIPE_HEAD_SHA; exec sleep 60; fi"
    running = start_git_pipeline(launch, queue, repo, tmp_path / "builds", command, timeout=5.0)
    client = running.client

    slow_sha = commit_files(repo, "slow", slow="")
    slow = ingest(client, queue)
    started = time.monotonic()
    timed_out = settled(client, slow)
    assert timed_out.state == pb.REQUEST_STATE_FAILED
    assert time.monotonic() - started < 20  # ended by its timeout, not by the sleep's end
    wait_until(lambda: queue_of(client, queue).in_flight == 0, "the slot is freed")
    assert queue_of(client, queue).last_green_uri == ""  # a timed-out build is not green
    pid = int((pids / slow_sha).read_text())
    wait_until(lambda: not _running(pid), "the timed-out build's process ends")

    fast_sha = commit_files(repo, "fast", slow=None)
    fast = settled(client, ingest(client, queue))
    assert fast.state == pb.REQUEST_STATE_SUCCEEDED  # the freed slot builds the next head
    wait_until(
        lambda: queue_of(client, queue).last_green_uri == uri(fast_sha), "the bookmark is set"
    )


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie, waiting to be reaped, is not)."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def test_a_queue_without_a_build_runner_is_ingest_only(
    launch: Launch, unique_queue: Callable[[str], str]
) -> None:
    built_queue, plain_queue = unique_queue("built"), unique_queue("plain")
    built = FakeSourceControl(["c1"], name="built")
    plain = FakeSourceControl(["c1"], name="plain")
    running = launch({built_queue: built, plain_queue: plain}, {built_queue: FakeBuildRunner()})
    client = running.client
    plain_id = ingest(client, plain_queue)
    assert settled(client, ingest(client, built_queue)).state == pb.REQUEST_STATE_SUCCEEDED
    messaging = running.server.messaging
    assert isinstance(messaging, InProcessMessaging)
    assert messaging.wait_until_idle(WAIT)
    assert request_of(client, plain_id).state == pb.REQUEST_STATE_ACCEPTED
    assert queue_of(client, plain_queue) == pb.Queue(name=plain_queue, latest_request_id=plain_id)
    for topic in ("process", "build", "buildsignal", "record"):
        assert messaging.dead_letters(topic) == []


def test_two_build_slots_build_two_heads_at_once(launch: Launch, queue: str) -> None:
    source = FakeSourceControl(["c1"], name="mono")
    runner = GatedBuildRunner()
    running = launch({queue: source}, {queue: runner}, max_concurrent=2)
    client = running.client
    first = ingest(client, queue)
    processing(client, first)
    source.push("c2")
    second = ingest(client, queue)
    processing(client, second)
    # The request moves to processing just before its slot is counted.
    wait_until(lambda: queue_of(client, queue).in_flight == 2, "both slots are taken")
    runner.open("fake://mono/c1")
    runner.open("fake://mono/c2")
    assert settled(client, first).state == pb.REQUEST_STATE_SUCCEEDED
    assert settled(client, second).state == pb.REQUEST_STATE_SUCCEEDED
    wait_until(lambda: queue_of(client, queue).in_flight == 0, "both slots are freed")
    wait_until(lambda: queue_of(client, queue).last_green_uri == "fake://mono/c2", "bookmark on c2")


class GatedBuildRunner:
    """Builds that run until the test opens their gate (by head URI), then end as
    ``outcomes`` says (default ``succeeded``). Thread-safe."""

    def __init__(self, outcomes: Mapping[str, BuildStatus] | None = None) -> None:
        self._outcomes = dict(outcomes or {})
        self._inner = FakeBuildRunner(BuildStatus.RUNNING)
        self._lock = threading.Lock()
        self._heads: dict[str, str] = {}
        self._open: set[str] = set()

    def open(self, head_uri: str) -> None:
        with self._lock:
            self._open.add(head_uri)

    def trigger(self, request_id: str, base_uri: str | None, head_uri: str) -> str:
        build_id = self._inner.trigger(request_id, base_uri, head_uri)
        with self._lock:
            self._heads[build_id] = head_uri
        return build_id

    def status(self, build_id: str) -> BuildReport:
        report = self._inner.status(build_id)
        with self._lock:
            if report.status is BuildStatus.RUNNING and self._heads[build_id] in self._open:
                outcome = self._outcomes.get(self._heads[build_id], BuildStatus.SUCCEEDED)
                return BuildReport(outcome, "", "" if outcome is BuildStatus.SUCCEEDED else "red")
        return report

    def cancel(self, build_id: str) -> None:
        self._inner.cancel(build_id)


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_builds_by_outcome_and_superseded_requests_and_report_queue_gauges(
    launch: Launch, queue: str
) -> None:
    now = time.time()
    source = FakeSourceControl(["c1"], name="mono", commit_times={"c1": now - 500})
    runner = GatedBuildRunner({"fake://mono/c2": BuildStatus.FAILED})
    sources: dict[str, SourceControl] = {queue: source}
    runners: dict[str, BuildRunner] = {queue: runner}
    running = launch(sources, runners, metrics_listen="127.0.0.1:0")
    client = running.client
    port = running.server.metrics_port
    assert port is not None

    def sample(name: str, **labels: str) -> float | None:
        return scrape(port).get((name, frozenset({"queue": queue, **labels}.items())))

    assert sample("stovepipe_queue_in_flight") == 0  # configured, nothing ingested yet
    assert sample("stovepipe_queue_last_green_age_seconds") is None  # no green yet

    first = ingest(client, queue)
    processing(client, first)
    wait_until(lambda: sample("stovepipe_queue_in_flight") == 1, "the gauge counts the slot")
    runner.open("fake://mono/c1")
    assert settled(client, first).state == pb.REQUEST_STATE_SUCCEEDED

    source.push("c2", commit_time=now - 100)
    red = ingest(client, queue)
    processing(client, red)
    source.push("c3", commit_time=now - 50)
    middle = ingest(client, queue)
    source.push("c4", commit_time=now - 10)
    newest = ingest(client, queue)
    runner.open("fake://mono/c2")
    runner.open("fake://mono/c4")
    assert settled(client, red).state == pb.REQUEST_STATE_FAILED
    assert settled(client, middle).state == pb.REQUEST_STATE_SUPERSEDED
    assert settled(client, newest).state == pb.REQUEST_STATE_SUCCEEDED
    wait_until(
        lambda: queue_of(client, queue).last_green_uri == "fake://mono/c4", "the bookmark moves"
    )

    builds = "stovepipe_builds_total"
    assert sample(builds, outcome="succeeded") == 2
    assert sample(builds, outcome="failed") == 1
    settled_total = "stovepipe_requests_settled_total"
    assert sample(settled_total, state="superseded") == 1
    assert sample(settled_total, state="succeeded") == 2
    assert sample(settled_total, state="failed") == 1
    assert sample("stovepipe_queue_in_flight") == 0
    age = sample("stovepipe_queue_last_green_age_seconds")
    assert age is not None
    assert 10 <= age < 10 + WAIT * 4  # c4 was committed 10 s before the test began
