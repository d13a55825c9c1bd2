"""The SourceControl contract, held against every implementation: fake and git."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stovepipe.sourcecontrol import MAX_PAGE_LIMIT, NotFound, SourceControl
from stovepipe.sourcecontrol.fake import FakeSourceControl
from stovepipe.sourcecontrol.git import GitSourceControl
from stovepipe.testing import run_git


@dataclasses.dataclass
class Timeline:
    """A source and a way to give it a new head, whatever the implementation."""

    source: SourceControl
    push: Callable[[], str]
    """Adds a commit on top of the head and returns its URI."""

    def push_many(self, count: int) -> list[str]:
        """Push ``count`` commits; their URIs newest first."""
        return [self.push() for _ in range(count)][::-1]


def fake_timeline(tmp_path: Path) -> Timeline:
    source = FakeSourceControl(name="repo")
    numbers = iter(range(1, 10_000))
    return Timeline(source, lambda: source.push(f"c{next(numbers)}"))


def git_timeline(tmp_path: Path) -> Timeline:
    repo = tmp_path / "repo"
    run_git(tmp_path, "init", "--quiet", "--initial-branch=main", str(repo))
    source = GitSourceControl(repo, "main")

    def push() -> str:
        run_git(repo, "commit", "--quiet", "--allow-empty", "--message=change")
        return f"git://local/repo/main/{run_git(repo, 'rev-parse', 'HEAD')}"

    return Timeline(source, push)


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
