"""GitSourceControl on real repositories made with the git CLI."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pygit2
import pytest

from stovepipe.sourcecontrol import NotFound, Unavailable
from stovepipe.sourcecontrol.git import GitSourceControl
from stovepipe.testing import run_git


def commit(repo: Path, message: str = "change") -> str:
    run_git(repo, "commit", "--quiet", "--allow-empty", f"--message={message}")
    return run_git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "monorepo"
    run_git(tmp_path, "init", "--quiet", "--initial-branch=main", str(path))
    return path


def test_uri_is_git_remote_repo_ref_sha(repo: Path) -> None:
    sha = commit(repo)
    assert GitSourceControl(repo, "main").latest() == f"git://local/monorepo/main/{sha}"
    named = GitSourceControl(repo, "main", remote="origin.example")
    assert named.latest() == f"git://origin.example/monorepo/main/{sha}"


def test_full_ref_names_are_accepted_and_keep_their_name_in_the_uri(repo: Path) -> None:
    sha = commit(repo)
    run_git(repo, "update-ref", "refs/remotes/origin/main", sha)
    assert GitSourceControl(repo, "refs/heads/main").latest() == f"git://local/monorepo/main/{sha}"
    remote_ref = GitSourceControl(repo, "refs/remotes/origin/main").latest()
    assert remote_ref == f"git://local/monorepo/refs/remotes/origin/main/{sha}"


def test_bare_repository_name_drops_the_git_suffix(repo: Path, tmp_path: Path) -> None:
    sha = commit(repo)
    bare = tmp_path / "mirror.git"
    run_git(tmp_path, "clone", "--quiet", "--bare", str(repo), str(bare))
    assert GitSourceControl(bare, "main").latest() == f"git://local/mirror/main/{sha}"


def test_annotated_tag_ref_resolves_to_its_commit(repo: Path) -> None:
    sha = commit(repo)
    run_git(repo, "tag", "--annotate", "--message=release", "v1")
    assert GitSourceControl(repo, "refs/tags/v1").latest().endswith(f"/{sha}")


def test_latest_sees_ref_updates_immediately_loose_packed_and_rewound(repo: Path) -> None:
    source = GitSourceControl(repo, "main")
    first = commit(repo)
    assert source.latest().endswith(first)
    second = commit(repo)
    assert source.latest().endswith(second)
    run_git(repo, "pack-refs", "--all")
    assert source.latest().endswith(second)
    run_git(repo, "update-ref", "refs/heads/main", first)  # a rewind, as after a force push
    assert source.latest().endswith(first)
    run_git(repo, "pack-refs", "--all")
    third = commit(repo)
    assert source.latest().endswith(third)
    run_git(repo, "gc", "--quiet")  # objects move into a pack
    fourth = commit(repo)
    assert source.latest().endswith(fourth)
    assert source.is_ancestor(source.latest().replace(fourth, third), source.latest())


def test_latest_of_a_deleted_branch_raises_not_found(repo: Path) -> None:
    commit(repo)
    run_git(repo, "checkout", "--quiet", "-b", "other")
    source = GitSourceControl(repo, "main")
    source.latest()
    run_git(repo, "branch", "--quiet", "-D", "main")
    with pytest.raises(NotFound, match="refs/heads/main"):
        source.latest()


def test_latest_of_a_corrupt_ref_raises_unavailable(repo: Path) -> None:
    commit(repo)
    source = GitSourceControl(repo, "main")
    (repo / ".git" / "refs" / "heads" / "main").write_text("garbage\n")
    with pytest.raises(Unavailable):
        source.latest()


def test_latest_does_not_start_a_process(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sha = commit(repo)
    source = GitSourceControl(repo, "main")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("latest() started a process")

    for name in ("fork", "posix_spawn", "posix_spawnp", "system", "execv", "execve"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)
    for _ in range(100):
        assert source.latest().endswith(sha)


def test_missing_repository_raises_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no git repository"):
        GitSourceControl(tmp_path / "absent", "main")


@pytest.mark.parametrize("ref", ["", "bad..name", "has space", "refs/heads/x.lock"])
def test_invalid_ref_name_raises_value_error(repo: Path, ref: str) -> None:
    with pytest.raises(ValueError, match="ref name"):
        GitSourceControl(repo, ref)


def test_history_follows_first_parents_through_a_merge(repo: Path) -> None:
    base = commit(repo, "base")
    run_git(repo, "checkout", "--quiet", "-b", "feature")
    feature = commit(repo, "feature")
    run_git(repo, "checkout", "--quiet", "main")
    mainline = commit(repo, "mainline")
    run_git(repo, "merge", "--quiet", "--no-ff", "--message=merge", "feature")
    merge = run_git(repo, "rev-parse", "HEAD")
    source = GitSourceControl(repo, "main")
    shas = [uri.rsplit("/", 1)[1] for uri in source.history(limit=10).uris]
    assert shas == [merge, mainline, base]
    # Ancestry uses the whole graph: the merged branch's commit is an ancestor too.
    prefix = "git://local/monorepo/main/"
    assert source.is_ancestor(prefix + feature, prefix + merge) is True
    assert source.is_ancestor(prefix + feature, prefix + mainline) is False


def test_is_ancestor_is_false_after_history_is_rewritten(repo: Path) -> None:
    commit(repo, "base")
    source = GitSourceControl(repo, "main")
    before = source.latest()
    run_git(repo, "commit", "--quiet", "--amend", "--allow-empty", "--message=rewritten")
    after = source.latest()
    assert before != after
    assert source.is_ancestor(before, after) is False


def test_is_ancestor_uri_of_another_ref_raises_not_found(repo: Path) -> None:
    commit(repo)
    run_git(repo, "branch", "release")
    main, release = GitSourceControl(repo, "main"), GitSourceControl(repo, "release")
    with pytest.raises(NotFound):
        main.is_ancestor(release.latest(), main.latest())


def test_is_ancestor_sha_of_a_non_commit_raises_not_found(repo: Path) -> None:
    commit(repo)
    tree = run_git(repo, "rev-parse", "HEAD^{tree}")
    source = GitSourceControl(repo, "main")
    with pytest.raises(NotFound):
        source.is_ancestor(f"git://local/monorepo/main/{tree}", source.latest())


def test_history_cursor_of_another_ref_of_the_same_repository_raises_value_error(
    repo: Path,
) -> None:
    commit(repo)
    commit(repo)
    run_git(repo, "branch", "release")
    cursor = GitSourceControl(repo, "release").history(limit=1).next_cursor
    assert cursor is not None
    with pytest.raises(ValueError, match="another source"):
        GitSourceControl(repo, "main").history(cursor)


def test_latest_is_thread_safe_while_commits_land(repo: Path) -> None:
    commit(repo)
    source = GitSourceControl(repo, "main")
    seen: list[str] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        try:
            while not done.is_set():
                seen.append(source.latest())
        except BaseException as error:
            errors.append(error)

    readers = [threading.Thread(target=read) for _ in range(8)]
    for reader in readers:
        reader.start()
    heads = [commit(repo) for _ in range(5)]
    done.set()
    for reader in readers:
        reader.join()
    assert errors == []
    assert source.latest().endswith(heads[-1])
    assert {uri.rsplit("/", 1)[1] for uri in seen} <= {*heads, run_git(repo, "rev-parse", "HEAD~5")}


def long_history(path: Path, commits: int) -> tuple[str, str, str]:
    """A bare repository of ``commits`` linear commits on ``main`` (one timestamp, so that
    libgit2 cannot cut a walk short by date) and a branch ``other`` of one unrelated commit:
    the root's, the head's and the unrelated commit's shas."""
    repository = pygit2.init_repository(str(path), bare=True)
    signature = pygit2.Signature("t", "t@example.com", 1_700_000_000, 0)
    tree = repository.TreeBuilder().write()
    root = head = repository.create_commit(None, signature, signature, "root", tree, [])
    for n in range(commits):
        head = repository.create_commit(None, signature, signature, f"c{n}", tree, [head])
    repository.create_reference_direct("refs/heads/main", head, False)
    other = repository.create_commit(None, signature, signature, "other", tree, [])
    repository.create_reference_direct("refs/heads/other", other, False)
    return str(root), str(head), str(other)


def test_is_ancestor_far_back_or_unrelated_answers_right_past_the_in_process_walk(
    tmp_path: Path,
) -> None:
    from stovepipe.sourcecontrol.git import ANCESTRY_WALK

    root, head, other = long_history(tmp_path / "long.git", ANCESTRY_WALK * 3)
    source = GitSourceControl(tmp_path / "long.git", "main")
    prefix = source.latest().removesuffix(head)
    assert source.is_ancestor(prefix + root, prefix + head) is True
    assert source.is_ancestor(prefix + other, prefix + head) is False
    assert source.is_ancestor(prefix + head, prefix + root) is False


def test_is_ancestor_without_the_git_command_walks_on_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stovepipe.sourcecontrol.git import ANCESTRY_WALK

    root, head, other = long_history(tmp_path / "long.git", ANCESTRY_WALK * 2)
    source = GitSourceControl(tmp_path / "long.git", "main")
    prefix = source.latest().removesuffix(head)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no git to be found
    assert source.is_ancestor(prefix + root, prefix + head) is True
    assert source.is_ancestor(prefix + other, prefix + head) is False


def share_of_speed_left(work: Callable[[], object]) -> float:
    """How fast another thread runs while ``work`` runs, as a share of its speed alone."""
    counted = [0]
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            counted[0] += 1

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        before, start = counted[0], time.perf_counter()
        time.sleep(0.3)
        alone = (counted[0] - before) / (time.perf_counter() - start)
        before, start = counted[0], time.perf_counter()
        work()
        during = (counted[0] - before) / (time.perf_counter() - start)
    finally:
        stop.set()
        spinner.join(timeout=10)
    return during / alone


def best_share_of_speed_left(works: list[Callable[[], object]], floor: float) -> float:
    """The best :func:`share_of_speed_left` of ``works`` (one at a time, until one reaches
    ``floor``): other load on the machine can slow the spinner in one window, but a walk that
    holds the interpreter lock stops it in every window."""
    best = 0.0
    for work in works:
        best = max(best, share_of_speed_left(work))
        if best >= floor:
            break
    return best


def test_is_ancestor_over_a_long_history_does_not_stop_the_servers_other_threads(
    tmp_path: Path,
) -> None:
    """libgit2 holds the interpreter lock for a whole graph walk: over 20,000 commits that
    stopped every other thread (Ping included) for about 400 ms. Meanwhile another thread
    must keep running at a good share of its speed."""
    _root, head, other = long_history(tmp_path / "long.git", 20_000)
    source = GitSourceControl(tmp_path / "long.git", "main")
    prefix = source.latest().removesuffix(head)

    def walk_to_the_root() -> None:
        for _ in range(3):
            assert source.is_ancestor(prefix + other, prefix + head) is False

    share = best_share_of_speed_left([walk_to_the_root] * 3, 0.2)
    assert share >= 0.2, f"other threads ran at {share:.0%} of their speed"


def test_promote_over_a_long_history_does_not_stop_the_servers_other_threads(
    tmp_path: Path,
) -> None:
    root, head, _other = long_history(tmp_path / "long.git", 20_000)
    sources = [
        GitSourceControl(tmp_path / "long.git", "main", promote_ref=ref)
        for ref in ("green", "green-2", "green-3")
    ]
    prefix = sources[0].latest().removesuffix(head)
    for source in sources:
        assert source.promote(prefix + root) is True

    def promote_far_forward(source: GitSourceControl) -> Callable[[], None]:
        def promote() -> None:
            assert source.promote(prefix + head) is True  # checks it is forward: 20,000 commits

        return promote

    share = best_share_of_speed_left([promote_far_forward(source) for source in sources], 0.2)
    assert share >= 0.2, f"other threads ran at {share:.0%} of their speed"
    assert sources[0].promote(prefix + root) is False  # and never backwards
