"""FakeBuildRunner and RunnerMap."""

from __future__ import annotations

import threading
import time

import pytest

from stovepipe.buildrunner import BuildRunner, NotFound, RunnerMap
from stovepipe.buildrunner.fake import FakeBuildRunner, Trigger
from stovepipe.entity import BuildStatus


def wait_terminal(runner: BuildRunner, build_id: str, timeout: float = 10.0) -> BuildStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = runner.status(build_id).status
        if status.terminal or time.monotonic() > deadline:
            return status
        time.sleep(0.01)


def test_fake_builds_end_with_the_default_outcome_at_once() -> None:
    runner = FakeBuildRunner()
    build_id = runner.trigger("r1", None, "fake://repo/c1")
    assert runner.status(build_id).status is BuildStatus.SUCCEEDED
    assert runner.status(build_id).reason == ""


def test_fake_outcome_by_head_uri_overrides_the_default_and_failures_have_a_reason() -> None:
    runner = FakeBuildRunner(
        outcome=BuildStatus.SUCCEEDED, outcomes={"fake://repo/bad": BuildStatus.FAILED}
    )
    good = runner.trigger("r1", None, "fake://repo/good")
    bad = runner.trigger("r2", None, "fake://repo/bad")
    assert runner.status(good).status is BuildStatus.SUCCEEDED
    assert runner.status(bad).status is BuildStatus.FAILED
    assert runner.status(bad).reason == "fake build failed"
    explained = FakeBuildRunner(outcome=BuildStatus.FAILED, reason="exit status 2")
    assert explained.status(explained.trigger("r", None, "u")).reason == "exit status 2"


def test_fake_build_runs_for_its_duration_then_ends() -> None:
    # Long enough that the status read right after the trigger falls inside it on any machine.
    runner = FakeBuildRunner(duration=2.0)
    build_id = runner.trigger("r1", None, "fake://repo/c1")
    assert runner.status(build_id).status is BuildStatus.RUNNING
    assert wait_terminal(runner, build_id) is BuildStatus.SUCCEEDED


def test_fake_records_triggers_with_base_and_head_and_a_repeat_starts_nothing() -> None:
    runner = FakeBuildRunner()
    first = runner.trigger("r1", "fake://repo/c1", "fake://repo/c2")
    again = runner.trigger("r1", None, "fake://repo/other")
    second = runner.trigger("r2", None, "fake://repo/c3")
    assert first == again != second
    assert runner.triggers == (
        Trigger("r1", "fake://repo/c1", "fake://repo/c2", first),
        Trigger("r2", None, "fake://repo/c3", second),
    )


def test_fake_cancel_ends_a_running_build_cancelled_and_is_idempotent() -> None:
    runner = FakeBuildRunner(outcome=BuildStatus.RUNNING)
    build_id = runner.trigger("r1", None, "u")
    assert runner.status(build_id).status is BuildStatus.RUNNING
    runner.cancel(build_id)
    runner.cancel(build_id)
    assert runner.status(build_id).status is BuildStatus.CANCELLED
    assert runner.cancellations == (build_id, build_id)


def test_fake_cancel_of_an_ended_build_leaves_its_status() -> None:
    runner = FakeBuildRunner()
    build_id = runner.trigger("r1", None, "u")
    runner.cancel(build_id)
    assert runner.status(build_id).status is BuildStatus.SUCCEEDED


def test_fake_unknown_build_id_raises_not_found() -> None:
    runner = FakeBuildRunner()
    with pytest.raises(NotFound):
        runner.status("fake-1")
    with pytest.raises(NotFound):
        runner.cancel("nope")


def test_fake_racing_triggers_of_one_request_start_one_build() -> None:
    runner = FakeBuildRunner()
    barrier = threading.Barrier(8)
    ids: list[str] = []

    def trigger() -> None:
        barrier.wait(timeout=10)
        ids.append(runner.trigger("same", None, "u"))

    threads = [threading.Thread(target=trigger) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(ids) == 8
    assert len(set(ids)) == 1
    assert len(runner.triggers) == 1


def test_fake_rejects_a_negative_duration() -> None:
    with pytest.raises(ValueError, match="duration"):
        FakeBuildRunner(duration=-1)


def test_runner_map_binds_one_runner_per_queue_exactly() -> None:
    main, release = FakeBuildRunner(), FakeBuildRunner()
    runners = RunnerMap({"repo/main": main, "repo/release": release})
    assert runners.for_queue("repo/main") is main
    assert runners.for_queue("repo/release") is release
    assert runners.queues() == ["repo/main", "repo/release"]
    for unknown in ["repo/Main", "repo/main ", "", "repo"]:
        with pytest.raises(NotFound, match="no build runner"):
            runners.for_queue(unknown)


def test_runner_map_is_fixed_when_built() -> None:
    bindings: dict[str, BuildRunner] = {"repo/main": FakeBuildRunner()}
    runners = RunnerMap(bindings)
    bindings["repo/other"] = FakeBuildRunner()
    with pytest.raises(NotFound):
        runners.for_queue("repo/other")


def test_fake_build_ids_are_unique_across_runners_and_another_runner_follows_them() -> None:
    first, second = FakeBuildRunner(duration=2.0), FakeBuildRunner(duration=2.0)
    failing = FakeBuildRunner(outcome=BuildStatus.FAILED)
    ids = {first.trigger("request/a/1", None, "u"), second.trigger("request/b/1", None, "u")}
    assert len(ids) == 2
    build_id = first.trigger("request/c/1", None, "u")
    # A runner of the same configuration in another process reads the build from its id.
    assert second.status(build_id).status is BuildStatus.RUNNING
    deadline = time.monotonic() + 10
    while second.status(build_id).status is BuildStatus.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert second.status(build_id).status is BuildStatus.SUCCEEDED
    red = failing.trigger("request/d/1", None, "u")
    assert FakeBuildRunner().status(red).status is BuildStatus.FAILED
