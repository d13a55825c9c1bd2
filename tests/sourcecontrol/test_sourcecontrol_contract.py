"""The SourceControl contract, held against every implementation: fake and git."""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stovepipe.sourcecontrol import MAX_PAGE_LIMIT, NotFound, SourceControl
from stovepipe.sourcecontrol.fake import FakeSourceControl
from stovepipe.sourcecontrol.git import GitSourceControl
from stovepipe.testing import GIT_ENV, run_git


@dataclasses.dataclass
class Timeline:
    """A source and a way to give it a new head, whatever the implementation."""

    source: SourceControl
    push_at: Callable[[float], str]
    """Adds a commit made at the given time (seconds since the epoch) on top of the head and
    returns its URI."""
    promoted: Callable[[], str | None]
    """Where the source's promotion ref points now, as a URI (None while unset)."""

    def push(self) -> str:
        """Add a commit on top of the head and return its URI."""
        return self.push_at(1_700_000_000.0)

    def push_many(self, count: int) -> list[str]:
        """Push ``count`` commits; their URIs newest first."""
        return [self.push() for _ in range(count)][::-1]


def fake_timeline(tmp_path: Path) -> Timeline:
    source = FakeSourceControl(name="repo")
    numbers = iter(range(1, 10_000))

    def push_at(when: float) -> str:
        return source.push(f"c{next(numbers)}", commit_time=when)

    return Timeline(source, push_at, lambda: source.promoted)


def git_timeline(tmp_path: Path) -> Timeline:
    repo = tmp_path / "repo"
    run_git(tmp_path, "init", "--quiet", "--initial-branch=main", str(repo))
    source = GitSourceControl(repo, "main", promote_ref="green")

    def push_at(when: float) -> str:
        subprocess.run(
            ["git", "-C", str(repo), "commit", "--quiet", "--allow-empty", "--message=change"],
            env={**GIT_ENV, "GIT_COMMITTER_DATE": f"@{when:.0f} +0000"},
            check=True,
        )
        return f"git://local/repo/main/{run_git(repo, 'rev-parse', 'HEAD')}"

    def promoted() -> str | None:
        if not run_git(repo, "branch", "--list", "green"):
            return None
        return f"git://local/repo/main/{run_git(repo, 'rev-parse', 'refs/heads/green')}"

    return Timeline(source, push_at, promoted)


@pytest.fixture(params=[fake_timeline, git_timeline], ids=["fake", "git"])
def timeline(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Timeline]:
    make: Callable[[Path], Timeline] = request.param
    yield make(tmp_path)


def walk_history(source: SourceControl, limit: int) -> tuple[list[str], int]:
    """All URIs of the history, following cursors; and the number of pages read."""
    uris: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = source.history(cursor, limit)
        pages += 1
        assert 1 <= len(page.uris) <= limit
        uris.extend(page.uris)
        if page.next_cursor is None:
            return uris, pages
        cursor = page.next_cursor


def test_latest_of_a_ref_without_commits_raises_not_found(timeline: Timeline) -> None:
    with pytest.raises(NotFound):
        timeline.source.latest()


def test_latest_is_the_newest_commit(timeline: Timeline) -> None:
    newest = timeline.push_many(3)[0]
    assert timeline.source.latest() == newest


def test_latest_sees_a_new_head_immediately(timeline: Timeline) -> None:
    for _ in range(3):
        pushed = timeline.push()
        assert timeline.source.latest() == pushed


def test_history_pages_newest_first_and_the_last_page_has_no_cursor(timeline: Timeline) -> None:
    pushed = timeline.push_many(7)
    uris, pages = walk_history(timeline.source, limit=3)
    assert uris == pushed
    assert pages == 3


def test_history_page_of_exactly_limit_commits_has_no_next_cursor(timeline: Timeline) -> None:
    pushed = timeline.push_many(3)
    page = timeline.source.history(limit=3)
    assert page.uris == tuple(pushed)
    assert page.next_cursor is None


def test_history_cursor_continues_the_walk_after_the_ref_moves_on(timeline: Timeline) -> None:
    pushed = timeline.push_many(4)
    first = timeline.source.history(limit=2)
    timeline.push()
    assert first.next_cursor is not None
    rest = timeline.source.history(first.next_cursor, limit=10)
    assert rest.uris == tuple(pushed[2:])


def test_history_without_commits_raises_not_found(timeline: Timeline) -> None:
    with pytest.raises(NotFound):
        timeline.source.history()


@pytest.mark.parametrize("limit", [0, -1, MAX_PAGE_LIMIT + 1])
def test_history_limit_outside_range_raises_value_error(timeline: Timeline, limit: int) -> None:
    timeline.push()
    with pytest.raises(ValueError, match="limit"):
        timeline.source.history(limit=limit)


@pytest.mark.parametrize("cursor", ["", "not a cursor", "W10=", "bm90IGpzb24=", "WzEsMl0="])
def test_history_garbage_cursor_raises_value_error(timeline: Timeline, cursor: str) -> None:
    timeline.push()
    with pytest.raises(ValueError, match="cursor"):
        timeline.source.history(cursor)


def test_history_cursor_of_another_source_raises_value_error(
    timeline: Timeline, tmp_path: Path
) -> None:
    timeline.push_many(3)
    other = FakeSourceControl(["b", "a"], name="other")
    foreign = other.history(limit=1).next_cursor
    assert foreign is not None
    with pytest.raises(ValueError, match="another source"):
        timeline.source.history(foreign)


def test_is_ancestor_is_true_for_an_older_commit_and_false_the_other_way(
    timeline: Timeline,
) -> None:
    newer, older = timeline.push_many(2)
    assert timeline.source.is_ancestor(older, newer) is True
    assert timeline.source.is_ancestor(newer, older) is False


def test_is_ancestor_a_commit_is_its_own_ancestor(timeline: Timeline) -> None:
    head = timeline.push()
    assert timeline.source.is_ancestor(head, head) is True


def test_is_ancestor_unknown_uri_raises_not_found(timeline: Timeline) -> None:
    head = timeline.push()
    unknown = head[:-1] + ("0" if head[-1] != "0" else "1")
    for ancestor, descendant in [(unknown, head), (head, unknown), ("", head), (head, "x")]:
        with pytest.raises(NotFound):
            timeline.source.is_ancestor(ancestor, descendant)


def unknown_uri(known: str) -> str:
    """A URI of the same shape as ``known`` naming no commit."""
    return known[:-1] + ("0" if known[-1] != "0" else "1")


def test_revision_is_the_commit_id_the_uri_names(timeline: Timeline) -> None:
    newer, older = timeline.push_many(2)
    assert newer.endswith("/" + timeline.source.revision(newer))
    assert older.endswith("/" + timeline.source.revision(older))
    assert timeline.source.revision(newer) != timeline.source.revision(older)


def test_revision_of_an_unknown_uri_raises_not_found(timeline: Timeline) -> None:
    head = timeline.push()
    for uri in [unknown_uri(head), "", "x"]:
        with pytest.raises(NotFound):
            timeline.source.revision(uri)


def test_commit_time_is_the_commit_time_in_seconds_since_the_epoch(timeline: Timeline) -> None:
    older = timeline.push_at(1_600_000_000.0)
    newer = timeline.push_at(1_700_000_123.0)
    assert timeline.source.commit_time(older) == 1_600_000_000.0
    assert timeline.source.commit_time(newer) == 1_700_000_123.0
    assert isinstance(timeline.source.commit_time(newer), float)


def test_commit_time_of_an_unknown_uri_raises_not_found(timeline: Timeline) -> None:
    head = timeline.push()
    with pytest.raises(NotFound):
        timeline.source.commit_time(unknown_uri(head))


def test_checkout_creates_the_directory_with_the_commit_in_it(
    timeline: Timeline, tmp_path: Path
) -> None:
    head = timeline.push()
    target = tmp_path / "builds" / "one" / "checkout"
    timeline.source.checkout(head, target)
    assert target.is_dir()
    assert any(target.iterdir())
    empty = tmp_path / "empty"
    empty.mkdir()
    timeline.source.checkout(head, empty)  # an existing empty directory is fine too
    assert any(empty.iterdir())


def test_checkout_into_a_directory_holding_files_raises_value_error(
    timeline: Timeline, tmp_path: Path
) -> None:
    head = timeline.push()
    target = tmp_path / "occupied"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        timeline.source.checkout(head, target)
    assert [path.name for path in target.iterdir()] == ["keep.txt"]


def test_checkout_of_an_unknown_uri_raises_not_found_and_leaves_nothing(
    timeline: Timeline, tmp_path: Path
) -> None:
    head = timeline.push()
    target = tmp_path / "checkout"
    with pytest.raises(NotFound):
        timeline.source.checkout(unknown_uri(head), target)
    assert not target.exists()


def test_promote_moves_the_ref_forward_only(timeline: Timeline) -> None:
    third, second, first = timeline.push_many(3)
    assert timeline.promoted() is None
    assert timeline.source.promote(second) is True
    assert timeline.promoted() == second
    assert timeline.source.promote(second) is False  # already there
    assert timeline.source.promote(first) is False  # an ancestor: never backwards
    assert timeline.promoted() == second
    assert timeline.source.promote(third) is True
    assert timeline.promoted() == third


def test_promote_of_an_unknown_uri_raises_not_found_and_leaves_the_ref(
    timeline: Timeline,
) -> None:
    head = timeline.push()
    timeline.source.promote(head)
    for uri in [unknown_uri(head), "", "x"]:
        with pytest.raises(NotFound):
            timeline.source.promote(uri)
    assert timeline.promoted() == head
