"""libgit2's object cache is bounded, so a server's memory stays flat as heads come in."""

from __future__ import annotations

from pathlib import Path

import pygit2

from stovepipe.sourcecontrol.git import OBJECT_CACHE_BYTES, GitSourceControl

COMMITS = 400
MESSAGE_BYTES = 16 * 1024  # 400 commits of 16 KiB: three times the bound, parsed


def test_git_object_cache_stays_within_its_bound_after_many_new_heads(tmp_path: Path) -> None:
    repository = pygit2.init_repository(str(tmp_path / "repo.git"), bare=True)
    signature = pygit2.Signature("t", "t@example.com")
    tree = repository.TreeBuilder().write()
    head = repository.create_commit("refs/heads/main", signature, signature, "root", tree, [])
    source = GitSourceControl(tmp_path / "repo.git", "main")
    assert pygit2.settings.cached_memory[1] <= OBJECT_CACHE_BYTES
    filler = "x" * MESSAGE_BYTES
    for n in range(COMMITS):
        head = repository.create_commit(
            "refs/heads/main", signature, signature, f"{n} {filler}", tree, [head]
        )
        assert source.latest().endswith(str(head))
        source.commit_time(source.latest())
    current, limit = pygit2.settings.cached_memory
    assert limit <= OBJECT_CACHE_BYTES
    # A soft limit: libgit2 evicts once past it, so it may sit a little above.
    assert current <= 1.25 * OBJECT_CACHE_BYTES
