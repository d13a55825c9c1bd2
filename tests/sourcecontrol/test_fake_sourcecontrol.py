"""FakeSourceControl and QueueMap."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from stovepipe.sourcecontrol import NotFound, QueueMap
from stovepipe.sourcecontrol.fake import FakeSourceControl


def test_fake_commits_are_given_newest_first_and_uris_are_fake_name_sha() -> None:
    source = FakeSourceControl(["c3", "c2", "c1"], name="monorepo")
    assert source.latest() == "fake://monorepo/c3"
    assert source.history().uris == (
        "fake://monorepo/c3",
        "fake://monorepo/c2",
        "fake://monorepo/c1",
    )


def test_fake_push_makes_a_new_head_and_returns_its_uri() -> None:
    source = FakeSourceControl(["c1"])
    assert source.push("c2") == "fake://fake/c2"
    assert source.latest() == "fake://fake/c2"


@pytest.mark.parametrize("sha", ["", "a/b", "c1"])
def test_fake_push_rejects_an_empty_slashed_or_repeated_sha(sha: str) -> None:
    source = FakeSourceControl(["c1"])
    with pytest.raises(ValueError):
        source.push(sha)


def test_fake_rejects_repeated_commits_at_construction() -> None:
    with pytest.raises(ValueError, match="already"):
        FakeSourceControl(["c1", "c1"])


def test_fake_push_is_thread_safe_every_push_lands_once() -> None:
    source = FakeSourceControl()
    barrier = threading.Barrier(16)

    def push_some(worker: int) -> None:
        barrier.wait()
        for n in range(50):
            source.push(f"w{worker}-{n}")

    threads = [threading.Thread(target=push_some, args=(w,)) for w in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    page = source.history(limit=1000)
    assert len(page.uris) == 800
    assert len(set(page.uris)) == 800
    assert page.next_cursor is None


def test_queue_map_binds_one_source_per_queue_exactly() -> None:
    main, release = FakeSourceControl(["m"]), FakeSourceControl(["r"])
    sources = QueueMap({"repo/main": main, "repo/release": release})
    assert sources.for_queue("repo/main") is main
    assert sources.for_queue("repo/release") is release
    assert sources.queues() == ["repo/main", "repo/release"]
    for unknown in ["repo/Main", "repo/main ", "", "repo"]:
        with pytest.raises(NotFound, match="unknown queue"):
            sources.for_queue(unknown)


def test_queue_map_is_fixed_when_built() -> None:
    bindings = {"repo/main": FakeSourceControl(["m"])}
    sources = QueueMap(bindings)
    bindings["repo/other"] = FakeSourceControl(["o"])
    with pytest.raises(NotFound):
        sources.for_queue("repo/other")


def test_fake_commit_times_come_from_the_constructor_and_push_and_default_to_zero() -> None:
    source = FakeSourceControl(["c2", "c1"], commit_times={"c1": 100.5})
    assert source.commit_time("fake://fake/c1") == 100.5
    assert source.commit_time("fake://fake/c2") == 0.0
    assert source.commit_time(source.push("c3", commit_time=200)) == 200.0


def test_fake_checkout_writes_the_commit_sha_into_fake_commit(tmp_path: Path) -> None:
    source = FakeSourceControl(["c2", "c1"])
    source.checkout("fake://fake/c1", tmp_path / "checkout")
    assert (tmp_path / "checkout" / "FAKE_COMMIT").read_text() == "c1\n"


def test_fake_promote_records_every_move_and_where_the_ref_points() -> None:
    source = FakeSourceControl(["c3", "c2", "c1"])
    assert source.promoted is None
    assert source.promote("fake://fake/c2") is True
    assert source.promote("fake://fake/c1") is False
    assert source.promote("fake://fake/c3") is True
    assert source.promoted == "fake://fake/c3"
    assert source.promotions == ("fake://fake/c2", "fake://fake/c3")
