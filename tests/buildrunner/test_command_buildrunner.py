"""CommandBuildRunner against real git repositories and real processes.

Other OS processes sharing the builds directory are real processes too
(``child_runner.py``); every wait polls with a deadline.
"""

from __future__ import annotations

import json
import os
import select
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stovepipe.buildrunner import BuildReport, NotFound
from stovepipe.buildrunner.command import CommandBuildRunner
from stovepipe.entity import BuildStatus
from stovepipe.sourcecontrol import SourceControl
from stovepipe.sourcecontrol.git import GitSourceControl
from stovepipe.testing import GitRepository

QUEUE = "monorepo/main"
PREFIX = "git://local/monorepo/main/"
CHILD = Path(__file__).with_name("child_runner.py")
WAIT = 30.0

MakeRunner = Callable[..., CommandBuildRunner]


@pytest.fixture
def repo(tmp_path: Path) -> GitRepository:
    repo = GitRepository(tmp_path / "monorepo")
    (repo.path / "a.txt").write_text("first\n")
    repo.git("add", "a.txt")
    repo.commit("first")
    (repo.path / "a.txt").write_text("second\n")
    repo.git("commit", "--quiet", "--all", "--message=second")
    return repo


@pytest.fixture
def builds(tmp_path: Path) -> Path:
    return tmp_path / "builds"


@pytest.fixture
def make_runner(repo: GitRepository, builds: Path) -> Iterator[MakeRunner]:
    made: list[CommandBuildRunner] = []

    def make(
        command: str,
        *,
        timeout: float = 60.0,
        kill_grace: float = 5.0,
        source: SourceControl | None = None,
        queue: str = QUEUE,
    ) -> CommandBuildRunner:
        runner = CommandBuildRunner(
            queue,
            source or GitSourceControl(repo.path, "main"),
            command,
            timeout,
            builds,
            kill_grace=kill_grace,
        )
        made.append(runner)
        return runner

    yield make
    # Leave no build running behind a test, whichever runner started it.
    for directory in builds.iterdir() if builds.exists() else ():
        for runner in made:
            try:
                runner.cancel(directory.name)
            except NotFound:
                continue
            break


def head(repo: GitRepository) -> str:
    return PREFIX + repo.git("rev-parse", "HEAD")


def wait_for(
    runner: CommandBuildRunner, build_id: str, *statuses: BuildStatus, timeout: float = WAIT
) -> BuildReport:
    """Poll until the build's status is one of ``statuses`` (default: any terminal one)."""
    deadline = time.monotonic() + timeout
    while True:
        report = runner.status(build_id)
        if report.status in statuses or (not statuses and report.status.terminal):
            return report
        if time.monotonic() > deadline:
            raise AssertionError(f"build {build_id} is still {report} after {timeout} s")
        time.sleep(0.02)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def read_pid(path: Path) -> int:
    wait_until(lambda: path.exists() and path.read_text().strip() != "", f"{path}")
    return int(path.read_text())


def q(path: Path) -> str:
    return shlex.quote(str(path))


# -- processes sharing the builds directory ---------------------------------------------------


def spawn_child(
    repo: GitRepository, builds: Path, command: str, request_id: str, *options: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), str(repo.path), str(builds), command, request_id, *options],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def read_line(child: subprocess.Popen[str], timeout: float = WAIT) -> str:
    assert child.stdout is not None
    ready, _, _ = select.select([child.stdout], [], [], timeout)
    if not ready:
        raise AssertionError(f"child {child.pid} printed nothing in {timeout} s")
    line = child.stdout.readline()
    assert line, f"child {child.pid} exited with {child.wait(timeout)}"
    return line.strip()


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for child in started:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=WAIT)
        if child.stdout is not None:
            child.stdout.close()


# -- outcomes ----------------------------------------------------------------------------------


def test_exit_status_zero_succeeds_and_the_log_holds_the_output(
    repo: GitRepository, make_runner: MakeRunner, builds: Path
) -> None:
    runner = make_runner("echo built; echo to-stderr >&2")
    build_id = runner.trigger("r1", None, head(repo))
    report = wait_for(runner, build_id)
    assert report == BuildReport(BuildStatus.SUCCEEDED, str(builds / build_id / "log"), "")
    assert Path(report.log).read_text().splitlines() == ["built", "to-stderr"]


def test_non_zero_exit_status_fails_with_the_status_as_reason(
    repo: GitRepository, make_runner: MakeRunner
) -> None:
    runner = make_runner("echo broken; exit 2")
    build_id = runner.trigger("r1", None, head(repo))
    report = wait_for(runner, build_id)
    assert (report.status, report.reason) == (BuildStatus.FAILED, "exit status 2")
    assert Path(report.log).read_text() == "broken\n"


def test_build_id_is_short_hex_and_deterministic_per_queue_and_request(
    repo: GitRepository, make_runner: MakeRunner, tmp_path: Path
) -> None:
    runner, twin = make_runner("true"), make_runner("true")
    other_queue = make_runner("true", queue="monorepo/release")
    for request_id in ["r1", "request/monorepo/main/12", "ü \u00a0 x" * 40]:
        build_id = runner.trigger(request_id, None, head(repo))
        assert len(build_id.encode()) <= 255
        assert build_id == twin.trigger(request_id, None, head(repo))
        assert build_id != other_queue.trigger(request_id, None, head(repo))
        wait_for(runner, build_id)


def test_environment_names_queue_request_head_and_base_and_hides_server_settings(
    repo: GitRepository, make_runner: MakeRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STOVEPIPE_STORAGE", "mysql://user:secret@db/stovepipe")
    base_sha = repo.git("rev-parse", "HEAD~1")
    head_sha = repo.git("rev-parse", "HEAD")
    runner = make_runner("env | grep '^STOVEPIPE_' | sort")
    incremental = runner.trigger("r1", PREFIX + base_sha, PREFIX + head_sha)
    full = runner.trigger("r2", None, PREFIX + head_sha)
    assert Path(wait_for(runner, incremental).log).read_text().splitlines() == [
        f"STOVEPIPE_BASE_SHA={base_sha}",
        f"STOVEPIPE_BASE_URI={PREFIX}{base_sha}",
        f"STOVEPIPE_HEAD_SHA={head_sha}",
        f"STOVEPIPE_HEAD_URI={PREFIX}{head_sha}",
        f"STOVEPIPE_QUEUE={QUEUE}",
        "STOVEPIPE_REQUEST_ID=r1",
    ]
    assert Path(wait_for(runner, full).log).read_text().splitlines() == [
        "STOVEPIPE_BASE_SHA=",
        "STOVEPIPE_BASE_URI=",
        f"STOVEPIPE_HEAD_SHA={head_sha}",
        f"STOVEPIPE_HEAD_URI={PREFIX}{head_sha}",
        f"STOVEPIPE_QUEUE={QUEUE}",
        "STOVEPIPE_REQUEST_ID=r2",
    ]


# -- the checkout -------------------------------------------------------------------------------


def user_tree(repo: GitRepository) -> tuple[str, bytes, list[tuple[str, str]]]:
    files = sorted(
        (str(path.relative_to(repo.path)), path.read_text())
        for path in repo.path.rglob("*")
        if path.is_file() and ".git" not in path.relative_to(repo.path).parts
    )
    index = (repo.path / ".git" / "index").read_bytes()
    return repo.git("status", "--porcelain", "--untracked-files=all"), index, files


def test_build_runs_in_a_clean_checkout_of_the_head_and_the_working_tree_is_untouched(
    repo: GitRepository, make_runner: MakeRunner, builds: Path
) -> None:
    (repo.path / "a.txt").write_text("dirty, not committed\n")
    (repo.path / "untracked.txt").write_text("untracked\n")
    before = user_tree(repo)
    older = PREFIX + repo.git("rev-parse", "HEAD~1")
    runner = make_runner(
        'echo "pwd=$(pwd)"; echo "head=$(git rev-parse HEAD)"; '
        "git status --porcelain --untracked-files=all; ls -A; cat a.txt; echo made > new.txt"
    )
    build_id = runner.trigger("r1", None, older)
    report = wait_for(runner, build_id)
    assert report.status is BuildStatus.SUCCEEDED
    checkout = builds / build_id / "checkout"
    assert Path(report.log).read_text().splitlines() == [
        f"pwd={checkout}",
        f"head={repo.git('rev-parse', 'HEAD~1')}",
        ".git",
        "a.txt",
        "first",
    ]
    assert user_tree(repo) == before
    assert not checkout.is_relative_to(repo.path)


def test_checkout_is_removed_when_the_build_ends_and_the_log_is_kept(
    repo: GitRepository, make_runner: MakeRunner, builds: Path
) -> None:
    runner = make_runner("echo done")
    build_id = runner.trigger("r1", None, head(repo))
    wait_for(runner, build_id)
    wait_until(lambda: not (builds / build_id / "checkout").exists(), "the checkout's removal")
    assert (builds / build_id / "log").read_text() == "done\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="permissions do not bind root")
def test_checkout_holding_read_only_directories_is_removed_too(
    repo: GitRepository, make_runner: MakeRunner, builds: Path
) -> None:
    runner = make_runner("mkdir -p cache/module && touch cache/module/f && chmod -R a-w cache")
    build_id = runner.trigger("r1", None, head(repo))
    assert wait_for(runner, build_id).status is BuildStatus.SUCCEEDED
    wait_until(lambda: not (builds / build_id / "checkout").exists(), "the checkout's removal")


def test_checkout_failure_fails_the_build_with_the_reason_in_status_and_log(
    repo: GitRepository, make_runner: MakeRunner, builds: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = builds.parent / "ran"
    runner = make_runner(f"touch {q(marker)}")
    monkeypatch.setenv("PATH", str(builds.parent / "no-binaries-here"))  # no git to check out
    build_id = runner.trigger("r1", None, head(repo))
    report = wait_for(runner, build_id)
    assert report.status is BuildStatus.FAILED
    assert report.reason.startswith("checkout failed:")
    assert "git" in report.reason
    assert report.reason in Path(report.log).read_text()
    assert not (builds / build_id / "checkout").exists()
    assert not marker.exists()


def test_unknown_head_commit_fails_the_build_at_once(
    repo: GitRepository, make_runner: MakeRunner
) -> None:
    runner = make_runner("true")
    build_id = runner.trigger("r1", None, PREFIX + "0" * 40)
    report = runner.status(build_id)
    assert report.status is BuildStatus.FAILED
    assert report.reason.startswith("unknown commit:")
    assert report.reason in Path(report.log).read_text()


class GatedCheckout(GitSourceControl):
    """Checks out only once ``gate`` is set (or after 30 s)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, "main")
        self.gate = threading.Event()
        self.entered = threading.Event()

    def checkout(self, uri: str, directory: Path) -> None:
        self.entered.set()
        self.gate.wait(timeout=WAIT)
        super().checkout(uri, directory)


def test_timeout_counts_from_the_trigger_and_ends_a_build_still_checking_out(
    repo: GitRepository, make_runner: MakeRunner, builds: Path
) -> None:
    marker = builds.parent / "ran"
    source = GatedCheckout(repo.path)
    runner = make_runner(f"touch {q(marker)}", timeout=5.0, source=source)
    build_id = runner.trigger("r1", None, head(repo))
    assert source.entered.wait(timeout=WAIT)
    assert runner.status(build_id).status is BuildStatus.ACCEPTED
    report = wait_for(runner, build_id)
    assert (report.status, report.reason) == (BuildStatus.FAILED, "timed out after 5 s")
    source.gate.set()
    wait_until(lambda: not (builds / build_id / "checkout").exists(), "the checkout's removal")
    time.sleep(0.2)
    assert not marker.exists(), "a build that timed out while checking out must not run"
    assert runner.status(build_id).status is BuildStatus.FAILED


def test_cancel_while_checking_out_ends_the_build_before_the_command_runs(
    repo: GitRepository, make_runner: MakeRunner, builds: Path
) -> None:
    marker = builds.parent / "ran"
    source = GatedCheckout(repo.path)
    runner = make_runner(f"touch {q(marker)}", source=source)
    build_id = runner.trigger("r1", None, head(repo))
    assert source.entered.wait(timeout=WAIT)
    runner.cancel(build_id)
    assert runner.status(build_id) == BuildReport(
        BuildStatus.CANCELLED, str(builds / build_id / "log"), "cancelled"
    )
    source.gate.set()
    wait_until(lambda: not (builds / build_id / "checkout").exists(), "the checkout's removal")
    time.sleep(0.2)
    assert not marker.exists()


# -- timeouts, cancellation and the process group ---------------------------------------------


def background_sleep(pidfile: Path, then: str = "wait") -> str:
    """A command that leaves a grandchild ``sleep`` in the build's process group."""
    return f"sleep 300 & echo $! > {q(pidfile)}; {then}"


def test_timeout_ends_the_whole_process_group_and_fails_timed_out(
    repo: GitRepository, make_runner: MakeRunner, tmp_path: Path
) -> None:
    pidfile = tmp_path / "grandchild.pid"
    runner = make_runner(background_sleep(pidfile), timeout=3.0)
    build_id = runner.trigger("r1", None, head(repo))
    grandchild = read_pid(pidfile)
    assert runner.status(build_id).status is BuildStatus.RUNNING
    report = wait_for(runner, build_id)
    assert (report.status, report.reason) == (BuildStatus.FAILED, "timed out after 3 s")
    wait_until(lambda: not running(grandchild), "the grandchild sleep to end", timeout=10)


def test_any_process_calling_status_past_the_deadline_ends_the_build(
    repo: GitRepository,
    make_runner: MakeRunner,
    builds: Path,
    tmp_path: Path,
    children: list[subprocess.Popen[str]],
) -> None:
    # The triggering process exits while the build runs, so nobody watches it but us.
    pidfile = tmp_path / "grandchild.pid"
    command = background_sleep(pidfile)
    child = spawn_child(repo, builds, command, "r1", "--timeout", "4.5", "--until", "running")
    children.append(child)
    build_id = read_line(child)
    assert read_line(child) == "running"
    assert child.wait(timeout=WAIT) == 0
    grandchild = read_pid(pidfile)
    runner = make_runner(command, timeout=4.5)
    assert runner.status(build_id).status is BuildStatus.RUNNING
    report = wait_for(runner, build_id)
    assert (report.status, report.reason) == (BuildStatus.FAILED, "timed out after 4.5 s")
    wait_until(lambda: not running(grandchild), "the grandchild sleep to end", timeout=10)


def test_cancel_ends_the_whole_process_group_and_reports_cancelled(
    repo: GitRepository, make_runner: MakeRunner, builds: Path, tmp_path: Path
) -> None:
    pidfile = tmp_path / "grandchild.pid"
    runner = make_runner(background_sleep(pidfile))
    started = time.monotonic()
    build_id = runner.trigger("r1", None, head(repo))
    assert time.monotonic() - started < 5, "trigger must not wait for the build"
    grandchild = read_pid(pidfile)
    leader = os.getpgid(grandchild)
    runner.cancel(build_id)
    assert runner.status(build_id) == BuildReport(
        BuildStatus.CANCELLED, str(builds / build_id / "log"), "cancelled"
    )
    wait_until(lambda: not running(grandchild), "the grandchild sleep to end", timeout=10)
    wait_until(lambda: not running(leader), "the build's wrapper to end", timeout=10)
    wait_until(lambda: not (builds / build_id / "checkout").exists(), "the checkout's removal")
    runner.cancel(build_id)  # idempotent
    assert runner.status(build_id).status is BuildStatus.CANCELLED


def test_cancel_kills_a_group_that_ignores_sigterm_after_the_grace(
    repo: GitRepository, make_runner: MakeRunner, tmp_path: Path
) -> None:
    pidfile = tmp_path / "stubborn.pid"
    runner = make_runner(f"trap '' TERM; {background_sleep(pidfile)}", kill_grace=0.5)
    build_id = runner.trigger("r1", None, head(repo))
    stubborn = read_pid(pidfile)
    started = time.monotonic()
    runner.cancel(build_id)
    assert time.monotonic() - started >= 0.5
    wait_until(lambda: not running(stubborn), "the stubborn sleep to end", timeout=10)
    assert runner.status(build_id).status is BuildStatus.CANCELLED


def test_cancel_of_an_ended_build_changes_nothing(
    repo: GitRepository, make_runner: MakeRunner
) -> None:
    runner = make_runner("true")
    build_id = runner.trigger("r1", None, head(repo))
    assert wait_for(runner, build_id).status is BuildStatus.SUCCEEDED
    runner.cancel(build_id)
    assert runner.status(build_id).status is BuildStatus.SUCCEEDED


def test_processes_a_finished_build_left_behind_are_ended(
    repo: GitRepository, make_runner: MakeRunner, tmp_path: Path
) -> None:
    pidfile = tmp_path / "leftover.pid"
    runner = make_runner(background_sleep(pidfile, then="exit 0"))
    build_id = runner.trigger("r1", None, head(repo))
    leftover = read_pid(pidfile)
    assert wait_for(runner, build_id).status is BuildStatus.SUCCEEDED
    wait_until(lambda: not running(leftover), "the leftover sleep to end", timeout=10)


# -- idempotent triggers -------------------------------------------------------------------------


def test_trigger_is_idempotent_on_the_request_id(
    repo: GitRepository, make_runner: MakeRunner, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    runner = make_runner(f"echo run >> {q(runs)}")
    first = runner.trigger("r1", None, head(repo))
    wait_for(runner, first)
    assert runner.trigger("r1", None, head(repo)) == first
    assert make_runner(f"echo run >> {q(runs)}").trigger("r1", None, head(repo)) == first
    time.sleep(0.3)
    assert runs.read_text() == "run\n"


def test_a_request_id_drawn_again_for_another_commit_names_another_build(
    repo: GitRepository, make_runner: MakeRunner
) -> None:
    # Storage reset, builds_dir kept: request 1 of the queue comes back for a new commit.
    runner = make_runner("true")
    first = runner.trigger("request/monorepo/main/1", None, head(repo))
    assert wait_for(runner, first).status is BuildStatus.SUCCEEDED
    repo.commit("next")
    again = runner.trigger("request/monorepo/main/1", None, head(repo))
    assert again != first
    incremental = runner.trigger("request/monorepo/main/1", head(repo), head(repo))
    assert incremental != again
    wait_for(runner, again)
    wait_for(runner, incremental)


def race_triggers(runners: list[CommandBuildRunner], request_id: str, head_uri: str) -> set[str]:
    """Eight threads, spread over ``runners``, trigger one request at once; the ids returned."""
    barrier = threading.Barrier(8)
    ids: list[str] = []
    errors: list[BaseException] = []

    def trigger(runner: CommandBuildRunner) -> None:
        try:
            barrier.wait(timeout=10)
            ids.append(runner.trigger(request_id, None, head_uri))
        except BaseException as error:
            errors.append(error)

    threads = [
        threading.Thread(target=trigger, args=(runners[n % len(runners)],)) for n in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=WAIT)
    assert errors == []
    assert len(ids) == 8
    return set(ids)


def test_racing_triggers_in_two_runner_instances_start_one_build(
    repo: GitRepository, make_runner: MakeRunner, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    runners = [make_runner(f"echo run >> {q(runs)}") for _ in range(2)]
    for attempt in range(3):
        ids = race_triggers(runners, f"r{attempt}", head(repo))
        assert len(ids) == 1
        assert wait_for(runners[1], ids.pop()).status is BuildStatus.SUCCEEDED
    time.sleep(0.3)
    assert runs.read_text() == "run\n" * 3


def test_racing_triggers_in_separate_processes_start_one_build(
    repo: GitRepository,
    make_runner: MakeRunner,
    builds: Path,
    tmp_path: Path,
    children: list[subprocess.Popen[str]],
) -> None:
    runs = tmp_path / "runs"
    command = f"echo run >> {q(runs)}"
    go = tmp_path / "go"
    for _ in range(4):
        children.append(
            spawn_child(repo, builds, command, "r1", "--go-file", str(go), "--until", "succeeded")
        )
    for child in children:
        assert read_line(child) == "ready"
    go.touch()
    ids = {read_line(child) for child in children}
    assert len(ids) == 1
    for child in children:
        assert read_line(child) == "succeeded"
    assert make_runner(command).status(ids.pop()).status is BuildStatus.SUCCEEDED
    time.sleep(0.3)
    assert runs.read_text() == "run\n"


# -- other processes and restarts ----------------------------------------------------------------


def test_exit_status_is_recorded_after_the_triggering_process_is_gone(
    repo: GitRepository,
    make_runner: MakeRunner,
    builds: Path,
    tmp_path: Path,
    children: list[subprocess.Popen[str]],
) -> None:
    release = tmp_path / "release"
    command = f"while [ ! -e {q(release)} ]; do sleep 0.05; done; echo finished; exit 7"
    child = spawn_child(repo, builds, command, "r1", "--until", "running", "--hang")
    children.append(child)
    build_id = read_line(child)
    assert read_line(child) == "running"
    child.send_signal(signal.SIGKILL)  # the server dies without any chance to clean up
    child.wait(timeout=WAIT)
    release.touch()
    runner = make_runner(command)
    report = wait_for(runner, build_id)
    assert (report.status, report.reason) == (BuildStatus.FAILED, "exit status 7")
    assert Path(report.log).read_text() == "finished\n"


def test_status_from_a_second_runner_instance_sees_the_outcome(
    repo: GitRepository, make_runner: MakeRunner
) -> None:
    first = make_runner("echo one")
    build_id = first.trigger("r1", None, head(repo))
    assert wait_for(first, build_id).status is BuildStatus.SUCCEEDED
    second = make_runner("echo one")
    assert second.status(build_id) == first.status(build_id)


def test_a_build_whose_wrapper_was_killed_is_lost_and_its_group_ended(
    repo: GitRepository, make_runner: MakeRunner, tmp_path: Path
) -> None:
    pidfile = tmp_path / "shell.pid"
    runner = make_runner(f"echo $$ > {q(pidfile)}; sleep 300")
    build_id = runner.trigger("r1", None, head(repo))
    shell = read_pid(pidfile)
    wrapper = os.getpgid(shell)
    assert wrapper != os.getpgid(0), "the build must run in a process group of its own"
    os.kill(wrapper, signal.SIGKILL)
    report = wait_for(runner, build_id)
    assert report.status is BuildStatus.FAILED
    assert report.reason.startswith("lost: ")
    wait_until(lambda: not running(shell), "the build's shell to end", timeout=10)


def test_a_build_whose_triggering_process_died_before_it_started_is_lost(
    repo: GitRepository,
    make_runner: MakeRunner,
    builds: Path,
    tmp_path: Path,
    children: list[subprocess.Popen[str]],
) -> None:
    marker = tmp_path / "ran"
    command = f"touch {q(marker)}"
    child = spawn_child(repo, builds, command, "r1", "--slow-checkout", "300", "--hang")
    children.append(child)
    build_id = read_line(child)
    runner = make_runner(command)
    assert runner.status(build_id).status is BuildStatus.ACCEPTED
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=WAIT)
    report = wait_for(runner, build_id)
    assert report.status is BuildStatus.FAILED
    assert report.reason.startswith("lost: ")
    assert not marker.exists()


def test_a_recycled_pid_is_never_taken_for_the_build_nor_signalled(
    repo: GitRepository, make_runner: MakeRunner, builds: Path, tmp_path: Path
) -> None:
    pidfile = tmp_path / "shell.pid"
    runner = make_runner(f"echo $$ > {q(pidfile)}; sleep 300")
    build_id = runner.trigger("r1", None, head(repo))
    shell = read_pid(pidfile)
    wrapper = os.getpgid(shell)
    # Pretend the wrapper's pid now belongs to another process: same pid, another identity.
    state = builds / build_id / "process.json"
    recorded = json.loads(state.read_text())
    assert recorded["pid"] == wrapper
    state.write_text(json.dumps({**recorded, "identity": "another-boot:0"}))
    try:
        report = runner.status(build_id)
        assert report.status is BuildStatus.FAILED
        assert report.reason.startswith("lost: ")
        time.sleep(0.3)
        assert running(wrapper), "a process that merely reuses the pid must not be signalled"
        assert running(shell)
    finally:
        os.killpg(wrapper, signal.SIGKILL)
    wait_until(lambda: not running(shell), "the build's shell to end", timeout=10)


# -- unknown ids ---------------------------------------------------------------------------------


@pytest.mark.parametrize("build_id", ["", "x", "../../etc", "0" * 32, "A" * 32, "0" * 33])
def test_an_id_this_runner_never_minted_raises_not_found(
    make_runner: MakeRunner, build_id: str
) -> None:
    runner = make_runner("true")
    with pytest.raises(NotFound):
        runner.status(build_id)
    with pytest.raises(NotFound):
        runner.cancel(build_id)


def test_an_id_minted_for_another_queue_sharing_the_builds_dir_raises_not_found(
    repo: GitRepository, make_runner: MakeRunner
) -> None:
    release = make_runner("true", queue="monorepo/release")
    build_id = release.trigger("r1", None, head(repo))
    wait_for(release, build_id)
    main = make_runner("true")
    with pytest.raises(NotFound):
        main.status(build_id)
    with pytest.raises(NotFound):
        main.cancel(build_id)


@pytest.mark.parametrize(
    ("command", "timeout", "grace"), [("", 1.0, 1.0), ("true", 0.0, 1.0), ("true", 1.0, -1.0)]
)
def test_empty_command_and_non_positive_timeout_are_refused(
    repo: GitRepository, builds: Path, command: str, timeout: float, grace: float
) -> None:
    with pytest.raises(ValueError):
        CommandBuildRunner(
            QUEUE, GitSourceControl(repo.path, "main"), command, timeout, builds, kill_grace=grace
        )
