"""GitSourceControl's revision, commit_time, checkout and promote on real repositories."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest

from stovepipe.sourcecontrol import NotFound, Refused, Unavailable
from stovepipe.sourcecontrol.git import GitSourceControl
from stovepipe.testing import GIT_ENV, GitRepository, run_git

PREFIX = "git://local/monorepo/main/"


@pytest.fixture
def repo(tmp_path: Path) -> GitRepository:
    return GitRepository(tmp_path / "monorepo")


def commit_file(repo: GitRepository, name: str, text: str) -> str:
    (repo.path / name).write_text(text)
    repo.git("add", name)
    return repo.commit(f"write {name}")


def snapshot(repo: GitRepository) -> tuple[str, bytes, list[str], dict[str, str]]:
    """Everything about the user's checkout a checkout or promotion must leave alone."""
    files = sorted(
        str(path.relative_to(repo.path))
        for path in repo.path.rglob("*")
        if ".git" not in path.relative_to(repo.path).parts
    )
    contents = {name: (repo.path / name).read_text() for name in files}
    index = (repo.path / ".git" / "index").read_bytes()
    return repo.git("status", "--porcelain", "--untracked-files=all"), index, files, contents


def make_user_tree_dirty(repo: GitRepository) -> None:
    """A modified tracked file, a staged change and an untracked file."""
    (repo.path / "a.txt").write_text("edited, not committed\n")
    (repo.path / "staged.txt").write_text("staged\n")
    repo.git("add", "staged.txt")
    (repo.path / "untracked.txt").write_text("untracked\n")


# -- revision and commit_time ---------------------------------------------------------------


def test_revision_is_the_full_sha(repo: GitRepository) -> None:
    sha = repo.commit()
    source = GitSourceControl(repo.path, "main")
    assert source.revision(PREFIX + sha) == sha
    assert len(sha) == 40


def test_commit_time_is_the_committer_time_in_utc_not_the_author_time(
    repo: GitRepository,
) -> None:
    subprocess.run(
        ["git", "-C", str(repo.path), "commit", "--quiet", "--allow-empty", "--message=x"],
        env={
            **GIT_ENV,
            "GIT_AUTHOR_DATE": "2001-01-01T00:00:00+0000",
            "GIT_COMMITTER_DATE": "2023-11-15T00:13:20+0200",  # 2023-11-14 22:13:20 UTC
        },
        check=True,
    )
    source = GitSourceControl(repo.path, "main")
    assert source.commit_time(source.latest()) == 1_700_000_000.0


def test_revision_of_a_tree_sha_raises_not_found(repo: GitRepository) -> None:
    repo.commit()
    tree = repo.git("rev-parse", "HEAD^{tree}")
    with pytest.raises(NotFound):
        GitSourceControl(repo.path, "main").revision(PREFIX + tree)


# -- checkout ---------------------------------------------------------------------------------


def test_checkout_is_clean_detached_at_the_commit_and_the_working_tree_is_untouched(
    repo: GitRepository, tmp_path: Path
) -> None:
    first = commit_file(repo, "a.txt", "first\n")
    commit_file(repo, "a.txt", "second\n")
    make_user_tree_dirty(repo)
    before = snapshot(repo)
    source = GitSourceControl(repo.path, "main")
    target = tmp_path / "checkout"
    source.checkout(PREFIX + first, target)
    assert (target / "a.txt").read_text() == "first\n"
    assert sorted(path.name for path in target.iterdir()) == [".git", "a.txt"]
    assert run_git(target, "status", "--porcelain", "--untracked-files=all") == ""
    assert run_git(target, "rev-parse", "HEAD") == first
    detached = subprocess.run(["git", "-C", str(target), "symbolic-ref", "-q", "HEAD"], check=False)
    assert detached.returncode != 0, "HEAD must be detached"
    assert snapshot(repo) == before


def test_checkout_ignores_git_variables_that_point_at_the_users_repository(
    repo: GitRepository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sha = commit_file(repo, "a.txt", "committed\n")
    make_user_tree_dirty(repo)
    before = snapshot(repo)
    monkeypatch.setenv("GIT_DIR", str(repo.path / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(repo.path))
    monkeypatch.setenv("GIT_INDEX_FILE", str(repo.path / ".git" / "index"))
    GitSourceControl(repo.path, "main").checkout(PREFIX + sha, tmp_path / "checkout")
    monkeypatch.delenv("GIT_DIR")
    monkeypatch.delenv("GIT_WORK_TREE")
    monkeypatch.delenv("GIT_INDEX_FILE")
    assert (tmp_path / "checkout" / "a.txt").read_text() == "committed\n"
    assert snapshot(repo) == before


def test_checkout_of_a_commit_no_branch_points_at_still_works(
    repo: GitRepository, tmp_path: Path
) -> None:
    dropped = commit_file(repo, "a.txt", "dropped\n")
    repo.git("commit", "--quiet", "--amend", "--allow-empty", "--message=rewritten")
    GitSourceControl(repo.path, "main").checkout(PREFIX + dropped, tmp_path / "checkout")
    assert (tmp_path / "checkout" / "a.txt").read_text() == "dropped\n"


def test_checkout_from_a_bare_repository(repo: GitRepository, tmp_path: Path) -> None:
    sha = commit_file(repo, "a.txt", "bare\n")
    bare = tmp_path / "mirror.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(repo.path), str(bare)], check=True)
    source = GitSourceControl(bare, "main")
    source.checkout(f"git://local/mirror/main/{sha}", tmp_path / "checkout")
    assert (tmp_path / "checkout" / "a.txt").read_text() == "bare\n"


def test_checkout_without_git_installed_raises_unavailable_and_leaves_nothing(
    repo: GitRepository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sha = repo.commit()
    source = GitSourceControl(repo.path, "main")
    monkeypatch.setenv("PATH", str(tmp_path / "no-binaries-here"))
    target = tmp_path / "checkout"
    with pytest.raises(Unavailable, match="git"):
        source.checkout(PREFIX + sha, target)
    assert not target.exists()


# -- promote ----------------------------------------------------------------------------------


def rev_parse_quiet(repo: GitRepository, name: str) -> str | None:
    completed = subprocess.run(
        ["git", "-C", str(repo.path), "rev-parse", "--verify", "--quiet", name],
        env=GIT_ENV,
        capture_output=True,
        text=True,
    )
    return completed.stdout.strip() or None


def test_promote_creates_the_branch_then_moves_it_forward_only(repo: GitRepository) -> None:
    first, second, third = repo.commit(), repo.commit(), repo.commit()
    source = GitSourceControl(repo.path, "main", promote_ref="green")
    assert rev_parse_quiet(repo, "refs/heads/green") is None
    assert source.promote(PREFIX + second) is True
    assert rev_parse_quiet(repo, "refs/heads/green") == second
    assert source.promote(PREFIX + first) is False
    assert source.promote(PREFIX + second) is False
    assert rev_parse_quiet(repo, "refs/heads/green") == second
    assert source.promote(PREFIX + third) is True
    assert rev_parse_quiet(repo, "refs/heads/green") == third
    assert "stovepipe: promote to " + third in repo.git("reflog", "show", "refs/heads/green")


def test_promote_moves_the_branch_across_a_history_rewrite(repo: GitRepository) -> None:
    repo.commit("base")
    source = GitSourceControl(repo.path, "main", promote_ref="refs/heads/green")
    old = source.latest()
    assert source.promote(old) is True
    repo.git("commit", "--quiet", "--amend", "--allow-empty", "--message=rewritten")
    rewritten = source.latest()
    assert source.is_ancestor(old, rewritten) is False
    assert source.promote(rewritten) is True
    assert rev_parse_quiet(repo, "refs/heads/green") == source.revision(rewritten)


def test_promote_refuses_to_drop_commits_someone_else_put_on_the_branch(
    repo: GitRepository,
) -> None:
    repo.commit("base")
    source = GitSourceControl(repo.path, "main", promote_ref="green")
    assert source.promote(source.latest()) is True
    # Someone commits on the promotion branch itself, in a worktree of their own.
    repo.git("worktree", "add", "--quiet", str(repo.path.parent / "theirs"), "green")
    theirs_dir = repo.path.parent / "theirs"
    subprocess.run(
        ["git", "-C", str(theirs_dir), "commit", "--quiet", "--allow-empty", "--message=mine"],
        env=GIT_ENV,
        check=True,
    )
    repo.git("worktree", "remove", str(theirs_dir))
    theirs = rev_parse_quiet(repo, "refs/heads/green")
    repo.commit("next on main")
    with pytest.raises(Refused, match="last moved by someone else"):
        source.promote(source.latest())
    assert rev_parse_quiet(repo, "refs/heads/green") == theirs
    # Once the branch is a fast-forward away again, promotion goes on.
    repo.git("merge", "--quiet", "--no-edit", "green")
    assert source.promote(source.latest()) is True
    assert rev_parse_quiet(repo, "refs/heads/green") == repo.git("rev-parse", "HEAD")


def test_promote_of_a_commit_a_rewrite_dropped_raises_not_found(repo: GitRepository) -> None:
    repo.commit("base")
    dropped = repo.commit("dropped")
    source = GitSourceControl(repo.path, "main", promote_ref="green")
    repo.git("reset", "--quiet", "--hard", "HEAD~1")
    repo.git("commit", "--quiet", "--allow-empty", "--message=instead")
    repo.git("reflog", "expire", "--expire=now", "--all")
    repo.git("gc", "--quiet", "--prune=now")
    with pytest.raises(NotFound):
        source.promote(PREFIX + dropped)
    assert rev_parse_quiet(repo, "refs/heads/green") is None


def test_promote_refuses_a_branch_checked_out_in_the_working_tree(repo: GitRepository) -> None:
    first = repo.commit()
    repo.git("checkout", "--quiet", "-b", "green")
    repo.git("checkout", "--quiet", "main")
    second = repo.commit()
    repo.git("checkout", "--quiet", "green")
    before = snapshot(repo)
    source = GitSourceControl(repo.path, "main", promote_ref="green")
    with pytest.raises(Refused, match="checked out"):
        source.promote(PREFIX + second)
    assert rev_parse_quiet(repo, "refs/heads/green") == first
    assert snapshot(repo) == before


def test_promote_refuses_a_branch_checked_out_in_a_linked_worktree(
    repo: GitRepository, tmp_path: Path
) -> None:
    first = repo.commit()
    repo.git("worktree", "add", "--quiet", "-b", "green", str(tmp_path / "other"), first)
    second = repo.commit()
    source = GitSourceControl(repo.path, "main", promote_ref="green")
    with pytest.raises(Refused, match="checked out"):
        source.promote(PREFIX + second)
    assert rev_parse_quiet(repo, "refs/heads/green") == first


def test_promote_without_a_promotion_ref_does_nothing(repo: GitRepository) -> None:
    sha = repo.commit()
    source = GitSourceControl(repo.path, "main")
    assert source.promote(PREFIX + sha) is False
    assert repo.git("branch", "--list") == "* main"
    with pytest.raises(NotFound):
        source.promote(PREFIX + "0" * 40)


@pytest.mark.parametrize("promote_ref", ["main", "refs/heads/main", "refs/tags/green", "a..b", ""])
def test_promotion_ref_must_be_a_valid_branch_other_than_the_queues_ref(
    repo: GitRepository, promote_ref: str
) -> None:
    with pytest.raises(ValueError):
        GitSourceControl(repo.path, "main", promote_ref=promote_ref)


def race_promotions(sources: list[GitSourceControl], uris: list[str]) -> list[bool]:
    """Start ``sources[n].promote(uris[n])`` for every n at once; their results."""
    barrier = threading.Barrier(len(sources))
    errors: list[BaseException] = []
    moved: list[bool] = []

    def promote(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            moved.append(sources[index].promote(uris[index]))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=promote, args=(n,)) for n in range(len(sources))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert len(moved) == len(sources)
    return moved


def test_racing_promoters_in_separate_instances_only_ever_move_the_branch_forward(
    repo: GitRepository,
) -> None:
    shas = [repo.commit(f"c{n}") for n in range(8)]
    # One instance per thread: each has its own lock, as separate processes would.
    sources = [GitSourceControl(repo.path, "main", promote_ref="green") for _ in shas]
    for round_ in range(3):
        if round_:
            repo.git("branch", "--quiet", "--force", "green", shas[0])
        moved = race_promotions(sources, [PREFIX + sha for sha in shas])
        assert rev_parse_quiet(repo, "refs/heads/green") == shas[-1]
        assert True in moved
    # Every move recorded in the reflog went forward (apart from the test's own resets).
    log = repo.git("reflog", "show", "--format=%H %gs", "refs/heads/green").splitlines()
    previous: str | None = None
    for line in reversed(log):
        sha, subject = line.split(" ", 1)
        if subject.startswith("stovepipe: promote") and previous is not None:
            assert shas.index(sha) > shas.index(previous), log
        previous = sha
